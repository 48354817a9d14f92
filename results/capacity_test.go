package results

import (
	"strings"
	"testing"
)

// step is a capacity step of workload w at rate that held (p99 10 ms, everything delivered)
// unless changed by the options.
func step(w string, rate float64, opts ...func(*Phase)) Phase {
	p := Phase{
		Name: w + "@" + human(rate), Workload: w, Offered: rate, Achieved: rate,
		Sent: 100, Delivered: 100, Deliveries: rate * 10,
		Latency: &Latency{Count: 100, P50: 2, P99: 10},
	}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func saturated(why string) func(*Phase) {
	return func(p *Phase) { p.Saturated, p.Saturation = true, []string{why} }
}

func p99(ms float64) func(*Phase) { return func(p *Phase) { p.Latency.P99 = ms } }

func missing(n int64) func(*Phase) {
	return func(p *Phase) { p.Delivered -= n; p.Missing = n }
}

func TestStepFailures(t *testing.T) {
	tests := []struct {
		name string
		p    Phase
		want []string // substrings of the reasons, in order; none: the step held
	}{
		{"held", step(WorkloadPush, 1000), nil},
		{"p99 at the limit holds", step(WorkloadPush, 1000, p99(50)), nil},
		{"p99 over", step(WorkloadPush, 1000, p99(51)), []string{"p99 51.0 ms over the 50.0 ms limit"}},
		{"saturated first", step(WorkloadPush, 1000, saturated("sent 800/s of the 1000/s offered"), p99(80)),
			[]string{"SAT sent 800/s of the 1000/s offered", "p99 80.0 ms"}},
		{"missing messages", step(WorkloadPush, 1000, missing(3)), []string{"3 of 100 messages missing"}},
		{"missing logins", step(WorkloadConnect, 500, missing(2)), []string{"2 of 100 logins missing"}},
		{"failed", step(WorkloadBatch, 10, func(p *Phase) { p.Failed = 4; p.Delivered = 96 }), []string{"4 of 100 failed"}},
		{"disconnects", step(WorkloadGroup, 10, func(p *Phase) { p.Disconnects = 1 }), []string{"1 unexpected disconnects"}},
		{"nothing measured", step(WorkloadBroadcast, 1, func(p *Phase) { p.Latency = nil }), []string{"no operation measured"}},
		{"errors", step(WorkloadUpstream, 500, func(p *Phase) { p.Errors = map[string]int64{"b": 2, "a": 1} }), []string{"errors: a=1, b=2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := StepFailures(&tt.p, 50)
			if len(got) != len(tt.want) {
				t.Fatalf("StepFailures = %q, want %d reasons like %q", got, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("reason %d = %q, want it to contain %q", i, got[i], w)
				}
			}
		})
	}
}

func TestCeilings(t *testing.T) {
	tests := []struct {
		name  string
		steps []Phase
		want  []Ceiling
	}{
		{
			name: "doubling then bisecting",
			steps: []Phase{
				step(WorkloadPush, 500), step(WorkloadPush, 1000), step(WorkloadPush, 2000),
				step(WorkloadPush, 4000, saturated("sent 3000/s of the 4000/s offered")),
				step(WorkloadPush, 3000, p99(70)), step(WorkloadPush, 2500),
			},
			want: []Ceiling{{Workload: WorkloadPush, Unit: "pushes", Rate: 2500, Deliveries: 25000, P99: 10,
				FailedAt: 3000, Why: "p99 70.0 ms over the 50.0 ms limit", Steps: 6}},
		},
		{
			name:  "fail at the start rate",
			steps: []Phase{step(WorkloadBroadcast, 1, missing(5))},
			want:  []Ceiling{{Workload: WorkloadBroadcast, Unit: "messages", FailedAt: 1, Why: "5 of 100 messages missing", Steps: 1}},
		},
		{
			name:  "top reached",
			steps: []Phase{step(WorkloadConnect, 500), step(WorkloadConnect, 1000)},
			want:  []Ceiling{{Workload: WorkloadConnect, Unit: "connects", Rate: 1000, Deliveries: 10000, P99: 10, Steps: 2}},
		},
		{
			name: "workloads in the order they ran, plain phases left out",
			steps: []Phase{
				{Name: PhaseRamp}, step(WorkloadGroup, 10), step(WorkloadGroup, 20, missing(1)),
				step(WorkloadBatch, 100), step(WorkloadBatch, 200, p99(60)), step(WorkloadBatch, 150, missing(1)),
			},
			want: []Ceiling{
				{Workload: WorkloadGroup, Unit: "messages", Rate: 10, Deliveries: 100, P99: 10, FailedAt: 20, Why: "1 of 100 messages missing", Steps: 2},
				{Workload: WorkloadBatch, Unit: "calls", Rate: 100, Deliveries: 1000, P99: 10, FailedAt: 150, Why: "1 of 100 messages missing", Steps: 3},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Ceilings(&Result{Phases: tt.steps}, 50)
			if len(got) != len(tt.want) {
				t.Fatalf("Ceilings = %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("ceiling %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func capRun(engine string, ceils ...Ceiling) *Result {
	return &Result{ID: "x-" + engine, Engine: engine, Capacity: &Capacity{P99Limit: 50, Ceilings: ceils}}
}

func TestCeilingTable(t *testing.T) {
	push := func(rate float64) Ceiling {
		return Ceiling{Workload: WorkloadPush, Unit: "pushes", Rate: rate, P99: 12, FailedAt: rate * 2, Why: "SAT sent 1/s of the 2/s offered", Steps: 4}
	}
	group := func(rate float64) Ceiling {
		return Ceiling{Workload: WorkloadGroup, Unit: "messages", Rate: rate, Deliveries: rate * 100, P99: 20, Steps: 5}
	}
	up := Ceiling{Workload: WorkloadUpstream, Unit: "requests", Rate: 4000, P99: 3, Steps: 4}
	tests := []struct {
		name    string
		runs    []*Result
		want    []string
		notWant []string
	}{
		{
			name: "engines and the floor",
			runs: []*Result{
				capRun("std", group(100), push(8000), up),
				capRun("gnet", push(16000), group(200), up),
				capRun(FloorEngine, push(32000), group(400)),
			},
			want: []string{
				"p99 under 50.0 ms", "gnet/std", "floor/std", "std/floor", "gnet/floor",
				"2.00×", "0.50×", "0.25×",
				"8.00k p99 12.0 ms", "100 = 10.0k dl/s p99 20.0 ms",
				"16.0k/s: SAT sent 1/s of the 2/s offered (4 steps)",
				"none failed up to the search's top (5 steps)",
			},
		},
		{
			name: "several runs of an engine: the median and its range",
			runs: []*Result{capRun("std", push(1000)), capRun("std", push(3000)), capRun("std", push(2000))},
			want: []string{"2.00k (1.00–3.00)!", "std #3"},
		},
		{
			name:    "base absent: the first engine",
			runs:    []*Result{capRun("gnet", push(100)), capRun("nbio", push(300))},
			want:    []string{"nbio/gnet", "3.00×"},
			notWant: []string{"floor"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b strings.Builder
			if err := CeilingTable(&b, tt.runs, "std"); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("table lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("table has %q:\n%s", w, out)
				}
			}
			// upstream of the floor: not searched
			if strings.Contains(tt.name, "floor") {
				for _, line := range strings.Split(out, "\n") {
					if strings.HasPrefix(strings.TrimSpace(line), "upstream") && strings.Contains(line, "requests/s") && !strings.Contains(line, "—") {
						t.Errorf("the floor's upstream cell is not —: %q", line)
					}
				}
			}
		})
	}
}

func TestCeilingTableErrors(t *testing.T) {
	var b strings.Builder
	if err := CeilingTable(&b, nil, "std"); err == nil {
		t.Error("no runs: want an error")
	}
	plain := &Result{ID: "plain", Engine: "std", Phases: []Phase{{Name: PhaseRamp}}}
	if err := CeilingTable(&b, []*Result{plain}, "std"); err == nil || !strings.Contains(err.Error(), "plain") {
		t.Errorf("a run without steps: err = %v, want one naming the run", err)
	}
	// a run without Capacity but with steps: computed at the default limit
	steps := &Result{ID: "s", Engine: "std", Phases: []Phase{step(WorkloadPush, 500), step(WorkloadPush, 1000, p99(60))}}
	b.Reset()
	if err := CeilingTable(&b, []*Result{steps}, "std"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "500 p99 10.0 ms") {
		t.Errorf("table:\n%s", b.String())
	}
}
