package gateway

import (
	"io"
	"log/slog"
	"testing"
	"time"
)

type noVerifier struct{}

func (noVerifier) Verify(string, time.Time) (Identity, error) { return Identity{}, nil }

type noApps struct{}

func (noApps) AppByPushKey(string) (string, bool) { return "", false }

func newTestNode(t *testing.T) *Node {
	t.Helper()
	n, err := New(Config{Node: "t", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, noVerifier{}, noApps{})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Collections forced by Stats(true) to read live memory are the measurement's own work: the GC
// cycles, GC CPU and pauses a phase reports must leave them out.
func TestStatsLeaveOutForcedGC(t *testing.T) {
	n := newTestNode(t)
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
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"max body over limit", Config{MaxBody: 1 << 30}, false},
		{"idle shorter than heartbeat", Config{Heartbeat: time.Minute, IdleTimeout: time.Second}, false},
		{"tick longer than login timeout", Config{WheelTick: time.Minute, LoginTimeout: time.Second}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, noVerifier{}, noApps{})
			if (err == nil) != tc.ok {
				t.Fatalf("New: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
