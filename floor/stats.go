package floor

import (
	"math"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"
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

	RSSBytes        uint64 `json:"rss_bytes"`
	HeapObjectBytes uint64 `json:"heap_object_bytes"`
	HeapLiveBytes   uint64 `json:"heap_live_bytes"`
	StackBytes      uint64 `json:"stack_bytes"`
	GoMemBytes      uint64 `json:"go_mem_bytes"`
	Goroutines      int    `json:"goroutines"`

	GCCycles     uint64    `json:"gc_cycles"`
	GCCPUSeconds float64   `json:"gc_cpu_seconds"`
	CPUSeconds   float64   `json:"cpu_seconds"`
	GCPauses     Histogram `json:"gc_pauses"`

	AllocObjects uint64 `json:"alloc_objects"` // heap allocations since start
	AllocBytes   uint64 `json:"alloc_bytes"`

	// The floor's own.
	Closed         int64 `json:"closed"`          // connections closed, by the peer or the floor
	Pushes         int64 `json:"pushes"`          // push API calls served
	Queued         int64 `json:"queued"`          // writes the socket did not wholly take at once, queued for EPOLLOUT
	SlowConsumers  int64 `json:"slow_consumers"`  // connections closed because their write queue overflowed
	ProtocolErrors int64 `json:"protocol_errors"` // connections ended with ERROR
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

// Stats reads the server's figures. With gc it first runs a full collection that returns the
// freed pages to the OS, as the gateway does, and like the gateway leaves the cost of such forced
// collections out of the CPU and GC figures.
func (s *Server) Stats(gc bool) Stats {
	if gc {
		s.forcedMu.Lock()
		before := s.rawStats()
		debug.FreeOSMemory()
		after := s.rawStats()
		f := &s.forced
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
		s.forcedMu.Unlock()
	}
	st := s.rawStats()
	s.forcedMu.Lock()
	defer s.forcedMu.Unlock()
	f := &s.forced
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

func (s *Server) rawStats() Stats {
	st := Stats{
		Node:           s.cfg.Node,
		Engine:         "floor",
		Transport:      "tcp",
		State:          "serving",
		UptimeS:        time.Since(s.start).Seconds(),
		Conns:          s.conns.Load(),
		Sessions:       int(s.sessions.Load()),
		RSSBytes:       readRSS(),
		Closed:         s.closes.Load(),
		Pushes:         s.pushes.Load(),
		Queued:         s.queued.Load(),
		SlowConsumers:  s.slowConsumers.Load(),
		ProtocolErrors: s.protocolErrors.Load(),
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
