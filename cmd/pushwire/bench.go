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
	"github.com/pushwire/pushwire/report"
	"github.com/pushwire/pushwire/results"
	"github.com/pushwire/pushwire/tui"
)

func runBench(args []string) error {
	fs := newFlags("bench", "Start a local deployment (control and --instances gateway processes on --engine), run the\nload generator against it in its own process, stop everything, write results/<id>.json\nand print a summary. Ctrl-C stops every process it started.")
	engine := fs.String("engine", "std", "gateway I/O engine (of the stream transports; with --transport quic the quic engine serves and this is not used)")
	transportName := fs.String("transport", engines.TransportTCP, "the transport measured: tcp, tls, ws, wss or quic (the gateways serve it next to tcp; tls, wss\nand quic with a self-signed certificate written into the run's log directory)")
	engineList := fs.String("engines", "", "compare engines in one sitting: run each of these (comma-separated, or \"all\": std, gnet, netpoll,\nnbio and the floor) in turn, --rounds times interleaved, into one directory --out/<time>-engines-<transport>/\nwith the table side by side (medians, min–max, ratios against the first engine and the floor) and the report")
	rounds := fs.Int("rounds", 3, "with --engines: how many times to run each engine, interleaved (std gnet … floor, std gnet …)")
	cpus := fs.String("cpus", "", "put the processes on CPUs: gateway=LIST,loadgen=LIST (a LIST like 1, 0-1 or 0,2; either part may be\nleft out, the sets may overlap). The gateways, control, the backend and Redis start on the gateway set,\nthe load generator and its workers on the loadgen set (sched_setaffinity; GOMAXPROCS follows). Recorded\nin the result. Empty: the kernel places them")
	profile := fs.Bool("profile", false, "save CPU and heap profiles of every gateway per phase (the load generator's --profile-dir) beside the\nresult: <run's log directory>/profiles, or profiles/<engine>-r<round>/ in a sitting's directory")
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
	check := fs.Bool("check", false, "fail unless the result passes its checks (target reached, nothing missing, no phase saturated)")
	allowSat := fs.Bool("allow-saturated", false, "with --check: let a saturated phase pass (one that fell short of its offered rate or\nwhose latency grew through it; still marked SAT in the tables)")
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
	if *engineList == "" && *engine != bench.EngineFloor && !engines.Carries(*engine, engines.TransportTCP) && *transportName != engines.TransportQUIC {
		return fmt.Errorf("bench: --engine %s serves only its own transport: use --transport %s", *engine, *engine)
	}
	var placement *bench.Placement
	if *cpus != "" {
		avail, err := bench.AvailableCPUs()
		if err != nil {
			return err
		}
		if placement, err = bench.ParseCPUs(*cpus, avail); err != nil {
			return err
		}
	}
	ctx, stop := signalContext()
	defer stop()
	cfg := bench.Config{
		Placement: placement,
		Profile:   *profile,
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
			names = sittingEngines
			if why := floorUnfit(*transportName, *instances, *route); why != "" {
				fmt.Fprintf(os.Stderr, "%s; comparing the engines without it\n", why)
				names = names[:len(names)-1]
			}
		}
		if *transportName == engines.TransportQUIC {
			// QUIC is carried by its own engine: the stream engines have nothing to compare.
			fmt.Fprintf(os.Stderr, "--transport quic: the quic engine carries QUIC whatever the stream engine; running it alone (not %s)\n", strings.Join(names, ", "))
			names = []string{engines.TransportQUIC}
		}
		if *rounds < 1 {
			return fmt.Errorf("bench: --rounds %d: want 1 or more", *rounds)
		}
		return benchEngines(ctx, cfg, names, *rounds, *check, results.CheckOptions{AllowSaturated: *allowSat})
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
		if err := res.CheckWith(results.CheckOptions{AllowSaturated: *allowSat}); err != nil {
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

// sittingEngines are the engines of bench --engines all (make bench-all): the four engines, then
// the floor they are measured against.
var sittingEngines = []string{"std", "gnet", "netpoll", "nbio", results.FloorEngine}

// benchEngines runs a sitting: the bench once per engine per round, interleaved (std, gnet, …,
// floor, std, gnet, …) so that a change in the machine's load falls on every engine alike. Every
// run goes into one directory, cfg.OutDir/<UTC time>-engines-<transport>/: the result files, the
// processes' logs, profiles/<engine>-r<round>/ when profiling, comparison.txt (every figure's
// median and min–max per engine side by side, ratios against the first engine and against the
// floor) and the report. The floor runs every phase but upstream (it forwards nothing).
func benchEngines(ctx context.Context, cfg bench.Config, names []string, rounds int, check bool, checkOpts results.CheckOptions) error {
	for _, n := range names {
		if n == engines.TransportQUIC && cfg.Transport == engines.TransportQUIC {
			continue
		}
		if n == results.FloorEngine {
			if why := floorUnfit(cfg.Transport, cfg.Instances, cfg.Route); why != "" {
				return fmt.Errorf("bench: --engines %s: %s: leave it out", strings.Join(names, ","), why)
			}
			continue
		}
		if !slices.Contains(engines.Names(), n) || !engines.Carries(n, engines.TransportTCP) {
			return fmt.Errorf("bench: --engines: unknown engine %q (have %s, %s)", n, strings.Join(engines.Names(), ", "), results.FloorEngine)
		}
	}
	started := time.Now().UTC()
	dir := filepath.Join(cfg.OutDir, started.Format("20060102T150405Z")+"-engines-"+cfg.Transport)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("bench: the sitting's directory: %w", err)
	}
	env := results.CaptureEnv(commit)
	var head strings.Builder
	fmt.Fprintf(&head, "pushwire engines compared in one sitting, interleaved  %s  commit %s  transport %s  %d conns  %d round(s)\n",
		started.Format(time.RFC3339), commit, cfg.Transport, cfg.Conns, rounds)
	fmt.Fprintf(&head, "engines %s  %s  %d cores  GOMAXPROCS %d\n", strings.Join(names, ","), env.CPUModel, env.Cores, env.GOMAXPROCS)
	if p := cfg.Placement.Result().String(); p != "" {
		head.WriteString(p + "\n")
	}
	for _, l := range append(env.Conditions(), env.Warnings()...) {
		head.WriteString(l + "\n")
	}
	fmt.Fprintf(os.Stderr, "sitting: %s\n%s", dir, head.String())

	var runs []*results.Result
	var errs []error
	for round := range rounds {
		for _, name := range names {
			if ctx.Err() != nil {
				break
			}
			c := cfg
			c.Engine = name
			c.OutDir = dir
			tag := fmt.Sprintf("%s-r%d", name, round+1)
			c.LogDir = filepath.Join(dir, "logs", tag)
			if c.Profile {
				c.ProfileDir = filepath.Join(dir, "profiles", tag)
			}
			if name == results.FloorEngine {
				c.LoadgenArgs = withoutPhase(c.LoadgenArgs, results.PhaseUpstream)
			}
			fmt.Fprintf(os.Stderr, "\n=== round %d/%d: %s over %s ===\n", round+1, rounds, name, c.Transport)
			res, path, err := bench.Run(ctx, c)
			if res != nil {
				_ = res.Summary(os.Stdout)
				fmt.Printf("\nresult: %s\n", path)
				runs = append(runs, res)
				if check {
					if cerr := res.CheckWith(checkOpts); cerr != nil {
						err = errors.Join(err, fmt.Errorf("result check: %w", cerr))
					}
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s round %d: %w", name, round+1, err))
			}
		}
	}
	if len(runs) > 0 {
		var buf strings.Builder
		buf.WriteString(head.String() + "\n")
		if err := results.SideBySide(&buf, runs, names[0]); err != nil {
			return err
		}
		fmt.Print("\n" + buf.String())
		path := filepath.Join(dir, "comparison.txt")
		if err := os.WriteFile(path, []byte(buf.String()), 0o644); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Printf("\ncomparison: %s\n", path)
		}
		title := fmt.Sprintf("pushwire engines over %s: %s, %d connections, %d round(s) (%s)",
			cfg.Transport, strings.Join(names, ", "), cfg.Conns, rounds, started.Format(time.RFC3339))
		if md, err := report.Generate(dir, report.Options{Title: title}); err != nil {
			errs = append(errs, fmt.Errorf("report: %w", err))
		} else {
			fmt.Printf("report: %s\n", md)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	return ctx.Err()
}

// floorUnfit says why the floor cannot run in a sitting with these settings ("" when it can): it
// is one process serving tcp, on no route store.
func floorUnfit(transport string, instances int, route string) string {
	switch {
	case transport != engines.TransportTCP:
		return "the floor serves tcp only, not --transport " + transport
	case instances > 1:
		return fmt.Sprintf("the floor is one process, not --instances %d", instances)
	case route != "" && route != bench.RouteMemory:
		return "the floor shares no route store, not --route " + route
	}
	return ""
}

// withoutPhase returns load generator flags whose --phases list leaves out phase (a copy).
func withoutPhase(args []string, phase string) []string {
	out := slices.Clone(args)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == "--phases" {
			out[i+1] = strings.Join(slices.DeleteFunc(splitList(out[i+1]), func(p string) bool { return p == phase }), ",")
		}
	}
	return out
}

// benchTransports are what --transport takes.
var benchTransports = []string{engines.TransportTCP, engines.TransportTLS, engines.TransportWS, engines.TransportWSS, engines.TransportQUIC}
