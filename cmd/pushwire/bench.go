package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/loadgen"
	"github.com/pushwire/pushwire/results"
	"github.com/pushwire/pushwire/tui"
)

func runBench(args []string) error {
	fs := newFlags("bench", "Start a local deployment (control and --instances gateway processes on --engine), run the\nload generator against it in its own process, stop everything, write results/<id>.json\nand print a summary. Ctrl-C stops every process it started.")
	engine := fs.String("engine", "std", "gateway I/O engine (of the stream transports; with --transport quic the quic engine serves and this is not used)")
	transportName := fs.String("transport", engines.TransportTCP, "the transport measured: tcp, tls, ws, wss or quic (the gateways serve it next to tcp; tls, wss\nand quic with a self-signed certificate written into the run's log directory)")
	engineList := fs.String("engines", "", "compare engines: run each of these (comma-separated, or \"all\") in turn, --rounds times\ninterleaved, and print one table side by side with ratios against the first (std)")
	rounds := fs.Int("rounds", 1, "with --engines: how many times to run each engine, interleaved")
	instances := fs.Int("instances", 1, "gateway processes")
	conns := fs.Int("conns", 10_000, "connections to open")
	rate := fs.Float64("rate", 2000, "new connections per second")
	idle := fs.Duration("idle", 10*time.Second, "idle hold")
	pushRate := fs.Float64("push-rate", 2000, "unicast pushes per second")
	pushDur := fs.Duration("push-duration", 10*time.Second, "how long to push")
	sources := fs.Int("sources", 0, "source addresses to dial from, 127.0.0.2 on (0: one per 8,000 connections)")
	route := fs.String("route", "memory", "route store the gateways share: memory (one instance) or redis (the bench starts a redis-server on a\nfree port and stops it after; needed for --instances above 1)")
	mode := fs.String("mode", "registry", "delivery mode with --route redis: registry (look up the holding instances) or broadcast (every\ninstance receives every push)")
	workers := fs.Int("workers", 0, "load generator worker processes (0: one per 15,000 connections)")
	heartbeat := fs.Duration("heartbeat", 30*time.Second, "heartbeat interval told to clients")
	out := fs.String("out", "results", "directory for the result file and the processes' logs")
	check := fs.Bool("check", false, "fail unless the result passes its checks (target reached, nothing missing)")
	phases := fs.String("phases", strings.Join(loadgen.DefaultPhases, ","), "phases to run, in order (ramp always runs first)")
	reqRate := fs.Float64("request-rate", 2000, "upstream phase: REQUESTs per second (to the demo backend's echo business)")
	groupSize := fs.Int("group-size", 1000, "group phase: members of each group")
	groupRate := fs.Float64("group-rate", 10, "group phase: group pushes per second")
	fanoutPushes := fs.Int("fanout-pushes", 5, "group-all and broadcast phases: messages, one a second")
	pushSenders := fs.Int("push-senders", 64, "push phase: concurrent push API callers (each waits for the answer, remote reports included)")
	lgMetrics := fs.String("loadgen-metrics", "", "serve the load generator's Prometheus /metrics on this address, e.g. 127.0.0.1:7190 (empty: off; with --tui: a free port)")
	watch := fs.Bool("tui", false, "watch the run live in the dashboard (pushwire tui) in the foreground: the bench's log goes to\n--out/bench-<time>.log, and quitting the dashboard stops the run")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	if err := checkRoute("bench", *route, *mode); err != nil {
		return err
	}
	if !slices.Contains(benchTransports, *transportName) {
		return fmt.Errorf("bench: --transport %q: want one of %s", *transportName, strings.Join(benchTransports, ", "))
	}
	if *engineList == "" && !engines.Carries(*engine, engines.TransportTCP) && *transportName != engines.TransportQUIC {
		return fmt.Errorf("bench: --engine %s serves only its own transport: use --transport %s", *engine, *engine)
	}
	ctx, stop := signalContext()
	defer stop()
	cfg := bench.Config{
		DeployConfig: bench.DeployConfig{Engine: *engine, Instances: *instances, Heartbeat: *heartbeat, Backend: true, Logger: log,
			Route: *route, Mode: *mode, Transport: *transportName},
		Workers:        *workers,
		Conns:          *conns,
		ConnectRate:    *rate,
		Idle:           *idle,
		PushRate:       *pushRate,
		PushDuration:   *pushDur,
		Sources:        *sources,
		OutDir:         *out,
		Commit:         commit,
		LoadgenMetrics: *lgMetrics,
		LoadgenArgs: []string{"--phases", *phases,
			"--request-rate", strconv.FormatFloat(*reqRate, 'f', -1, 64), "--request-duration", pushDur.String(),
			"--group-size", strconv.Itoa(*groupSize), "--group-rate", strconv.FormatFloat(*groupRate, 'f', -1, 64),
			"--group-duration", pushDur.String(), "--fanout-pushes", strconv.Itoa(*fanoutPushes),
			"--push-senders", strconv.Itoa(*pushSenders)},
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if *engineList != "" {
		names := splitList(*engineList)
		if *engineList == "all" {
			names = []string{"std", "gnet", "netpoll", "nbio"}
		}
		if *transportName == engines.TransportQUIC {
			// QUIC is carried by its own engine: the stream engines have nothing to compare.
			fmt.Fprintf(os.Stderr, "--transport quic: the quic engine carries QUIC whatever the stream engine; running it alone (not %s)\n", strings.Join(names, ", "))
			names = []string{engines.TransportQUIC}
		}
		return benchEngines(ctx, cfg, names, *rounds, *check)
	}
	var res *results.Result
	var path string
	var runErr error
	if *watch {
		res, path, runErr = benchWithTUI(ctx, cfg)
	} else {
		res, path, runErr = bench.Run(ctx, cfg)
	}
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

// benchWithTUI runs the bench with the dashboard in the foreground. The bench's log and the load
// generator's progress go to a file; quitting the dashboard stops the run (a clean end: the
// partial result is still written). When the run ends first, the dashboard says so and stays
// until quit.
func benchWithTUI(ctx context.Context, cfg bench.Config) (*results.Result, string, error) {
	if cfg.LoadgenMetrics == "" {
		port, err := bench.FreePort()
		if err != nil {
			return nil, "", err
		}
		cfg.LoadgenMetrics = "127.0.0.1:" + strconv.Itoa(port)
	}
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, "", err
	}
	logPath := filepath.Join(cfg.OutDir, "bench-"+time.Now().UTC().Format("20060102T150405Z")+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = f.Close() }() // the log is written line by line; a late close error has no reader
	log := slog.New(slog.NewTextHandler(f, nil))
	slog.SetDefault(log)
	cfg.Logger, cfg.Progress = log, f
	fmt.Printf("bench log: %s\n", logPath)

	type outcome struct {
		res  *results.Result
		path string
		err  error
	}
	deployed := make(chan *bench.Deployment, 1)
	cfg.OnDeploy = func(d *bench.Deployment) { deployed <- d }
	runCtx, cancelRun := context.WithCancel(ctx)
	defer cancelRun()
	done := make(chan outcome, 1)
	go func() {
		res, path, err := bench.Run(runCtx, cfg)
		done <- outcome{res, path, err}
	}()
	var dep *bench.Deployment
	select {
	case dep = <-deployed:
	case o := <-done: // the deployment failed
		return o.res, o.path, o.err
	}
	notes := make(chan string, 1)
	finished := make(chan outcome, 1)
	go func() {
		o := <-done
		msg := "bench finished: result " + o.path + " (quit with q)"
		if o.err != nil {
			msg = "bench ended: " + o.err.Error()
		}
		notes <- msg
		finished <- o
	}()
	terr := tui.Run(ctx, tui.Config{Gateways: dep.MetricsURLs(), Loadgen: "http://" + cfg.LoadgenMetrics + "/metrics",
		OutDir: cfg.OutDir, Log: log.With("component", "tui"), Notes: notes})
	var o outcome
	select {
	case o = <-finished:
	default: // quit (or signalled) before the run's end: stop it
		cancelRun()
		o = <-finished
		if ctx.Err() == nil && terr == nil {
			fmt.Println("run stopped from the dashboard before its end; the result holds the phases done")
			o.err = nil
		}
	}
	if terr != nil {
		o.err = errors.Join(o.err, terr)
	}
	return o.res, o.path, o.err
}

// benchEngines runs the bench once per engine per round, interleaved (std, gnet, …, std, gnet, …)
// so that a change in the machine's load falls on every engine alike, then prints every run's
// figures side by side with ratios against the first engine, and writes that table to the
// output directory.
func benchEngines(ctx context.Context, cfg bench.Config, names []string, rounds int, check bool) error {
	for _, n := range names {
		if n == engines.TransportQUIC && cfg.Transport == engines.TransportQUIC {
			continue
		}
		if !slices.Contains(engines.Names(), n) || !engines.Carries(n, engines.TransportTCP) {
			return fmt.Errorf("bench: --engines: unknown engine %q (have %s)", n, strings.Join(engines.Names(), ", "))
		}
	}
	var runs []*results.Result
	var errs []error
	for round := range max(rounds, 1) {
		for _, name := range names {
			if ctx.Err() != nil {
				break
			}
			c := cfg
			c.Engine = name
			c.LogDir = ""
			fmt.Fprintf(os.Stderr, "\n=== round %d/%d: %s over %s ===\n", round+1, max(rounds, 1), name, c.Transport)
			res, path, err := bench.Run(ctx, c)
			if res != nil {
				_ = res.Summary(os.Stdout)
				fmt.Printf("\nresult: %s\n", path)
				runs = append(runs, res)
				if check {
					if cerr := res.Check(); cerr != nil {
						err = errors.Join(err, fmt.Errorf("result check: %w", cerr))
					}
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	if len(runs) > 0 {
		var buf strings.Builder
		fmt.Fprintf(&buf, "pushwire engines compared in one sitting, interleaved  %s  commit %s  transport %s  %d conns  %d round(s)\n\n",
			time.Now().UTC().Format(time.RFC3339), commit, cfg.Transport, cfg.Conns, max(rounds, 1))
		if err := results.SideBySide(&buf, runs, names[0]); err != nil {
			return err
		}
		fmt.Print("\n" + buf.String())
		path := filepath.Join(cfg.OutDir, time.Now().UTC().Format("20060102T150405Z")+"-engines-"+cfg.Transport+".txt")
		if err := os.WriteFile(path, []byte(buf.String()), 0o644); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Printf("\ncomparison: %s\n", path)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return ctx.Err()
}

// benchTransports are what --transport takes.
var benchTransports = []string{engines.TransportTCP, engines.TransportTLS, engines.TransportWS, engines.TransportWSS, engines.TransportQUIC}
