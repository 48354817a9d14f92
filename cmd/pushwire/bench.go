package main

import (
	"fmt"
	"os"
	"time"

	"github.com/pushwire/pushwire/bench"
)

func runBench(args []string) error {
	fs := newFlags("bench", "Start a local deployment (control and --instances gateway processes on --engine), run the\nload generator against it in its own process, stop everything, write results/<id>.json\nand print a summary. Ctrl-C stops every process it started.")
	engine := fs.String("engine", "std", "gateway I/O engine")
	instances := fs.Int("instances", 1, "gateway processes")
	conns := fs.Int("conns", 10_000, "connections to open")
	rate := fs.Float64("rate", 2000, "new connections per second")
	idle := fs.Duration("idle", 10*time.Second, "idle hold")
	pushRate := fs.Float64("push-rate", 2000, "unicast pushes per second")
	pushDur := fs.Duration("push-duration", 10*time.Second, "how long to push")
	sources := fs.Int("sources", 0, "source addresses to dial from, 127.0.0.2 on (0: one per 8,000 connections)")
	heartbeat := fs.Duration("heartbeat", 30*time.Second, "heartbeat interval told to clients")
	out := fs.String("out", "results", "directory for the result file and the processes' logs")
	check := fs.Bool("check", false, "fail unless the result passes its checks (target reached, nothing missing)")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	ctx, stop := signalContext()
	defer stop()
	res, path, runErr := bench.Run(ctx, bench.Config{
		DeployConfig: bench.DeployConfig{Engine: *engine, Instances: *instances, Heartbeat: *heartbeat, Logger: log},
		Conns:        *conns,
		ConnectRate:  *rate,
		Idle:         *idle,
		PushRate:     *pushRate,
		PushDuration: *pushDur,
		Sources:      *sources,
		OutDir:       *out,
		Commit:       commit,
	})
	if res != nil {
		fmt.Println()
		if err := res.Summary(os.Stdout); err != nil {
			return err
		}
		if path != "" {
			fmt.Printf("\nresult: %s\n", path)
		}
	}
	if runErr != nil {
		return fmt.Errorf("bench: %w", runErr)
	}
	if *check {
		if err := res.Check(); err != nil {
			return fmt.Errorf("bench: result check failed: %w", err)
		}
	}
	return nil
}
