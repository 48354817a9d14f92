package floor

import (
	"time"

	"github.com/pushwire/pushwire/core/procstats"
)

// Stats is the floor's /v1/stats: every field of the gateway's, so the load generator measures
// it unchanged, and a few of its own. Counters are cumulative since start.
type Stats struct {
	Node      string  `json:"node"`
	Engine    string  `json:"engine"`    // "floor"
	Transport string  `json:"transport"` // "tcp"
	State     string  `json:"state"`     // "serving"
	UptimeS   float64 `json:"uptime_s"`

	Conns    int64 `json:"conns"`    // open connections
	Sessions int   `json:"sessions"` // logged in

	// The process's memory, goroutines, GC, CPU and allocations (rss_bytes … alloc_bytes), read
	// as the gateway reads them.
	procstats.Process

	// The floor's own.
	Closed         int64 `json:"closed"`          // connections closed, by the peer or the floor
	Pushes         int64 `json:"pushes"`          // push API calls served
	Queued         int64 `json:"queued"`          // writes the socket did not wholly take at once, queued for EPOLLOUT
	SlowConsumers  int64 `json:"slow_consumers"`  // connections closed because their write queue overflowed
	ProtocolErrors int64 `json:"protocol_errors"` // connections ended with ERROR
}

// Stats reads the server's figures. With gc it first runs a full collection that returns the
// freed pages to the OS, as the gateway does, and like the gateway leaves the cost of such forced
// collections out of the CPU and GC figures.
func (s *Server) Stats(gc bool) Stats {
	proc := s.meter.Read(gc)
	return Stats{
		Node:           s.cfg.Node,
		Engine:         "floor",
		Transport:      "tcp",
		State:          "serving",
		UptimeS:        time.Since(s.start).Seconds(),
		Conns:          s.conns.Load(),
		Sessions:       int(s.sessions.Load()),
		Process:        proc,
		Closed:         s.closes.Load(),
		Pushes:         s.pushes.Load(),
		Queued:         s.queued.Load(),
		SlowConsumers:  s.slowConsumers.Load(),
		ProtocolErrors: s.protocolErrors.Load(),
	}
}
