package results

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		name   string
		modify func(r *Result)
		want   []string // substrings of the error, one per problem; none: passes
	}{
		{"good", func(r *Result) {}, nil},
		{"missing messages", func(r *Result) {
			r.Phases[4].Delivered -= 12
			r.Phases[4].Missing = 12
		}, []string{"phase push: 12 of 2250000 messages missing"}},
		{"missing not counted", func(r *Result) {
			r.Phases[5].Delivered -= 7
		}, []string{"phase group: counts do not add up: sent 2940000 - delivered 2939993 - offline 0 - failed 0 = 7, but missing is 0"}},
		{"duplicates", func(r *Result) {
			r.Phases[6].Delivered += 3
		}, []string{"= -3, but missing is 0"}},
		{"online reported offline", func(r *Result) {
			// the gateway answered offline for a device the load generator held: the counts add
			// up, but a cluster must find every live device
			r.Phases[4].Delivered -= 4
			r.Phases[4].Offline = 4
			r.Phases[4].OnlineOffline = 4
		}, []string{"phase push: 4 targets that were online reported offline or stale"}},
		{"unexpected disconnects", func(r *Result) {
			r.Phases[1].Disconnects = 2
		}, []string{"phase idle: 2 unexpected disconnects"}},
		{"unfinished ramp", func(r *Result) {
			r.Phases[0].Conns = 9990
		}, []string{"phase ramp: held 9990 of 10000 connections (99.9%)"}},
		{"ramp without target", func(r *Result) {
			r.Phases[0].Target = 0
		}, []string{"phase ramp: no target"}},
		{"no ramp", func(r *Result) {
			r.Phases = r.Phases[1:]
		}, []string{"no ramp phase"}},
		{"no phases", func(r *Result) {
			r.Phases = nil
		}, []string{"no phases"}},
		{"run errors", func(r *Result) {
			r.Errors = []string{"gateway 2 exited"}
		}, []string{"run: gateway 2 exited"}},
		{"every problem", func(r *Result) {
			r.Engine = ""
			r.Phases[0].Conns = 5000
			r.Phases[3].Missing = 2
			r.Phases[3].Delivered -= 2
			r.Phases[4].Missing = 1
			r.Phases[4].Delivered--
		}, []string{"no engine", "held 5000 of 10000", "phase upstream: 2 of", "phase push: 1 of"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sample()
			tt.modify(r)
			err := r.Check()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Check passed, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Check error\n%v\ndoes not contain %q", err, w)
				}
			}
			if j, ok := err.(interface{ Unwrap() []error }); ok && len(j.Unwrap()) < len(tt.want) {
				t.Errorf("Check listed %d problems, want at least %d", len(j.Unwrap()), len(tt.want))
			}
		})
	}
}

func TestCheckWith(t *testing.T) {
	saturated := func(r *Result) {
		p := &r.Phases[4]
		p.Offered, p.Achieved = 20000, 4100
		p.Saturated, p.Saturation = true, []string{"sent 4100/s of the 20000/s offered", "latency grew from 3 ms to 400 ms"}
	}
	// search makes r a capacity search: ramp, then steps of two workloads, the last of each
	// saturated or missing messages.
	search := func(r *Result) {
		steps := []Phase{
			{Name: "push@1000", Workload: WorkloadPush, Offered: 1000, Achieved: 1000, Sent: 5000, Delivered: 5000},
			{Name: "push@2000", Workload: WorkloadPush, Offered: 2000, Achieved: 1500, Sent: 7500, Delivered: 7400, Missing: 100,
				Saturated: true, Saturation: []string{"sent 1500/s of the 2000/s offered"}, Disconnects: 3},
			{Name: "group@10", Workload: WorkloadGroup, Offered: 10, Achieved: 10, Sent: 50000, Delivered: 50000,
				Saturated: true, Saturation: []string{"deliveries trailed the sends by 4.0 s"}},
		}
		r.Phases = append(r.Phases[:1:1], steps...)
		r.Capacity = &Capacity{P99Limit: 50, Ceilings: []Ceiling{
			{Workload: WorkloadPush, Unit: "pushes", Rate: 1000, P99: 3, FailedAt: 2000, Why: "saturated", Steps: 2},
			{Workload: WorkloadGroup, Unit: "messages", Rate: 0, FailedAt: 10, Why: "saturated", Steps: 1},
		}}
	}
	tests := []struct {
		name   string
		modify func(r *Result)
		opt    CheckOptions
		want   []string // substrings of the error, one per problem; none: passes
	}{
		{"good", func(*Result) {}, CheckOptions{}, nil},
		{"saturated", saturated, CheckOptions{},
			[]string{"phase push: saturated (sent 4100/s of the 20000/s offered; latency grew from 3 ms to 400 ms)"}},
		{"saturated, allowed", saturated, CheckOptions{AllowSaturated: true}, nil},
		{"saturated without a reason", func(r *Result) { r.Phases[2].Saturated = true }, CheckOptions{},
			[]string{"phase heartbeat: saturated (no reason recorded)"}},
		{"saturated and missing, allowed", func(r *Result) {
			saturated(r)
			r.Phases[4].Delivered -= 5
			r.Phases[4].Missing = 5
		}, CheckOptions{AllowSaturated: true}, []string{"phase push: 5 of 2250000 messages missing"}},
		{"capacity search", search, CheckOptions{}, nil},
		{"capacity search without ceilings", func(r *Result) {
			search(r)
			r.Capacity = nil
		}, CheckOptions{}, []string{"capacity search: no ceilings recorded"}},
		{"capacity search with errors", func(r *Result) {
			search(r)
			r.Errors = []string{"gateway 0 exited"}
		}, CheckOptions{}, []string{"run: gateway 0 exited"}},
		{"capacity search without a ramp", func(r *Result) {
			search(r)
			r.Phases = r.Phases[1:]
		}, CheckOptions{}, []string{"no ramp phase"}},
		{"capacity search with a short ramp", func(r *Result) {
			search(r)
			r.Phases[0].Conns = 10
		}, CheckOptions{}, []string{"phase ramp: held 10 of 10000"}},
		{"ceilings but no steps", func(r *Result) {
			r.Phases = r.Phases[:1]
			r.Capacity = &Capacity{P99Limit: 50}
		}, CheckOptions{}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := sample()
			tt.modify(r)
			err := r.CheckWith(tt.opt)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("CheckWith(%+v): %v", tt.opt, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckWith(%+v) passed, want %q", tt.opt, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckWith error\n%v\ndoes not contain %q", err, w)
				}
			}
			if n := len(err.(interface{ Unwrap() []error }).Unwrap()); n != len(tt.want) {
				t.Errorf("CheckWith listed %d problems, want %d:\n%v", n, len(tt.want), err)
			}
			if tt.opt == (CheckOptions{}) && r.Check().Error() != err.Error() {
				t.Errorf("Check and CheckWith of no options differ")
			}
		})
	}
}
