package main

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/results"
)

// TestIntegrationFloorBench runs the workbench on the floor: bench.Deploy starts `pushwire floor`
// in place of the gateway, and the load generator's ramp, idle, push, group, group-all and
// broadcast phases run against it as against any engine, with nothing missing.
func TestIntegrationFloorBench(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process bench")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out := t.TempDir()
	var progress strings.Builder
	res, path, err := bench.Run(ctx, bench.Config{
		DeployConfig: bench.DeployConfig{
			Binary:    testBinary,
			Engine:    bench.EngineFloor,
			Heartbeat: 5 * time.Second,
			Backend:   true,
			LogDir:    t.TempDir(),
			Logger:    slog.New(slog.NewTextHandler(io.Discard, nil)),
		},
		Conns:        300,
		ConnectRate:  600,
		Idle:         time.Second,
		PushRate:     300,
		PushDuration: 2 * time.Second,
		OutDir:       out,
		Progress:     &progress,
		LoadgenArgs: []string{"--phases", "ramp,idle,push,group,group-all,broadcast",
			"--group-size", "100", "--group-rate", "10", "--group-duration", "2s", "--fanout-pushes", "2"},
	})
	if err != nil {
		t.Fatalf("bench on the floor: %v\n%s", err, progress.String())
	}
	if path == "" {
		t.Fatal("no result file written")
	}
	if res.Engine != bench.EngineFloor {
		t.Errorf("result engine %q, want %q", res.Engine, bench.EngineFloor)
	}
	want := []string{results.PhaseRamp, results.PhaseIdle, results.PhasePush, results.PhaseGroup, "group-all", results.PhaseBroadcast}
	var got []string
	for _, p := range res.Phases {
		got = append(got, p.Name)
		if p.Missing != 0 || p.Failed != 0 {
			t.Errorf("phase %s: sent %d, delivered %d, missing %d, failed %d", p.Name, p.Sent, p.Delivered, p.Missing, p.Failed)
		}
		if p.Sent > 0 && p.Delivered == 0 {
			t.Errorf("phase %s: nothing delivered of %d", p.Name, p.Sent)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("phases %v, want %v", got, want)
	}
	// On two shared cores a short phase may trail its sends: saturation is not what this checks.
	if err := res.CheckWith(results.CheckOptions{AllowSaturated: true}); err != nil {
		t.Fatalf("check: %v\n%s", err, progress.String())
	}
}

// TestIntegrationFloorRefusesOtherTransports: the floor serves tcp on one instance only, and says
// so before starting anything.
func TestIntegrationFloorRefusesOtherTransports(t *testing.T) {
	for _, cfg := range []bench.DeployConfig{
		{Binary: testBinary, Engine: bench.EngineFloor, Transport: "ws", LogDir: t.TempDir()},
		{Binary: testBinary, Engine: bench.EngineFloor, Instances: 2, Route: bench.RouteRedis, LogDir: t.TempDir()},
	} {
		_, err := bench.Deploy(context.Background(), cfg)
		if err == nil || !strings.Contains(err.Error(), "floor") {
			t.Errorf("transport %q, %d instances: got %v, want an error naming the floor", cfg.Transport, cfg.Instances, err)
		}
	}
}
