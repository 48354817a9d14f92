package loadgen

import (
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/results"
)

func TestSearchCeiling(t *testing.T) {
	tests := []struct {
		name        string
		start, top  float64
		refine      int
		holds       float64 // a step holds at rates up to this
		wantCeil    float64 // exact, or within precision of holds
		precision   float64 // 0: exact
		wantFailAt  float64 // 0: none failed (exact); -1: any rate above the ceiling
		wantSteps   int     // 0: not checked
		wantRatesLE float64 // every step's rate at most this (0: top)
	}{
		{name: "doubling then two bisections", start: 500, top: 1e6, refine: 2, holds: 5000,
			wantCeil: 5000, precision: 0.25, wantFailAt: -1, wantSteps: 5 + 2},
		{name: "exact bisection", start: 500, top: 1e6, refine: 2, holds: 6000,
			wantCeil: 6000, wantFailAt: 7000, wantSteps: 5 + 2}, // 500…8000 fail, 6000 held, 7000 failed
		{name: "more refinement, closer", start: 100, top: 1e6, refine: 6, holds: 3333,
			wantCeil: 3333, precision: 0.02, wantFailAt: -1},
		{name: "no refinement", start: 10, top: 1e6, refine: -1, holds: 75,
			wantCeil: 40, wantFailAt: 80, wantSteps: 4},
		{name: "fail at the start rate", start: 500, top: 1e6, refine: 2, holds: 100,
			wantCeil: 0, wantFailAt: 500, wantSteps: 1},
		{name: "the top holds: no step above it", start: 500, top: 3000, refine: 2, holds: 1e9,
			wantCeil: 3000, wantFailAt: 0, wantSteps: 4, wantRatesLE: 3000}, // 500 1000 2000 3000
		{name: "start above the top", start: 500, top: 200, refine: 2, holds: 1e9,
			wantCeil: 200, wantFailAt: 0, wantSteps: 1},
		{name: "small rates", start: 1, top: 1000, refine: 2, holds: 3,
			wantCeil: 3, wantFailAt: 3.5, wantSteps: 3 + 2}, // 1 2 4(fail) 3 3.5(fail)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ran []float64
			ceil, failAt, err := searchCeiling(tt.start, tt.top, tt.refine, func(rate float64) (bool, error) {
				ran = append(ran, rate)
				return rate <= tt.holds, nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if tt.precision == 0 && ceil != tt.wantCeil {
				t.Errorf("ceiling %g, want %g (steps %v)", ceil, tt.wantCeil, ran)
			}
			if tt.precision > 0 && (ceil > tt.holds || ceil < tt.wantCeil*(1-tt.precision)) {
				t.Errorf("ceiling %g, want within %g%% below %g (steps %v)", ceil, 100*tt.precision, tt.wantCeil, ran)
			}
			switch {
			case tt.wantFailAt == -1 && failAt <= ceil:
				t.Errorf("failed at %g, want a rate above the ceiling %g (steps %v)", failAt, ceil, ran)
			case tt.wantFailAt >= 0 && failAt != tt.wantFailAt:
				t.Errorf("failed at %g, want %g (steps %v)", failAt, tt.wantFailAt, ran)
			}
			if tt.wantSteps > 0 && len(ran) != tt.wantSteps {
				t.Errorf("%d steps %v, want %d", len(ran), ran, tt.wantSteps)
			}
			top := tt.top
			if tt.wantRatesLE > 0 {
				top = tt.wantRatesLE
			}
			for _, r := range ran {
				if r > top {
					t.Errorf("step at %g above the max %g (steps %v)", r, top, ran)
				}
			}
		})
	}
}

func TestSearchCeilingFatal(t *testing.T) {
	dead := errors.New("worker 0 exited")
	var ran []float64
	ceil, _, err := searchCeiling(500, 1e6, 2, func(rate float64) (bool, error) {
		ran = append(ran, rate)
		if rate >= 2000 {
			return false, dead
		}
		return true, nil
	})
	if !errors.Is(err, dead) || ceil != 1000 || len(ran) != 3 {
		t.Errorf("ceiling %g, err %v, steps %v: want 1000, the worker's error, 3 steps", ceil, err, ran)
	}
}

func TestMidRate(t *testing.T) {
	tests := []struct {
		lo, hi, want float64
		ok           bool
	}{
		{8000, 16000, 12000, true},
		{500, 1000, 750, true},
		{1, 2, 1.5, true},
		{1.5, 2, 1.8, true},
		{1000, 1001, 0, false},
		{4000, 4100, 4050, true},
	}
	for _, tt := range tests {
		got, ok := midRate(tt.lo, tt.hi)
		if ok != tt.ok || ok && got != tt.want {
			t.Errorf("midRate(%g, %g) = %g, %v; want %g, %v", tt.lo, tt.hi, got, ok, tt.want, tt.ok)
		}
	}
}

func TestStepName(t *testing.T) {
	if got := stepName(results.WorkloadBroadcast, 1.5); got != "broadcast@1.5" {
		t.Errorf("stepName = %q", got)
	}
	if got := stepName(results.WorkloadPush, 12000); got != "push@12000" {
		t.Errorf("stepName = %q", got)
	}
}

func TestCapacityDefaults(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "plain run", cfg: Config{}},
		{name: "defaults", cfg: Config{Capacity: []string{"connect", "push"}}},
		{name: "unknown workload", cfg: Config{Capacity: []string{"pushh"}}, wantErr: `capacity workload "pushh"`},
		{name: "twice", cfg: Config{Capacity: []string{"push", "push"}}, wantErr: "named twice"},
		{name: "negative limit", cfg: Config{Capacity: []string{"push"}, P99Limit: -time.Millisecond}, wantErr: "p99 limit"},
		{name: "negative broadcast limit", cfg: Config{Capacity: []string{"broadcast"}, BroadcastP99Limit: -time.Millisecond}, wantErr: "broadcast p99 limit"},
		{name: "negative step", cfg: Config{Capacity: []string{"push"}, StepDuration: -time.Second}, wantErr: "step duration"},
		{name: "negative batch", cfg: Config{Capacity: []string{"batch"}, BatchSize: -1}, wantErr: "batch size"},
		{name: "start above max", cfg: Config{Capacity: []string{"push"}, StartRates: map[string]float64{"push": 5000}, MaxRates: map[string]float64{"push": 1000}},
			wantErr: "start rate 5000 above its max rate 1000"},
		{name: "bad rate", cfg: Config{Capacity: []string{"push"}, MaxRates: map[string]float64{"push": -1}}, wantErr: "max rate of push"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.capacityDefaults()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if len(tt.cfg.Capacity) > 0 && (tt.cfg.P99Limit != 50*time.Millisecond || tt.cfg.BroadcastP99Limit != 500*time.Millisecond || tt.cfg.StepDuration != 5*time.Second ||
					tt.cfg.Refine != 2 || tt.cfg.BatchSize != 10 || tt.cfg.GroupSize != 100 || tt.cfg.StartRates["connect"] != 500) {
					t.Errorf("defaults not applied: %+v", tt.cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestConfigLimits(t *testing.T) {
	tests := []struct {
		name       string
		p99, bcast time.Duration
		want       *results.Capacity
	}{
		{"broadcast its own", 50 * time.Millisecond, 500 * time.Millisecond,
			&results.Capacity{P99Limit: 50, Limits: map[string]float64{results.WorkloadBroadcast: 500}}},
		{"one limit for all", 80 * time.Millisecond, 80 * time.Millisecond, &results.Capacity{P99Limit: 80}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := (&Config{P99Limit: tt.p99, BroadcastP99Limit: tt.bcast}).limits()
			if got.P99Limit != tt.want.P99Limit || !maps.Equal(got.Limits, tt.want.Limits) {
				t.Errorf("limits = %+v, want %+v", got, tt.want)
			}
			for _, w := range results.Workloads {
				want := tt.p99
				if w == results.WorkloadBroadcast {
					want = tt.bcast
				}
				if l := got.LimitFor(w); l != float64(want.Milliseconds()) {
					t.Errorf("LimitFor(%s) = %g, want %d", w, l, want.Milliseconds())
				}
			}
		})
	}
}

func TestParseRates(t *testing.T) {
	got, err := ParseRates("--max-rates", " push=2000, broadcast=8 ,")
	if err != nil || len(got) != 2 || got["push"] != 2000 || got["broadcast"] != 8 {
		t.Errorf("ParseRates = %v, %v", got, err)
	}
	for _, bad := range []string{"push", "pushh=1", "push=0", "push=x", "push=-3"} {
		if _, err := ParseRates("--max-rates", bad); err == nil || !strings.Contains(err.Error(), "--max-rates") {
			t.Errorf("ParseRates(%q): err = %v, want one naming the flag", bad, err)
		}
	}
}
