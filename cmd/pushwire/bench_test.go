package main

import (
	"slices"
	"strings"
	"testing"
)

// Bad sitting and placement settings are refused before anything starts, naming the flag.
func TestBenchSittingFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cpus", "gateway=0,loadgen=999"}, "--cpus"},
		{[]string{"--cpus", "gateway="}, "--cpus"},
		{[]string{"--cpus", "gw=0"}, `--cpus "gw=0": unknown part "gw"`},
		{[]string{"--engines", "std", "--rounds", "0"}, "--rounds 0"},
		{[]string{"--engines", "std,nosuch", "--rounds", "1"}, `--engines: unknown engine "nosuch"`},
		{[]string{"--engines", "std,floor", "--transport", "ws"}, "the floor serves tcp only"},
		{[]string{"--engines", "std,floor", "--instances", "2", "--route", "redis"}, "the floor is one process, not --instances 2"},
	} {
		err := runBench(append([]string{"--log-level", "error", "--out", t.TempDir()}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench %q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
}

func TestWithoutPhase(t *testing.T) {
	args := []string{"--phases", "ramp,idle,upstream,push", "--request-rate", "300"}
	got := withoutPhase(args, "upstream")
	if want := []string{"--phases", "ramp,idle,push", "--request-rate", "300"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if args[1] != "ramp,idle,upstream,push" {
		t.Errorf("the flags given were changed: %q", args)
	}
	if got := withoutPhase([]string{"--conns", "5"}, "upstream"); !slices.Equal(got, []string{"--conns", "5"}) {
		t.Errorf("no --phases: got %q", got)
	}
}
