package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/results"
)

func TestCapacityCheck(t *testing.T) {
	ramp := results.Phase{Name: results.PhaseRamp, Target: 10, Conns: 10}
	held := results.Ceiling{Workload: results.WorkloadPush, Unit: "pushes", Rate: 1000, FailedAt: 2000, Why: "SAT sent 1500/s of the 2000/s offered"}
	none := results.Ceiling{Workload: results.WorkloadBroadcast, Unit: "messages", FailedAt: 1, Why: "p99 80.0 ms over the 50.0 ms limit"}
	run := func(errs []string, ceils ...results.Ceiling) *results.Result {
		r := &results.Result{Engine: "gnet", Transport: "tcp", Phases: []results.Phase{ramp}, Errors: errs}
		if ceils != nil {
			r.Capacity = &results.Capacity{P99Limit: 50, Ceilings: ceils}
		}
		return r
	}
	tests := []struct {
		name string
		r    *results.Result
		want []string // substrings of the error; none: passes
	}{
		{"every workload held", run(nil, held), nil},
		{"a workload with no step that held", run(nil, held, none), []string{"broadcast: no step held (p99 80.0 ms over the 50.0 ms limit at 1/s)"}},
		{"run errors", run([]string{"worker 0 exited"}, held), []string{"worker 0 exited"}},
		{"no ceilings", run(nil), []string{"no capacity ceilings"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkCapacity(tt.r)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("checkCapacity: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("checkCapacity passed, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestCapacityEngines(t *testing.T) {
	tests := []struct {
		names   []string
		proto   string
		wantErr string
	}{
		{names: sittingEngines, proto: "tcp"},
		{names: []string{"gnet"}, proto: "ws"},
		{names: []string{"floor"}, proto: "ws", wantErr: "the floor serves tcp only"},
		{names: []string{"gnett"}, proto: "tcp", wantErr: `unknown engine "gnett"`},
		{names: []string{"std"}, proto: "quic", wantErr: "--transport"},
		{names: nil, proto: "tcp", wantErr: "none given"},
	}
	for _, tt := range tests {
		err := checkCapacityEngines(tt.names, tt.proto)
		if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("checkCapacityEngines(%v, %s) = %v, want %q", tt.names, tt.proto, err, tt.wantErr)
		}
	}
}

// Bad capacity settings are refused before anything starts, naming the flag.
func TestCapacityFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--p99-limit", "0s"}, "--p99-limit 0s: must be positive"},
		{[]string{"--broadcast-p99-limit", "-1s"}, "--broadcast-p99-limit -1s: must be positive"},
		{[]string{"--broadcast-p99-limit", "soon"}, "-broadcast-p99-limit"},
		{[]string{"--cpus", "gateway=0,loadgen=999"}, "--cpus"},
		{[]string{"--cpus", "gw=0"}, `--cpus "gw=0": unknown part "gw"`},
		{[]string{"--workloads", "push,pushh"}, `"pushh" is not a workload`},
	} {
		err := runCapacity(append([]string{"--log-level", "error", "--out", t.TempDir()}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("capacity %q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--capacity", "broadcast", "--broadcast-p99-limit", "0s"}, "--broadcast-p99-limit 0s: must be positive"},
		{[]string{"--capacity", "push", "--p99-limit", "-5ms"}, "--p99-limit -5ms: must be positive"},
	} {
		err := runLoadgen(append([]string{"--log-level", "error"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loadgen %q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

// The limits given are the ones the load generator is passed, each in its own flag.
func TestCapacityFlagsPassed(t *testing.T) {
	c, err := capacityFlags("push,broadcast", 40*time.Millisecond, 800*time.Millisecond, time.Second, 1, 10, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if c.P99Limit != 40*time.Millisecond || c.BroadcastP99Limit != 800*time.Millisecond {
		t.Errorf("limits = %s, broadcast %s; want 40ms, broadcast 800ms", c.P99Limit, c.BroadcastP99Limit)
	}
}
