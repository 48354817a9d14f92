package gateway

import (
	"strings"
	"testing"
	"time"
)

// Collections forced by Stats(true) to read live memory are the measurement's own work: the GC
// cycles, GC CPU and pauses a phase reports must leave them out.
func TestStatsLeaveOutForcedGC(t *testing.T) {
	n := newNode(t, Config{})
	raw0, s0 := n.rawStats(), n.Stats(false)
	const forced = 5
	for range forced {
		n.Stats(true)
	}
	raw1, s1 := n.rawStats(), n.Stats(false)
	if got := raw1.GCCycles - raw0.GCCycles; got < forced {
		t.Fatalf("the runtime saw %d cycles, want at least the %d forced", got, forced)
	}
	// A background cycle may still run meanwhile; forced ones must not be counted.
	if got := s1.GCCycles - s0.GCCycles; got >= forced {
		t.Fatalf("reported %d GC cycles across %d forced collections", got, forced)
	}
	var pauses0, pauses1 uint64
	for _, c := range s0.GCPauses.Counts {
		pauses0 += c
	}
	for _, c := range s1.GCPauses.Counts {
		pauses1 += c
	}
	if pauses1-pauses0 >= 2*forced {
		t.Fatalf("reported %d pauses across %d forced collections", pauses1-pauses0, forced)
	}
	// Subtracting the forced collections' cost is float arithmetic: allow rounding, not a step back.
	const eps = 1e-6
	if s1.GCCPUSeconds < s0.GCCPUSeconds-eps || s1.CPUSeconds < s0.CPUSeconds-eps {
		t.Fatalf("counters went backwards: %+v then %+v", s0, s1)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // "" = valid; else a part of the error, naming the setting
	}{
		{"defaults", Config{}, ""},
		{"max body over limit", Config{MaxBody: 1 << 30}, "max body"},
		{"idle shorter than heartbeat", Config{Heartbeat: time.Minute, IdleTimeout: time.Second}, "idle timeout"},
		{"tick longer than login timeout", Config{WheelTick: time.Minute, LoginTimeout: time.Second}, "wheel tick"},
		{"business without backend", Config{Businesses: map[uint16]Business{3: {}}}, "biz 3: backend_url is required"},
		{"bad slow-consumer policy", Config{Businesses: map[uint16]Business{2: {Biz: bizAt("http://127.0.0.1:1/"), SlowConsumer: "kick"}}},
			`biz 2: slow_consumer "kick"`},
		{"bad notify URL", Config{Businesses: map[uint16]Business{2: {Biz: forwardBiz("http://127.0.0.1:1/", "x")}}}, "notify_url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.cfg, testKey, oneApp{})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want == "":
				_ = n.Stop(t.Context())
			case err == nil:
				t.Fatalf("New accepted %+v", tc.cfg)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
	if err := ValidateBusinesses(map[uint16]Business{1: {Biz: bizAt("http://127.0.0.1:1/"), SlowConsumer: SlowConsumerDrop}}); err != nil {
		t.Fatal(err)
	}
	if err := ValidateBusinesses(map[uint16]Business{0: {Biz: bizAt("http://127.0.0.1:1/")}}); err == nil {
		t.Fatal("biz 0 accepted")
	}
}

// The allocation counters are cumulative: allocating between two readings raises both by about
// what was allocated (the runtime counts small objects as its per-P caches refill, so a reading
// can trail by a cache's worth).
func TestStatsAllocations(t *testing.T) {
	n := newNode(t, Config{})
	s0 := n.Stats(false)
	const objects, size = 20_000, 256
	keep := make([][]byte, objects)
	for i := range keep {
		keep[i] = make([]byte, size)
	}
	s1 := n.Stats(false)
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
	s2 := n.Stats(true)
	if s2.AllocObjects < s1.AllocObjects || s2.AllocBytes < s1.AllocBytes {
		t.Errorf("a forced collection lowered the counters: %d/%d then %d/%d",
			s1.AllocObjects, s1.AllocBytes, s2.AllocObjects, s2.AllocBytes)
	}
}
