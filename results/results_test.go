package results

import (
	"math"
	"testing"
	"time"
)

// sample returns a finished, good run of seven phases.
func sample() *Result {
	gw := func(conns int, rssPer, heapPer float64, gor int, gcs uint64) Gateway {
		return Gateway{
			Instances:   2,
			RSSBytes:    uint64(30<<20 + float64(conns)*rssPer),
			RSSPerConn:  rssPer,
			HeapBytes:   uint64(8<<20 + float64(conns)*heapPer),
			HeapPerConn: heapPer,
			Goroutines:  gor,
			GCPauseP50:  40e-6,
			GCPauseP99:  310e-6,
			GCPauseMax:  1.2e-3,
			GCCount:     gcs,
			GCCPUShare:  0.021,
			CPUSeconds:  3.5,
		}
	}
	lat := func(p50, p99, max float64) *Latency {
		return &Latency{Count: 100000, P50: p50, P90: p50 * 2, P99: p99, P999: p99 * 1.5, Max: max, Mean: p50 * 1.1}
	}
	start := time.Date(2025, 1, 2, 15, 4, 5, 0, time.UTC)
	return &Result{
		Schema:    SchemaVersion,
		ID:        NewID(start, "gnet", "tcp"),
		StartedAt: start,
		Duration:  312.5,
		Engine:    "gnet",
		Transport: "tcp",
		Config:    map[string]any{"conns": 10000, "instances": 2, "push_rate": 50000.0, "route": "memory"},
		Env: Env{
			Commit: "0123456789abcdef0123456789abcdef01234567", GoVersion: "go1.26.8",
			OS: "linux", Arch: "amd64", CPUModel: "Intel(R) Xeon(R) Processor",
			Kernel: "6.18.44", Hostname: "bench1", GOMAXPROCS: 2, Cores: 2,
			MemoryBytes: 24 << 30, FileLimit: 20000,
		},
		Phases: []Phase{
			{Name: PhaseRamp, Duration: 0.81, Conns: 10000, Target: 10000, ConnectRate: 12345.6,
				Gateway: gw(10000, 1210, 870, 14, 3), Errors: map[string]int64{"dial": 12, "login": 3}},
			{Name: PhaseIdle, Duration: 30, Conns: 10000, Target: 10000, Gateway: gw(10000, 1180, 850, 14, 1)},
			{Name: PhaseHeartbeat, Duration: 30, Conns: 10000, Target: 10000, Gateway: gw(10000, 1190, 860, 14, 4),
				Deliveries: 333.3, Latency: lat(0.21, 0.9, 4.1), Sent: 10000, Delivered: 10000},
			{Name: PhaseUpstream, Duration: 30, Conns: 10000, Target: 10000, Gateway: gw(10000, 1250, 900, 30, 40),
				Deliveries: 15000, Latency: lat(0.45, 2.3, 17), Sent: 450000, Delivered: 449990, Failed: 10},
			{Name: PhasePush, Duration: 30, Conns: 10000, Target: 10000, Gateway: gw(10000, 1300, 950, 16, 80),
				Deliveries: 75012, Latency: lat(0.31, 0.85, 12.5), Sent: 2250000, Delivered: 2249000, Offline: 1000},
			{Name: PhaseGroup, Duration: 30, Conns: 10000, Target: 10000, Gateway: gw(10000, 1300, 950, 16, 60),
				Deliveries: 98000.5, Latency: lat(3.2, 41, 160), Sent: 2940000, Delivered: 2940000},
			{Name: PhaseBroadcast, Duration: 10, Conns: 10000, Target: 10000, Gateway: gw(10000, 1310, 955, 16, 5),
				Deliveries: 61000, Latency: lat(80, 160, 171), Sent: 100000, Delivered: 100000},
		},
	}
}

func TestNewID(t *testing.T) {
	at := time.Date(2025, 1, 2, 15, 4, 5, 999, time.FixedZone("CET", 3600))
	tests := []struct {
		engine, transport, want string
	}{
		{"gnet", "tcp", "20250102T140405Z-gnet-tcp"},
		{"std", "ws+tls", "20250102T140405Z-std-ws+tls"},
		{"raw-syscall", "tcp", "20250102T140405Z-raw_syscall-tcp"},
		{"../x", "a/b c", "20250102T140405Z-.._x-a_b_c"},
		{"", "", "20250102T140405Z-unknown-unknown"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := NewID(at, tt.engine, tt.transport); got != tt.want {
				t.Errorf("NewID(%q, %q) = %q, want %q", tt.engine, tt.transport, got, tt.want)
			}
		})
	}
}

func TestUnaccounted(t *testing.T) {
	p := Phase{Sent: 100, Delivered: 90, Offline: 4, Failed: 1}
	if got := p.Unaccounted(); got != 5 {
		t.Errorf("Unaccounted() = %d, want 5", got)
	}
}

func TestCompare(t *testing.T) {
	base := sample()
	other := sample()
	other.Engine = "std"
	other.Phases[1].Gateway.RSSPerConn = 1180 * 40 // idle: std holds 40x the memory
	other.Phases[4].Deliveries = 75012 / 2
	other.Phases = other.Phases[:5] // no group, no broadcast
	other.Phases[0].Latency = &Latency{Count: 1, P99: 5}
	base.Phases[0].ConnectRate = 0 // zero base: skipped

	rs := Compare(base, other)
	find := func(phase, metric string) (Ratio, bool) {
		for _, r := range rs {
			if r.Phase == phase && r.Metric == metric {
				return r, true
			}
		}
		return Ratio{}, false
	}
	tests := []struct {
		phase, metric string
		want          float64 // NaN: must be absent
		lower         bool
	}{
		{PhaseIdle, "rss_per_conn", 40, true},
		{PhaseIdle, "heap_per_conn", 1, true},
		{PhasePush, "deliveries_per_s", 0.5, false},
		{PhasePush, "latency_p99", 1, true},
		{PhaseRamp, "conns", 1, false},
		{PhaseRamp, "connect_rate", math.NaN(), false},      // zero base
		{PhaseRamp, "latency_p99", math.NaN(), false},       // base did not measure it
		{PhaseGroup, "deliveries_per_s", math.NaN(), false}, // other has no group phase
		{PhaseIdle, "missing", math.NaN(), false},           // idle sent nothing
	}
	for _, tt := range tests {
		t.Run(tt.phase+"/"+tt.metric, func(t *testing.T) {
			r, ok := find(tt.phase, tt.metric)
			if math.IsNaN(tt.want) {
				if ok {
					t.Fatalf("got %+v, want no ratio", r)
				}
				return
			}
			if !ok {
				t.Fatal("no ratio")
			}
			if math.Abs(r.Ratio-tt.want) > 1e-9 || r.LowerIsBetter != tt.lower {
				t.Errorf("got %+v, want ratio %v lower %v", r, tt.want, tt.lower)
			}
			if r.Ratio != r.Other/r.Base {
				t.Errorf("Ratio %v != Other/Base %v", r.Ratio, r.Other/r.Base)
			}
		})
	}
	if Compare(nil, other) != nil || Compare(base, nil) != nil {
		t.Error("Compare with a nil run should return nil")
	}
}

func TestCompareRepeatedPhases(t *testing.T) {
	mk := func(rates ...float64) *Result {
		r := &Result{}
		for _, d := range rates {
			r.Phases = append(r.Phases, Phase{Name: PhasePush, Deliveries: d})
		}
		return r
	}
	rs := Compare(mk(100, 200), mk(300, 100))
	want := map[string]float64{"push": 3, "push#2": 0.5}
	if len(rs) != len(want) {
		t.Fatalf("got %+v, want ratios for %v", rs, want)
	}
	for _, r := range rs {
		if want[r.Phase] != r.Ratio {
			t.Errorf("%s: ratio %v, want %v", r.Phase, r.Ratio, want[r.Phase])
		}
	}
}
