package gateway

import "github.com/pushwire/pushwire/core/procstats"

// Stats is a point-in-time view of the instance, served as JSON at /v1/stats. Counters are
// cumulative since start: a reader takes differences between two snapshots.
type Stats struct {
	Node      string  `json:"node"`
	Engine    string  `json:"engine"`
	Transport string  `json:"transport"`
	State     string  `json:"state"` // serving, draining
	UptimeS   float64 `json:"uptime_s"`

	Conns    int64 `json:"conns"`    // open transport connections
	Sessions int   `json:"sessions"` // logged in

	// The process's memory, goroutines, GC, CPU and allocations (rss_bytes … alloc_bytes).
	procstats.Process
}

// Stats reads the instance's figures. With gc, it first runs a full garbage collection that also
// returns the freed pages to the OS, so the heap and RSS figures show what live state needs (the
// benchmark does this at the end of its idle phase).
//
// The CPU and GC counters (CPU seconds, GC CPU seconds, GC cycles, pauses) leave out every
// collection forced this way: it is the measurement's own work, and counting it would make a
// quiet phase look GC-bound.
func (n *Node) Stats(gc bool) Stats {
	st := Stats{
		Node:      n.cfg.Node,
		Engine:    n.cfg.Engine,
		Transport: n.cfg.Transport,
		State:     "serving",
		Process:   n.meter.Read(gc),
	}
	// The instance's own figures after the process's: with gc, as they are after the collection.
	st.UptimeS = n.uptime().Seconds()
	st.Conns = n.conns.Load()
	st.Sessions = n.table.Len()
	if n.draining.Load() {
		st.State = "draining"
	}
	return st
}
