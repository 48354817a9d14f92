package procstats

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"slices"
	"testing"
)

// Collections forced by Read(true) to read live memory are the measurement's own work: the GC
// cycles, GC CPU and pauses a phase reports must leave them out.
func TestMeterLeavesOutForcedGC(t *testing.T) {
	var m Meter
	raw0, s0 := Read(), m.Read(false)
	const forced = 5
	for range forced {
		m.Read(true)
	}
	raw1, s1 := Read(), m.Read(false)
	if got := raw1.GCCycles - raw0.GCCycles; got < forced {
		t.Fatalf("the runtime saw %d cycles, want at least the %d forced", got, forced)
	}
	// A background cycle may still run meanwhile; forced ones must not be counted.
	if got := s1.GCCycles - s0.GCCycles; got >= forced {
		t.Fatalf("reported %d GC cycles across %d forced collections", got, forced)
	}
	if got := sum(s1.GCPauses.Counts) - sum(s0.GCPauses.Counts); got >= 2*forced {
		t.Fatalf("reported %d pauses across %d forced collections", got, forced)
	}
	// Subtracting the forced collections' cost is float arithmetic: allow rounding, not a step back.
	const eps = 1e-6
	if s1.GCCPUSeconds < s0.GCCPUSeconds-eps || s1.CPUSeconds < s0.CPUSeconds-eps {
		t.Fatalf("counters went backwards: %+v then %+v", s0, s1)
	}
}

func sum(c []uint64) (n uint64) {
	for _, v := range c {
		n += v
	}
	return n
}

// The accounting itself, on readings made up for it: what happened across each forced collection
// accumulates, and a later reading has all of it taken out.
func TestForcedAccounting(t *testing.T) {
	reading := func(cycles uint64, gcCPU, cpu float64, pauses ...uint64) Process {
		return Process{GCCycles: cycles, GCCPUSeconds: gcCPU, CPUSeconds: cpu,
			GCPauses: Histogram{Counts: pauses}, RSSBytes: 1 << 20, AllocObjects: 7, AllocBytes: 700}
	}
	type pair struct{ before, after Process }
	cases := []struct {
		name   string
		forced []pair // collections forced, each between two readings
		now    Process
		want   Process
	}{
		{
			name: "none forced",
			now:  reading(10, 0.5, 2, 1, 2, 3),
			want: reading(10, 0.5, 2, 1, 2, 3),
		},
		{
			name:   "one",
			forced: []pair{{reading(10, 0.5, 2, 1, 2, 3), reading(11, 0.75, 2.5, 1, 4, 3)}},
			now:    reading(12, 1, 3, 1, 5, 3),
			want:   reading(11, 0.75, 2.5, 1, 3, 3),
		},
		{
			name: "several accumulate",
			forced: []pair{
				{reading(10, 0.5, 2, 0, 0, 0), reading(11, 0.75, 2.5, 0, 2, 0)},
				{reading(15, 1, 4, 0, 5, 0), reading(16, 1.5, 5, 1, 6, 0)},
			},
			now:  reading(20, 2, 6, 1, 9, 1),
			want: reading(18, 1.25, 4.5, 0, 6, 1),
		},
		{
			// The runtime never changes the histogram's shape; if readings disagree, the pauses
			// are left as read rather than subtracted bucket by mismatched bucket.
			name:   "pause histograms of another shape",
			forced: []pair{{reading(10, 0.5, 2, 1, 2), reading(11, 0.75, 2.5, 1, 4, 3)}},
			now:    reading(12, 1, 3, 1, 5, 3),
			want:   reading(11, 0.75, 2.5, 1, 5, 3),
		},
		{
			name:   "no pause histogram",
			forced: []pair{{reading(10, 0.5, 2), reading(11, 0.75, 2.5)}},
			now:    reading(12, 1, 3),
			want:   reading(11, 0.75, 2.5),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var m Meter
			for _, f := range tc.forced {
				m.addForced(f.before, f.after)
			}
			got := tc.now
			got.GCPauses.Counts = slices.Clone(tc.now.GCPauses.Counts)
			m.subtractForced(&got)
			const eps = 1e-9
			if got.GCCycles != tc.want.GCCycles || math.Abs(got.GCCPUSeconds-tc.want.GCCPUSeconds) > eps ||
				math.Abs(got.CPUSeconds-tc.want.CPUSeconds) > eps || !slices.Equal(got.GCPauses.Counts, tc.want.GCPauses.Counts) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			// Memory and allocations are never adjusted.
			if got.RSSBytes != tc.now.RSSBytes || got.AllocObjects != tc.now.AllocObjects || got.AllocBytes != tc.now.AllocBytes {
				t.Fatalf("memory or allocations changed: %+v from %+v", got, tc.now)
			}
		})
	}
}

// JSON has no infinities: the runtime's -Inf and +Inf bounds are written as 0 and MaxFloat64.
func TestFiniteBounds(t *testing.T) {
	inf := math.Inf(1)
	cases := []struct {
		name      string
		in, want  []float64
		unchanged bool
	}{
		{"empty", []float64{}, []float64{}, true},
		{"finite", []float64{0, 1e-6, 1e-3}, []float64{0, 1e-6, 1e-3}, true},
		{"both ends", []float64{-inf, 1e-6, 1e-3, inf}, []float64{0, 1e-6, 1e-3, math.MaxFloat64}, false},
		{"upper only", []float64{0, 1e-6, inf}, []float64{0, 1e-6, math.MaxFloat64}, false},
		{"lower only", []float64{-inf, 1}, []float64{0, 1}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			got := finiteBounds(in)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("finiteBounds(%v) = %v, want %v", tc.in, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Fatalf("the runtime's buckets were changed: %v", in)
			}
			if _, err := json.Marshal(got); err != nil {
				t.Fatalf("not JSON: %v", err)
			}
		})
	}
}

func TestParseStatm(t *testing.T) {
	cases := []struct {
		in   string
		want uint64
	}{
		{"1000 250 100 10 0 200 0\n", 250 * 4096},
		{"1000 0 0 0 0 0 0", 0},
		{"1000", 0},
		{"", 0},
		{"1000 x 100", 0},
		{"1000 -5 100", 0},
	}
	for _, tc := range cases {
		if got := parseStatm(tc.in, 4096); got != tc.want {
			t.Errorf("parseStatm(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// A live reading has every figure this process can show, and a pause histogram JSON carries.
func TestReadFields(t *testing.T) {
	p := Read()
	if _, err := os.Stat("/proc/self/statm"); err == nil && p.RSSBytes == 0 {
		t.Error("rss_bytes 0 with /proc/self/statm present")
	}
	if p.HeapObjectBytes == 0 || p.StackBytes == 0 || p.GoMemBytes == 0 || p.Goroutines == 0 || p.AllocObjects == 0 ||
		p.AllocBytes == 0 || p.CPUSeconds <= 0 {
		t.Errorf("a figure is missing: %+v", p)
	}
	b, c := p.GCPauses.Bounds, p.GCPauses.Counts
	if len(c) == 0 || len(b) != len(c)+1 {
		t.Fatalf("gc_pauses: %d bounds for %d counts", len(b), len(c))
	}
	if b[len(b)-1] != math.MaxFloat64 || slices.ContainsFunc(b, func(v float64) bool { return math.IsInf(v, 0) }) {
		t.Errorf("gc_pauses bounds not mapped: first %v, last %v", b[0], b[len(b)-1])
	}
	if _, err := json.Marshal(p); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
}

// The allocation counters are cumulative: allocating between two readings raises both by about
// what was allocated (the runtime counts small objects as its per-P caches refill, so a reading
// can trail by a cache's worth).
func TestAllocations(t *testing.T) {
	var m Meter
	s0 := m.Read(false)
	const objects, size = 20_000, 256
	keep := make([][]byte, objects)
	for i := range keep {
		keep[i] = make([]byte, size)
	}
	s1 := m.Read(false)
	if len(keep) != objects {
		t.Fatal("unreachable")
	}
	if got := s1.AllocObjects - s0.AllocObjects; got < objects*9/10 {
		t.Errorf("alloc_objects rose by %d across %d allocations", got, objects)
	}
	if got := s1.AllocBytes - s0.AllocBytes; got < objects*size*9/10 {
		t.Errorf("alloc_bytes rose by %d across %d bytes allocated", got, objects*size)
	}
	// A forced collection neither resets nor lowers them.
	s2 := m.Read(true)
	if s2.AllocObjects < s1.AllocObjects || s2.AllocBytes < s1.AllocBytes {
		t.Errorf("a forced collection lowered the counters: %d/%d then %d/%d",
			s1.AllocObjects, s1.AllocBytes, s2.AllocObjects, s2.AllocBytes)
	}
}

// The JSON names the load generator and the dashboards read: a server embedding Process serves
// them flat, in this order, between its own fields.
func TestJSONNames(t *testing.T) {
	type server struct {
		Node string `json:"node"`
		Process
		Own int `json:"own"`
	}
	b, err := json.Marshal(server{Process: Read()})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"node", "rss_bytes", "heap_object_bytes", "heap_live_bytes", "stack_bytes", "go_mem_bytes",
		"goroutines", "gc_cycles", "gc_cpu_seconds", "cpu_seconds", "gc_pauses", "alloc_objects", "alloc_bytes", "own"}
	if got := topKeys(t, b); !slices.Equal(got, want) {
		t.Fatalf("keys %v, want %v", got, want)
	}
}

// topKeys returns the keys of the JSON object b in the order they are written.
func topKeys(t *testing.T, b []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %s", b)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}
