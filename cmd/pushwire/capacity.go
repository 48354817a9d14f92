package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/report"
	"github.com/pushwire/pushwire/results"
)

func runCapacity(args []string) error {
	fs := newFlags("capacity", "Find each engine's ceilings: for every engine, start a local deployment, ramp --conns connections, then\nsearch every workload's highest sustained rate — steps of --step-duration, doubling from a start rate\nwhile a step holds (offered rate reached, latency not growing, nothing missing, p99 within\n--p99-limit), then bisecting --refine times. All runs go into one sitting directory\n--out/<UTC time>-capacity/ with the ceiling table (ceilings.txt), which is also printed.\n\nBroadcast has its own limit, --broadcast-p99-limit (default 500ms): one message to every connection\nis one write per connection, and at the raw write floor of 10–15 µs a write the last of 10,000\nconnections gets it 100–150 ms after the first, so at 50 ms no engine — nor the floor — would hold\na single broadcast step.")
	engine := fs.String("engine", "std", "the gateways' I/O engine (or floor: the raw-epoll floor)")
	engineList := fs.String("engines", "", "search these engines in turn, in one sitting (comma-separated, or \"all\": "+strings.Join(sittingEngines, ",")+")")
	transportName := fs.String("transport", engines.TransportTCP, "the transport measured: tcp, tls, ws, wss (the floor serves tcp only)")
	conns := fs.Int("conns", 10_000, "connections held through the search")
	rate := fs.Float64("rate", 2000, "connects per second of the ramp (and of restoring connections a step lost)")
	instances := fs.Int("instances", 1, "gateway processes (more than one needs --route redis)")
	route := fs.String("route", "memory", "route store the gateways share: memory or redis")
	workers := fs.Int("workers", 0, "load generator worker processes (0: one per 15,000 connections)")
	sources := fs.Int("sources", 0, "source addresses to dial from, 127.0.0.2 on (0: one per 8,000 connections)")
	workloads := fs.String("workloads", strings.Join(results.Workloads, ","), "workloads to search, in order (the floor leaves out upstream: it forwards nothing)")
	p99 := fs.Duration("p99-limit", 50*time.Millisecond, "a step holds with its p99 latency at most this (every workload but broadcast)")
	bcast := fs.Duration("broadcast-p99-limit", 500*time.Millisecond, "a broadcast step holds with its p99 latency at most this (see above)")
	cpus := fs.String("cpus", "", "put the processes on CPUs, as pushwire bench --cpus: gateway=LIST,loadgen=LIST (a LIST like 1, 0-1\nor 0,2; either part may be left out, the sets may overlap). Recorded in each result. Empty: the\nkernel places them")
	step := fs.Duration("step-duration", 5*time.Second, "how long each step sends")
	refine := fs.Int("refine", 2, "bisections between the last rate that held and the first that failed (0: none)")
	batchSize := fs.Int("batch-size", 10, "devices per push API call of the batch workload")
	groupSize := fs.Int("group-size", 100, "members of each group of the group workload")
	startRates := fs.String("start-rates", "", "first rates, workload=rate,… (default connect=500,upstream=500,push=500,batch=100,group=10,broadcast=1)")
	maxRates := fs.String("max-rates", "", "highest rates tried, workload=rate,… (defaults far above what the machine sustains)")
	out := fs.String("out", "results", "directory under which the sitting's directory is made")
	check := fs.Bool("check", false, "fail when a run has errors or a workload has no step that held")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	if err := checkRoute("capacity", *route, "registry"); err != nil {
		return err
	}
	if _, err := capacityFlags(*workloads, *p99, *bcast, *step, *refine, *batchSize, *startRates, *maxRates); err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	placement, err := capacityPlacement(*cpus)
	if err != nil {
		return err
	}
	wl := splitList(*workloads)
	if len(wl) == 0 {
		return errors.New("capacity: --workloads: none given")
	}
	if *groupSize <= 0 {
		return fmt.Errorf("capacity: --group-size %d: must be positive", *groupSize)
	}
	names := []string{*engine}
	if *engineList != "" {
		names = splitList(*engineList)
		if *engineList == "all" {
			names = sittingEngines
		}
	}
	if err := checkCapacityEngines(names, *transportName); err != nil {
		return err
	}
	cfg := bench.Config{
		Placement:    placement,
		DeployConfig: bench.DeployConfig{Instances: *instances, Backend: true, Logger: log, Route: *route, Transport: *transportName},
		Workers:      *workers,
		Conns:        *conns,
		ConnectRate:  *rate,
		Sources:      *sources,
		Commit:       commit,
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	lgArgs := func(wl []string) []string {
		a := []string{"--capacity", strings.Join(wl, ","), "--p99-limit", p99.String(), "--broadcast-p99-limit", bcast.String(),
			"--step-duration", step.String(),
			"--refine", strconv.Itoa(*refine), "--batch-size", strconv.Itoa(*batchSize), "--group-size", strconv.Itoa(*groupSize)}
		if *startRates != "" {
			a = append(a, "--start-rates", *startRates)
		}
		if *maxRates != "" {
			a = append(a, "--max-rates", *maxRates)
		}
		return a
	}
	ctx, stop := signalContext()
	defer stop()

	started := time.Now().UTC()
	dir := filepath.Join(*out, started.Format("20060102T150405Z")+"-capacity")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("capacity: the sitting's directory: %w", err)
	}
	env := results.CaptureEnv(commit)
	var head strings.Builder
	fmt.Fprintf(&head, "pushwire capacity  %s  commit %s  transport %s  %d conns  steps of %s  p99 limit %s; broadcast %s  refine %d\n",
		started.Format(time.RFC3339), commit, *transportName, *conns, step, p99, bcast, *refine)
	fmt.Fprintf(&head, "engines %s  workloads %s  %s  %d cores  GOMAXPROCS %d\n", strings.Join(names, ","), strings.Join(wl, ","), env.CPUModel, env.Cores, env.GOMAXPROCS)
	if p := placement.Result().String(); p != "" {
		head.WriteString(p + "\n")
	}
	for _, l := range append(env.Conditions(), env.Warnings()...) {
		head.WriteString(l + "\n")
	}
	fmt.Fprintf(os.Stderr, "sitting: %s\n%s", dir, head.String())

	var runs []*results.Result
	var errs []error
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		c := cfg
		c.Engine = name
		c.OutDir = dir
		c.LogDir = filepath.Join(dir, "logs", name)
		these := wl
		if name == results.FloorEngine {
			these = slices.DeleteFunc(slices.Clone(wl), func(w string) bool { return w == results.WorkloadUpstream })
		}
		if len(these) == 0 {
			fmt.Fprintf(os.Stderr, "\n=== %s: no workload it serves among %s; skipped ===\n", name, strings.Join(wl, ","))
			continue
		}
		c.LoadgenArgs = lgArgs(these)
		fmt.Fprintf(os.Stderr, "\n=== capacity of %s over %s: %s ===\n", name, c.Transport, strings.Join(these, ","))
		res, path, err := bench.Run(ctx, c)
		if res != nil {
			fmt.Printf("result: %s\n", path)
			runs = append(runs, res)
			if *check {
				err = errors.Join(err, checkCapacity(res))
			}
		} else if *check && err == nil {
			err = errors.New("no result")
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if len(runs) > 0 {
		var buf strings.Builder
		buf.WriteString(head.String() + "\n")
		if err := results.CeilingTable(&buf, runs, "std"); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Print("\n" + buf.String())
			path := filepath.Join(dir, "ceilings.txt")
			if err := os.WriteFile(path, []byte(buf.String()), 0o644); err != nil {
				errs = append(errs, err)
			} else {
				fmt.Printf("\nceilings: %s\n", path)
			}
		}
		md, err := report.Generate(dir, report.Options{Title: "pushwire capacity: " + strings.Join(names, ", ") + " (" + started.Format(time.RFC3339) + ")"})
		if err != nil {
			errs = append(errs, fmt.Errorf("report: %w", err))
		} else {
			fmt.Printf("report: %s\n", md)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("capacity: %w", err)
	}
	return ctx.Err()
}

// capacityPlacement parses --cpus of pushwire capacity (empty: nil, the kernel places the
// processes); its errors name the flag.
func capacityPlacement(spec string) (*bench.Placement, error) {
	if spec == "" {
		return nil, nil
	}
	avail, err := bench.AvailableCPUs()
	if err != nil {
		return nil, fmt.Errorf("capacity: --cpus: %w", err)
	}
	p, err := bench.ParseCPUs(spec, avail)
	if err != nil {
		return nil, fmt.Errorf("capacity: %w", err)
	}
	return p, nil
}

// checkCapacityEngines checks --engine/--engines for a capacity sitting over proto.
func checkCapacityEngines(names []string, proto string) error {
	if len(names) == 0 {
		return errors.New("capacity: --engines: none given")
	}
	switch proto {
	case engines.TransportTCP, engines.TransportTLS, engines.TransportWS, engines.TransportWSS:
	default:
		return fmt.Errorf("capacity: --transport %q: want tcp, tls, ws or wss", proto)
	}
	for _, n := range names {
		if n == results.FloorEngine {
			if proto != engines.TransportTCP {
				return fmt.Errorf("capacity: the floor serves tcp only, not --transport %s: leave it out", proto)
			}
			continue
		}
		if !slices.Contains(engines.Names(), n) || !engines.Carries(n, engines.TransportTCP) {
			return fmt.Errorf("capacity: unknown engine %q (have %s, %s)", n, strings.Join(engines.Names(), ", "), results.FloorEngine)
		}
	}
	return nil
}

// checkCapacity is --check of one run: the result's own check (errors, the ramp, the ceilings
// present) and a step that held in every workload searched.
func checkCapacity(r *results.Result) error {
	var errs []error
	if err := r.Check(); err != nil {
		errs = append(errs, fmt.Errorf("result check: %w", err))
	}
	if r.Capacity == nil {
		errs = append(errs, errors.New("no capacity ceilings in the result"))
	} else {
		for _, c := range r.Capacity.Ceilings {
			if c.Rate == 0 {
				errs = append(errs, fmt.Errorf("%s: no step held (%s at %s/s)", c.Workload, c.Why, strconv.FormatFloat(c.FailedAt, 'f', -1, 64)))
			}
		}
	}
	return errors.Join(errs...)
}
