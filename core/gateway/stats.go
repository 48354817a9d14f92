package gateway

import (
	"math"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"syscall"
)

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

	RSSBytes        uint64 `json:"rss_bytes"`
	HeapObjectBytes uint64 `json:"heap_object_bytes"` // heap objects, live and not yet swept
	HeapLiveBytes   uint64 `json:"heap_live_bytes"`   // heap marked live by the last GC
	StackBytes      uint64 `json:"stack_bytes"`
	GoMemBytes      uint64 `json:"go_mem_bytes"` // all memory mapped by the Go runtime
	Goroutines      int    `json:"goroutines"`

	GCCycles     uint64    `json:"gc_cycles"`
	GCCPUSeconds float64   `json:"gc_cpu_seconds"` // estimated CPU spent on GC
	CPUSeconds   float64   `json:"cpu_seconds"`    // process user+system CPU
	GCPauses     Histogram `json:"gc_pauses"`      // stop-the-world GC pauses, seconds

	// AllocObjects and AllocBytes are the heap allocations since start (runtime/metrics
	// /gc/heap/allocs:objects and :bytes): a phase's difference over its operations gives the
	// allocations per operation. A forced collection allocates nothing of note, so nothing is
	// subtracted for it; reading the figures allocates a few small objects of its own.
	AllocObjects uint64 `json:"alloc_objects"`
	AllocBytes   uint64 `json:"alloc_bytes"`
}

// Histogram is a cumulative histogram: Counts[i] values fell in [Bounds[i], Bounds[i+1]).
// Infinite bounds are written as 0 (lower) and math.MaxFloat64 (upper).
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []uint64  `json:"counts"`
}

var statSamples = []string{
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/live:bytes",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/total:bytes",
	"/sched/goroutines:goroutines",
	"/gc/cycles/total:gc-cycles",
	"/cpu/classes/gc/total:cpu-seconds",
	"/sched/pauses/total/gc:seconds",
	"/gc/heap/allocs:objects",
	"/gc/heap/allocs:bytes",
}

// Stats reads the instance's figures. With gc, it first runs a full garbage collection that also
// returns the freed pages to the OS, so the heap and RSS figures show what live state needs (the
// benchmark does this at the end of its idle phase).
//
// The CPU and GC counters (CPU seconds, GC CPU seconds, GC cycles, pauses) leave out every
// collection forced this way: it is the measurement's own work, and counting it would make a
// quiet phase look GC-bound.
func (n *Node) Stats(gc bool) Stats {
	if !gc {
		return n.stats()
	}
	n.forcedMu.Lock()
	before := n.rawStats()
	// A full collection that also returns the freed pages to the OS, so that RSS shows what the
	// live state needs, as a long-idle process's scavenger would in time.
	debug.FreeOSMemory()
	after := n.rawStats()
	f := &n.forced
	f.GCCycles += after.GCCycles - before.GCCycles
	f.GCCPUSeconds += after.GCCPUSeconds - before.GCCPUSeconds
	f.CPUSeconds += after.CPUSeconds - before.CPUSeconds
	if f.GCPauses.Counts == nil {
		f.GCPauses.Counts = make([]uint64, len(after.GCPauses.Counts))
	}
	if len(after.GCPauses.Counts) == len(f.GCPauses.Counts) && len(before.GCPauses.Counts) == len(f.GCPauses.Counts) {
		for i := range f.GCPauses.Counts {
			f.GCPauses.Counts[i] += after.GCPauses.Counts[i] - before.GCPauses.Counts[i]
		}
	}
	n.forcedMu.Unlock()
	return n.stats()
}

// stats reads the figures, less what forced collections cost.
func (n *Node) stats() Stats {
	st := n.rawStats()
	n.forcedMu.Lock()
	defer n.forcedMu.Unlock()
	f := &n.forced
	st.GCCycles -= f.GCCycles
	st.GCCPUSeconds -= f.GCCPUSeconds
	st.CPUSeconds -= f.CPUSeconds
	if len(f.GCPauses.Counts) == len(st.GCPauses.Counts) {
		for i, c := range f.GCPauses.Counts {
			st.GCPauses.Counts[i] -= c
		}
	}
	return st
}

func (n *Node) rawStats() Stats {
	st := Stats{
		Node:      n.cfg.Node,
		Engine:    n.cfg.Engine,
		Transport: n.cfg.Transport,
		State:     "serving",
		UptimeS:   n.uptime().Seconds(),
		Conns:     n.conns.Load(),
		Sessions:  n.table.Len(),
		RSSBytes:  readRSS(),
	}
	if n.draining.Load() {
		st.State = "draining"
	}
	samples := make([]rtmetrics.Sample, len(statSamples))
	for i, name := range statSamples {
		samples[i].Name = name
	}
	rtmetrics.Read(samples)
	u64 := func(i int) uint64 {
		if samples[i].Value.Kind() == rtmetrics.KindUint64 {
			return samples[i].Value.Uint64()
		}
		return 0
	}
	st.HeapObjectBytes = u64(0)
	st.HeapLiveBytes = u64(1)
	st.StackBytes = u64(2)
	st.GoMemBytes = u64(3)
	st.Goroutines = int(u64(4))
	st.GCCycles = u64(5)
	st.AllocObjects = u64(8)
	st.AllocBytes = u64(9)
	if samples[6].Value.Kind() == rtmetrics.KindFloat64 {
		st.GCCPUSeconds = samples[6].Value.Float64()
	}
	if samples[7].Value.Kind() == rtmetrics.KindFloat64Histogram {
		h := samples[7].Value.Float64Histogram()
		st.GCPauses.Counts = h.Counts
		st.GCPauses.Bounds = make([]float64, len(h.Buckets))
		for i, b := range h.Buckets {
			switch {
			case math.IsInf(b, -1):
				b = 0
			case math.IsInf(b, 1):
				b = math.MaxFloat64
			}
			st.GCPauses.Bounds[i] = b
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		st.CPUSeconds = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	return st
}

func tvSeconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// readRSS returns the resident set size from /proc/self/statm (0 where unavailable).
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * uint64(os.Getpagesize())
}
