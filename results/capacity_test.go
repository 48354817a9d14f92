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

func TestLimitFor(t *testing.T) {
	split := &Capacity{P99Limit: 50, Limits: map[string]float64{WorkloadBroadcast: 500}}
	tests := []struct {
		name     string
		c        *Capacity
		workload string
		want     float64
	}{
		{"nil: the default", nil, WorkloadBroadcast, DefaultP99Limit},
		{"no limit recorded: the default", &Capacity{}, WorkloadPush, DefaultP99Limit},
		{"a single limit, every workload", &Capacity{P99Limit: 80}, WorkloadBroadcast, 80},
		{"a workload's own limit", split, WorkloadBroadcast, 500},
		{"the others keep P99Limit", split, WorkloadPush, 50},
		{"a zero own limit is none", &Capacity{P99Limit: 40, Limits: map[string]float64{WorkloadGroup: 0}}, WorkloadGroup, 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.LimitFor(tt.workload); got != tt.want {
				t.Errorf("LimitFor(%s) = %g, want %g", tt.workload, got, tt.want)
			}
		})
	}
}

func TestLimitsText(t *testing.T) {
	split := &Capacity{P99Limit: 50, Limits: map[string]float64{WorkloadBroadcast: 500}}
	tests := []struct {
		c         *Capacity
		workloads []string
		want      string
	}{
		{nil, nil, "p99 limit 50.0 ms"},
		{split, []string{WorkloadBroadcast, WorkloadPush}, "p99 limit 50.0 ms; broadcast 500 ms"},
		{split, []string{WorkloadPush}, "p99 limit 50.0 ms"},
		{&Capacity{P99Limit: 50, Limits: map[string]float64{WorkloadBroadcast: 500, WorkloadGroup: 100},
			Ceilings: []Ceiling{{Workload: WorkloadBroadcast}, {Workload: WorkloadGroup}}}, nil, "p99 limit 50.0 ms; group 100 ms; broadcast 500 ms"},
	}
	for _, tt := range tests {
		if got := tt.c.LimitsText(tt.workloads...); got != tt.want {
			t.Errorf("LimitsText(%v) = %q, want %q", tt.workloads, got, tt.want)
		}
	}
}

func TestCeilings(t *testing.T) {
	split := &Capacity{P99Limit: 50, Limits: map[string]float64{WorkloadBroadcast: 500}}
	tests := []struct {
		name   string
		steps  []Phase
		limits *Capacity // nil: 50 ms for every workload
		want   []Ceiling
	}{
		{
			name:   "broadcast at 200 ms holds at its 500 ms limit",
			steps:  []Phase{step(WorkloadBroadcast, 1, p99(200)), step(WorkloadBroadcast, 2, p99(700)), step(WorkloadPush, 500, p99(200))},
			limits: split,
			want: []Ceiling{
				{Workload: WorkloadBroadcast, Unit: "messages", Rate: 1, Deliveries: 10, P99: 200, FailedAt: 2,
					Why: "p99 700 ms over the 500 ms limit", Steps: 2, P99Limit: 500},
				{Workload: WorkloadPush, Unit: "pushes", FailedAt: 500, Why: "p99 200 ms over the 50.0 ms limit", Steps: 1, P99Limit: 50},
			},
		},
		{
			name:   "broadcast at 200 ms fails at a single 50 ms limit",
			steps:  []Phase{step(WorkloadBroadcast, 1, p99(200))},
			limits: &Capacity{P99Limit: 50},
			want: []Ceiling{{Workload: WorkloadBroadcast, Unit: "messages", FailedAt: 1,
				Why: "p99 200 ms over the 50.0 ms limit", Steps: 1, P99Limit: 50}},
		},
		{
			name:  "broadcast at 200 ms fails without limits (the default)",
			steps: []Phase{step(WorkloadBroadcast, 1, p99(200))},
			want: []Ceiling{{Workload: WorkloadBroadcast, Unit: "messages", FailedAt: 1,
				Why: "p99 200 ms over the 50.0 ms limit", Steps: 1, P99Limit: 50}},
		},
		{
			name: "doubling then bisecting",
			steps: []Phase{
				step(WorkloadPush, 500), step(WorkloadPush, 1000), step(WorkloadPush, 2000),
				step(WorkloadPush, 4000, saturated("sent 3000/s of the 4000/s offered")),
				step(WorkloadPush, 3000, p99(70)), step(WorkloadPush, 2500),
			},
			want: []Ceiling{{Workload: WorkloadPush, Unit: "pushes", Rate: 2500, Deliveries: 25000, P99: 10,
				FailedAt: 3000, Why: "p99 70.0 ms over the 50.0 ms limit", Steps: 6, P99Limit: 50}},
		},
		{
			name:  "fail at the start rate",
			steps: []Phase{step(WorkloadBroadcast, 1, missing(5))},
			want:  []Ceiling{{Workload: WorkloadBroadcast, Unit: "messages", FailedAt: 1, Why: "5 of 100 messages missing", Steps: 1, P99Limit: 50}},
		},
		{
			name:  "top reached",
			steps: []Phase{step(WorkloadConnect, 500), step(WorkloadConnect, 1000)},
			want:  []Ceiling{{Workload: WorkloadConnect, Unit: "connects", Rate: 1000, Deliveries: 10000, P99: 10, Steps: 2, P99Limit: 50}},
		},
		{
			name: "workloads in the order they ran, plain phases left out",
			steps: []Phase{
				{Name: PhaseRamp}, step(WorkloadGroup, 10), step(WorkloadGroup, 20, missing(1)),
				step(WorkloadBatch, 100), step(WorkloadBatch, 200, p99(60)), step(WorkloadBatch, 150, missing(1)),
			},
			want: []Ceiling{
				{Workload: WorkloadGroup, Unit: "messages", Rate: 10, Deliveries: 100, P99: 10, FailedAt: 20, Why: "1 of 100 messages missing", Steps: 2, P99Limit: 50},
				{Workload: WorkloadBatch, Unit: "calls", Rate: 100, Deliveries: 1000, P99: 10, FailedAt: 150, Why: "1 of 100 messages missing", Steps: 3, P99Limit: 50},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Ceilings(&Result{Phases: tt.steps}, tt.limits)
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

// withLimits gives r's capacity a limit of p99 ms and bcast ms for broadcast.
func withLimits(r *Result, p99, bcast float64) *Result {
	r.Capacity.P99Limit = p99
	if bcast != p99 {
		r.Capacity.Limits = map[string]float64{WorkloadBroadcast: bcast}
	}
	return r
}

// bcast is a broadcast ceiling at rate held to limit ms.
func bcast(rate, limit float64) Ceiling {
	return Ceiling{Workload: WorkloadBroadcast, Unit: "messages", Rate: rate, Deliveries: rate * 10_000, P99: 300,
		P99Limit: limit, Steps: 3}
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
				"p99 limit 50.0 ms\n", "gnet/std", "floor/std", "std/floor", "gnet/floor",
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
			name: "a broadcast limit of its own is stated",
			runs: []*Result{
				withLimits(capRun("std", push(1000), bcast(2, 500)), 50, 500),
				withLimits(capRun("gnet", push(2000), bcast(4, 500)), 50, 500),
			},
			want:    []string{"p99 limit 50.0 ms; broadcast 500 ms\n", "2.00 = 20.0k dl/s p99 300 ms"},
			notWant: []string{"(std, gnet)"},
		},
		{
			name: "runs held to different limits: the engines of each",
			runs: []*Result{
				withLimits(capRun("std", push(1000), bcast(2, 500)), 50, 500),
				capRun("gnet", push(2000), bcast(1, 50)),
			},
			want: []string{"p99 limit 50.0 ms; broadcast 500 ms (std)\n", "p99 limit 50.0 ms (gnet)\n"},
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
	// … or at the limits its Config recorded
	bc := &Result{ID: "b", Engine: "std", Config: map[string]any{"p99_limit_ms": 50.0, "broadcast_p99_limit_ms": 500.0},
		Phases: []Phase{step(WorkloadBroadcast, 1, p99(200)), step(WorkloadBroadcast, 2, p99(600))}}
	b.Reset()
	if err := CeilingTable(&b, []*Result{bc}, "std"); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"p99 limit 50.0 ms; broadcast 500 ms", "1.00 = 10.0 dl/s p99 200 ms", "p99 600 ms over the 500 ms limit"} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("table lacks %q:\n%s", w, b.String())
		}
	}
}
