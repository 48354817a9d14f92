// Package procstats reads the process-level figures a server serves in its /v1/stats: memory
// (RSS and the Go runtime's classes), goroutines, GC cycles, CPU and pauses, and heap
// allocations. The gateway and the floor embed Process in their Stats, so the load generator reads
// both the same way.
//
// A Meter reads them, and with a forced collection leaves that collection's cost out of the CPU
// and GC figures: it is the measurement's own work, and counting it would make a quiet phase look
// GC-bound.
package procstats

import (
	"math"
	"os"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Process holds the process-level figures of /v1/stats. Counters are cumulative since start: a
// reader takes differences between two readings.
type Process struct {
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

// The runtime/metrics samples Read takes, in the order it reads them.
const (
	sampleHeapObjects = iota
	sampleHeapLive
	sampleStacks
	sampleGoMem
	sampleGoroutines
	sampleGCCycles
	sampleGCCPU
	sampleGCPauses
	sampleAllocObjects
	sampleAllocBytes
	numSamples
)

var sampleNames = [numSamples]string{
	sampleHeapObjects:  "/memory/classes/heap/objects:bytes",
	sampleHeapLive:     "/gc/heap/live:bytes",
	sampleStacks:       "/memory/classes/heap/stacks:bytes",
	sampleGoMem:        "/memory/classes/total:bytes",
	sampleGoroutines:   "/sched/goroutines:goroutines",
	sampleGCCycles:     "/gc/cycles/total:gc-cycles",
	sampleGCCPU:        "/cpu/classes/gc/total:cpu-seconds",
	sampleGCPauses:     "/sched/pauses/total/gc:seconds",
	sampleAllocObjects: "/gc/heap/allocs:objects",
	sampleAllocBytes:   "/gc/heap/allocs:bytes",
}

// Read returns the process's figures as the runtime and the kernel count them, forced
// collections included.
func Read() Process {
	var samples [numSamples]rtmetrics.Sample
	for i, name := range sampleNames {
		samples[i].Name = name
	}
	rtmetrics.Read(samples[:])
	u64 := func(i int) uint64 {
		if samples[i].Value.Kind() == rtmetrics.KindUint64 {
			return samples[i].Value.Uint64()
		}
		return 0
	}
	p := Process{
		RSSBytes:        readRSS(),
		HeapObjectBytes: u64(sampleHeapObjects),
		HeapLiveBytes:   u64(sampleHeapLive),
		StackBytes:      u64(sampleStacks),
		GoMemBytes:      u64(sampleGoMem),
		Goroutines:      int(u64(sampleGoroutines)),
		GCCycles:        u64(sampleGCCycles),
		AllocObjects:    u64(sampleAllocObjects),
		AllocBytes:      u64(sampleAllocBytes),
	}
	if v := samples[sampleGCCPU].Value; v.Kind() == rtmetrics.KindFloat64 {
		p.GCCPUSeconds = v.Float64()
	}
	if v := samples[sampleGCPauses].Value; v.Kind() == rtmetrics.KindFloat64Histogram {
		h := v.Float64Histogram()
		p.GCPauses = Histogram{Bounds: finiteBounds(h.Buckets), Counts: h.Counts}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		p.CPUSeconds = tvSeconds(ru.Utime) + tvSeconds(ru.Stime)
	}
	return p
}

// finiteBounds returns a copy of a runtime histogram's bucket bounds with -Inf written as 0 and
// +Inf as math.MaxFloat64, which JSON can carry.
func finiteBounds(buckets []float64) []float64 {
	out := make([]float64, len(buckets))
	for i, b := range buckets {
		switch {
		case math.IsInf(b, -1):
			b = 0
		case math.IsInf(b, 1):
			b = math.MaxFloat64
		}
		out[i] = b
	}
	return out
}

func tvSeconds(tv syscall.Timeval) float64 { return float64(tv.Sec) + float64(tv.Usec)/1e6 }

// readRSS returns the resident set size from /proc/self/statm (0 where unavailable).
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	return parseStatm(string(b), uint64(os.Getpagesize()))
}

// parseStatm returns the resident size in bytes from the text of /proc/<pid>/statm (its second
// field, in pages), 0 when it cannot be read.
func parseStatm(s string, pageSize uint64) uint64 {
	fields := strings.Fields(s)
	if len(fields) < 2 {
		return 0
	}
	pages, err := strconv.ParseUint(fields[1], 10, 64)
	if err != nil {
		return 0
	}
	return pages * pageSize
}

// A Meter reads the process's figures and keeps what the collections it forced cost, to leave it
// out of every reading. The zero Meter is ready; a process needs one (the runtime's counters are
// the process's), and a Meter must not be copied after first use.
type Meter struct {
	mu     sync.Mutex // serializes forced collections and guards forced
	forced Process    // what forced collections cost: GC cycles, GC CPU, CPU and pauses
}

// Read returns the figures less what forced collections cost. With gc, it first runs a full
// garbage collection that also returns the freed pages to the OS (debug.FreeOSMemory), so the
// heap and RSS figures show what live state needs, as a long-idle process's scavenger would in
// time; that collection's cost joins what is left out.
func (m *Meter) Read(gc bool) Process {
	if gc {
		m.mu.Lock()
		before := Read()
		debug.FreeOSMemory()
		after := Read()
		m.addForced(before, after)
		m.mu.Unlock()
	}
	p := Read()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subtractForced(&p)
	return p
}

// addForced adds what happened between two readings around a forced collection to forced.
// Pauses are added only while the histograms' shapes agree (the runtime never changes them).
// Callers hold mu.
func (m *Meter) addForced(before, after Process) {
	f := &m.forced
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
}

// subtractForced takes what forced collections cost out of p. Callers hold mu.
func (m *Meter) subtractForced(p *Process) {
	f := &m.forced
	p.GCCycles -= f.GCCycles
	p.GCCPUSeconds -= f.GCCPUSeconds
	p.CPUSeconds -= f.CPUSeconds
	if len(f.GCPauses.Counts) == len(p.GCPauses.Counts) {
		for i, c := range f.GCPauses.Counts {
			p.GCPauses.Counts[i] -= c
		}
	}
}
