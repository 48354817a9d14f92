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
