package results

import (
	"regexp"
	"strings"
	"testing"
)

// sideRun is a synthetic run: rss per idle connection, push deliveries/s and broadcast's last
// delivery vary; upstream only when up is set; the push phase saturated when sat.
func sideRun(engine string, rss, deliveries, last float64, up, sat bool) *Result {
	r := &Result{Engine: engine, Phases: []Phase{
		{Name: PhaseRamp, Conns: 100, Target: 100, ConnectRate: 500, Offered: 500, Achieved: 500,
			Cost: &Cost{Op: "connect", Ops: 100, CPUPerOp: 40, AllocsPerOp: 30}, Loadgen: &Loadgen{Processes: 2, CPUSeconds: 0.5, RSSBytes: 40 << 20}},
		{Name: PhaseIdle, Conns: 100, Gateway: Gateway{RSSBytes: 1 << 20, RSSPerConn: rss, HeapBytes: 1 << 20, HeapPerConn: rss / 2, Goroutines: 10}},
	}}
	if up {
		r.Phases = append(r.Phases, Phase{Name: PhaseUpstream, Sent: 100, Delivered: 100, Deliveries: 300, Offered: 300, Achieved: 300,
			Latency: &Latency{Count: 100, P50: 1, P99: 3, Max: 5}})
	}
	push := Phase{Name: PhasePush, Sent: 10, Delivered: 10, Deliveries: deliveries, Offered: 1000, Achieved: deliveries,
		Latency: &Latency{Count: 10, P50: 1, P99: 2, Max: 4}, LatencyUncorrected: &Latency{Count: 10, P50: 1, P99: 1.5, Max: 3},
		Cost: &Cost{Op: "push", Ops: 10, CPUPerOp: 25, AllocsPerOp: 12, Deliveries: 10, CPUPerDelivery: 25}}
	if sat {
		push.Saturated, push.Saturation = true, []string{"sent 800/s of the 1000/s offered"}
	}
	r.Phases = append(r.Phases, push,
		Phase{Name: PhaseBroadcast, Sent: 200, Delivered: 200, Deliveries: 20_000, Latency: &Latency{Count: 200, P50: 3, P99: 9, Max: last}})
	return r
}

func TestSideBySide(t *testing.T) {
	tests := []struct {
		name   string
		runs   []*Result
		base   string
		want   []string // substrings of the output
		unwant []string
		// lines: a regexp each that some line must match (the row's cells in order)
		lines []string
	}{
		{
			name: "one run each, ratios against std",
			runs: []*Result{sideRun("gnet", 500, 900, 10, true, false), sideRun("std", 10000, 1000, 20, true, false), sideRun("nbio", 600, 1100, 30, true, false)},
			base: "std",
			want: []string{"gnet/std", "nbio/std", "ratios of the medians against std"},
			lines: []string{
				`^\s*phase\s+metric\s+gnet\s+std\s+nbio\s*$`,
				`idle\s+RSS/conn\s+500 B\s+9.77 KB\s+600 B\s*$`,
				`idle\s+RSS/conn\s+0.05x\s+0.06x\s*$`,
				`push\s+deliveries/s\s+0.90x\s+1.10x\s*$`,
				`push\s+p99 uncorrected \(ms\)\s+1.50\s+1.50\s+1.50\s*$`,
				`push\s+gateway CPU µs/op\s+25.0\s+25.0\s+25.0\s*$`,
				`ramp\s+loadgen RSS\s+40.0 MB\s+40.0 MB\s+40.0 MB\s*$`,
			},
			unwant: []string{"0–", "floor", "saturated", "SAT"},
		},
		{
			name: "three rounds: median, min–max, spread markers, saturation",
			runs: []*Result{
				sideRun("std", 2000, 1000, 100, true, false), sideRun("gnet", 1000, 1000, 100, true, false),
				sideRun("std", 2100, 1050, 100, true, false), sideRun("gnet", 1000, 1300, 100, true, true),
				sideRun("std", 2300, 1020, 100, true, false), sideRun("gnet", 1000, 1080, 100, true, false),
			},
			base: "std",
			lines: []string{
				`^\s*runs\s+3\s+3\s*$`,
				// std: median 2100, range 2000–2300: 14% → "~"; gnet steady
				`idle\s+RSS/conn\s+2.05 KB \(1.95–2.25\)~\s+1000 B \(1000–1000\)\s*$`,
				// gnet's deliveries: 1000, 1080, 1300 → median 1080, spread 28% → "!"
				`push\s+deliveries/s\s+1.02k \(1.00–1.05\)\s+1.08k \(1.00–1.30\)!\s*$`,
				`push\s+saturated\s+no\s+SAT 1/3\s*$`,
				`idle\s+RSS/conn\s+0.48x\s*$`,
			},
			want:   []string{"push on gnet, run 2: sent 800/s of the 1000/s offered", "~ marks a spread", "SAT n/m"},
			unwant: []string{"floor"},
		},
		{
			name: "the floor present: its column, no upstream, ratios against it",
			runs: []*Result{
				sideRun("std", 2000, 1000, 200, true, false), sideRun("gnet", 1000, 1000, 120, true, false), sideRun("floor", 500, 1000, 100, false, false),
				sideRun("std", 2000, 1000, 200, true, false), sideRun("gnet", 1000, 1000, 120, true, false), sideRun("floor", 500, 1000, 100, false, false),
				sideRun("std", 2000, 1000, 200, true, false), sideRun("gnet", 1000, 1000, 120, true, false), sideRun("floor", 500, 1000, 100, false, false),
			},
			base: "std",
			lines: []string{
				`^\s*phase\s+metric\s+std\s+gnet\s+floor\s*$`,
				`upstream\s+deliveries/s\s+300 \(300–300\)\s+300 \(300–300\)\s+—\s*$`,
				`^\s*phase\s+metric\s+std/floor\s+gnet/floor\s*$`,
				`idle\s+RSS/conn\s+4.00x\s+2.00x\s*$`,
				`idle\s+heap/conn\s+4.00x\s+2.00x\s*$`,
				`ramp\s+connects/s\s+1.00x\s+1.00x\s*$`,
				`broadcast\s+deliveries/s\s+1.00x\s+1.00x\s*$`,
				`broadcast\s+last delivery \(ms\)\s+2.00x\s+1.20x\s*$`,
				`upstream\s+deliveries/s\s+1.00x\s+—\s*$`, // floor/std: the floor did not run it
			},
			want: []string{"ratios of the medians against the floor"},
		},
		{
			name: "no run of the base engine: the first engine is the base",
			runs: []*Result{sideRun("gnet", 1000, 1000, 100, true, false), sideRun("nbio", 500, 1000, 100, true, false)},
			base: "std",
			want: []string{"nbio/gnet", "against gnet"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := SideBySide(&b, tt.runs, tt.base); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, want := range tt.want {
				if !strings.Contains(out, want) {
					t.Errorf("missing %q", want)
				}
			}
			for _, unwant := range tt.unwant {
				if strings.Contains(out, unwant) {
					t.Errorf("unexpected %q", unwant)
				}
			}
			for _, l := range tt.lines {
				if !regexp.MustCompile(`(?m)` + l).MatchString(out) {
					t.Errorf("no line matches %s", l)
				}
			}
			if t.Failed() {
				t.Logf("output:\n%s", out)
			}
		})
	}
	var b strings.Builder
	if err := SideBySide(&b, nil, "std"); err == nil {
		t.Error("no runs: want an error")
	}
}

func TestStats(t *testing.T) {
	tests := []struct {
		vs     []float64
		median float64
		marker string
	}{
		{[]float64{5}, 5, ""},
		{[]float64{3, 1, 2}, 2, "!"},
		{[]float64{100, 104, 109}, 104, ""},  // 8.7%
		{[]float64{100, 106, 112}, 106, "~"}, // 11%
		{[]float64{100, 110, 200, 120}, 115, "!"},
		{[]float64{0, 0, 0}, 0, ""},
		{[]float64{0, 0, 1}, 0, "!"}, // a range around a zero median
	}
	for _, tt := range tests {
		s := statsOf(tt.vs)
		if s.median != tt.median || s.marker() != tt.marker {
			t.Errorf("%v: median %v marker %q; want %v %q", tt.vs, s.median, s.marker(), tt.median, tt.marker)
		}
	}
}
