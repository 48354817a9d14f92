package main

import (
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/pushwire/pushwire/internal/transport"
	"github.com/pushwire/pushwire/loadgen"
	"github.com/pushwire/pushwire/results"
)

func runLoadgen(args []string) error {
	if len(args) > 0 && args[0] == "worker" {
		// A worker process of a run (hidden: the coordinator starts it): its spec on stdin, its
		// API address on stdout, its log on stderr.
		ctx, stop := signalContext()
		defer stop()
		return loadgen.ServeWorker(ctx, os.Stdin, os.Stdout, os.Stderr)
	}
	fs := newFlags("loadgen", "Load a running deployment: connect --conns devices through the control layer at --rate,\nhold them for --idle, then push --push-rate unicast messages per second through the push API\nfor --push-duration, measuring end-to-end latency. Writes a result file.\n\nThe devices are held by --workers processes of this binary (at most 15,000 connections each),\ncoordinated by this one, which calls the push API and merges the workers' HDR histograms.")
	controlURL := fs.String("control", "", "control layer base URL, e.g. http://127.0.0.1:7100 (required)")
	gateways := fs.String("gateways", "", "comma-separated gateway HTTP base URLs (push API and stats) (required)")
	gatewayAdmin := fs.String("gateway-admin", "", "comma-separated gateway admin base URLs, in the order of --gateways: memory is read there after a forced GC (/v1/stats?gc=1); empty: without one")
	app := fs.String("app", "", "app ID (required)")
	secret := fs.String("secret", "", "app secret (required)")
	pushKey := fs.String("push-key", "", "app push key (required)")
	conns := fs.Int("conns", 10_000, "connections to open")
	rate := fs.Float64("rate", 2000, "new connections per second")
	idle := fs.Duration("idle", 10*time.Second, "how long to hold the connections idle")
	pushRate := fs.Float64("push-rate", 2000, "unicast pushes per second")
	pushDur := fs.Duration("push-duration", 10*time.Second, "how long to push")
	senders := fs.Int("push-senders", 64, "concurrent push API callers")
	sources := fs.String("sources", "", "comma-separated local IPs to dial from (127.0.0.x), round robin")
	engine := fs.String("engine", "", "engine label for the result")
	instances := fs.Int("instances", 1, "gateway instances, recorded in the result")
	commitFlag := fs.String("commit", "", "commit recorded in the result (default: this binary's)")
	resultFile := fs.String("result-file", "", "write the result here instead of --out/<id>.json")
	outDir := fs.String("out", "results", "directory for the result file")
	phases := fs.String("phases", strings.Join(loadgen.DefaultPhases, ","), "phases to run, in order (ramp always runs first)")
	reqRate := fs.Float64("request-rate", 2000, "upstream phase: REQUESTs per second")
	reqDur := fs.Duration("request-duration", 10*time.Second, "upstream phase: how long to send requests")
	groupSize := fs.Int("group-size", 1000, "group phase: members of each group")
	groupRate := fs.Float64("group-rate", 10, "group phase: group pushes per second")
	groupDur := fs.Duration("group-duration", 10*time.Second, "group phase: how long to push")
	fanoutPushes := fs.Int("fanout-pushes", 5, "group-all and broadcast phases: messages to send, one a second")
	workers := fs.Int("workers", 0, "worker processes holding the connections (0: one per 15,000 connections)")
	route := fs.String("route", "memory", "the gateways' route store, recorded in the result: memory or redis")
	mode := fs.String("mode", "registry", "the gateways' delivery mode, recorded in the result: registry or broadcast")
	redisAddr := fs.String("redis", "", "the route store's Redis (host:port): INFO is read for the commands per push, memory and version (empty: none)")
	transportName := fs.String("transport", "tcp", "the clients' transport: "+strings.Join(transport.Protocols, ", ")+" (ws and wss clients say platform web, the others native)")
	caFile := fs.String("ca", "", "PEM file of the roots that verify the gateways' certificates under tls, wss and quic (empty: the system roots)")
	wsOrigin := fs.String("ws-origin", "", "Origin header of the clients' WebSocket upgrades (ws, wss; empty: none)")
	wsPath := fs.String("ws-path", "/ws", "request path of the clients' WebSocket upgrades (ws, wss)")
	profileDir := fs.String("profile-dir", "", "save a CPU profile covering each phase and a heap profile at its end of every gateway here (<phase>-<node>-cpu.pprof, -heap.pprof; needs --gateway-admin; empty: none)")
	capacity := fs.String("capacity", "", "a capacity search instead of the phases: after the ramp, search these workloads' ceilings in turn\n("+strings.Join(results.Workloads, ",")+"; empty: a plain run)")
	p99Limit := fs.Duration("p99-limit", 50*time.Millisecond, "capacity search: a step holds with its p99 latency at most this (every workload but broadcast)")
	bcastLimit := fs.Duration("broadcast-p99-limit", 500*time.Millisecond, "capacity search: the broadcast workload's p99 limit (one message to every connection: the last\nof 10,000 gets it 100–150 ms after the first at the raw write floor)")
	stepDur := fs.Duration("step-duration", 5*time.Second, "capacity search: how long each step sends")
	refine := fs.Int("refine", 2, "capacity search: bisections between the last rate that held and the first that failed (0: none)")
	batchSize := fs.Int("batch-size", 10, "capacity search: devices per push API call of the batch workload")
	startRates := fs.String("start-rates", "", "capacity search: first rates, workload=rate,… (default connect=500,upstream=500,push=500,batch=100,group=10,broadcast=1)")
	maxRates := fs.String("max-rates", "", "capacity search: highest rates tried, workload=rate,… (defaults far above what the machine sustains)")
	metricsAddr := fs.String("metrics", "", "serve Prometheus /metrics (target, connected, errors, reconnects, push latency) on this address, e.g. 127.0.0.1:7190 (empty: off)")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	if err := checkRoute("loadgen", *route, *mode); err != nil {
		return err
	}
	if err := checkTransportFlags("loadgen", *transportName, *caFile, *wsPath); err != nil {
		return err
	}
	if *workers < 0 {
		return fmt.Errorf("loadgen: --workers %d: must be 0 (automatic) or more", *workers)
	}
	capCfg, err := capacityFlags(*capacity, *p99Limit, *bcastLimit, *stepDur, *refine, *batchSize, *startRates, *maxRates)
	if err != nil {
		return err
	}
	if *controlURL == "" || *gateways == "" || *app == "" || *secret == "" || *pushKey == "" {
		return errors.New("loadgen: --control, --gateways, --app, --secret and --push-key are required")
	}
	cm := *commitFlag
	if cm == "" {
		cm = commit
	}
	ctx, stop := signalContext()
	defer stop()
	gsize := *groupSize
	if len(capCfg.Capacity) > 0 && !flagSet(fs, "group-size") {
		gsize = 0 // the search's own default
	}
	res, runErr := loadgen.Run(ctx, loadgen.Config{
		Capacity:          capCfg.Capacity,
		P99Limit:          capCfg.P99Limit,
		BroadcastP99Limit: capCfg.BroadcastP99Limit,
		StepDuration:      capCfg.StepDuration,
		Refine:            capCfg.Refine,
		BatchSize:         capCfg.BatchSize,
		StartRates:        capCfg.StartRates,
		MaxRates:          capCfg.MaxRates,
		Phases:            splitList(*phases),
		RequestRate:       *reqRate,
		RequestDuration:   *reqDur,
		GroupSize:         gsize,
		GroupRate:         *groupRate,
		GroupDuration:     *groupDur,
		FanoutPushes:      *fanoutPushes,
		ControlURL:        *controlURL,
		GatewayHTTP:       splitList(*gateways),
		GatewayAdmin:      splitList(*gatewayAdmin),
		App:               *app,
		Secret:            *secret,
		PushKey:           *pushKey,
		Conns:             *conns,
		ConnectRate:       *rate,
		Idle:              *idle,
		PushRate:          *pushRate,
		PushDuration:      *pushDur,
		PushSenders:       *senders,
		Sources:           splitList(*sources),
		Engine:            *engine,
		Commit:            cm,
		ResultConfig:      map[string]any{"instances": *instances},
		Logger:            log,
		MetricsAddr:       *metricsAddr,
		ProfileDir:        *profileDir,
		Workers:           *workers,
		LogLevel:          fs.Lookup("log-level").Value.String(),
		Route:             *route,
		Mode:              *mode,
		RedisAddr:         *redisAddr,
		Transport:         *transportName,
		CAFile:            *caFile,
		WSOrigin:          *wsOrigin,
		WSPath:            *wsPath,
	})
	if res == nil {
		return runErr
	}
	var path string
	if *resultFile != "" {
		path = *resultFile
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return errors.Join(runErr, err)
		}
		tmpDir, err := os.MkdirTemp(filepath.Dir(path), ".result-")
		if err != nil {
			return errors.Join(runErr, err)
		}
		p, err := results.Write(tmpDir, res)
		if err == nil {
			err = os.Rename(p, path)
		}
		_ = os.RemoveAll(tmpDir)
		if err != nil {
			return errors.Join(runErr, err)
		}
	} else if path, err = results.Write(*outDir, res); err != nil {
		return errors.Join(runErr, err)
	}
	log.Info("result written", "path", path)
	if runErr != nil {
		return fmt.Errorf("loadgen: %w", runErr)
	}
	return nil
}

// checkTransportFlags validates --transport, --ca and --ws-path for cmd.
func checkTransportFlags(cmd, proto, caFile, wsPath string) error {
	if !transport.Known(proto) {
		return fmt.Errorf("%s: --transport %q: want one of %s", cmd, proto, strings.Join(transport.Protocols, ", "))
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("%s: --ca: %w", cmd, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: --ca %s: no PEM certificate in it", cmd, caFile)
		}
	}
	if !strings.HasPrefix(wsPath, "/") {
		return fmt.Errorf("%s: --ws-path %q: must start with /", cmd, wsPath)
	}
	return nil
}

// checkRoute validates --route and --mode for cmd.
func checkRoute(cmd, route, mode string) error {
	switch route {
	case "memory", "redis":
	default:
		return fmt.Errorf("%s: --route %q: want memory or redis", cmd, route)
	}
	switch mode {
	case "registry", "broadcast":
	default:
		return fmt.Errorf("%s: --mode %q: want registry or broadcast", cmd, mode)
	}
	return nil
}

// capacityFlags checks the capacity search's flags of loadgen and returns them as the part of a
// loadgen.Config they set (Capacity empty: a plain run).
func capacityFlags(workloads string, p99, bcast, step time.Duration, refine, batch int, start, top string) (loadgen.Config, error) {
	var c loadgen.Config
	c.Capacity = splitList(workloads)
	if len(c.Capacity) == 0 {
		return c, nil
	}
	for _, w := range c.Capacity {
		if !slices.Contains(results.Workloads, w) {
			return c, fmt.Errorf("loadgen: --capacity: %q is not a workload (have %s)", w, strings.Join(results.Workloads, ", "))
		}
	}
	switch {
	case p99 <= 0:
		return c, fmt.Errorf("loadgen: --p99-limit %s: must be positive", p99)
	case bcast <= 0:
		return c, fmt.Errorf("loadgen: --broadcast-p99-limit %s: must be positive", bcast)
	case step <= 0:
		return c, fmt.Errorf("loadgen: --step-duration %s: must be positive", step)
	case refine < 0:
		return c, fmt.Errorf("loadgen: --refine %d: must be 0 or more", refine)
	case batch <= 0:
		return c, fmt.Errorf("loadgen: --batch-size %d: must be positive", batch)
	}
	c.P99Limit, c.BroadcastP99Limit, c.StepDuration, c.BatchSize = p99, bcast, step, batch
	c.Refine = refine
	if refine == 0 {
		c.Refine = -1 // none (the Config's zero is its default)
	}
	var err error
	if c.StartRates, err = loadgen.ParseRates("loadgen: --start-rates", start); err != nil {
		return c, err
	}
	if c.MaxRates, err = loadgen.ParseRates("loadgen: --max-rates", top); err != nil {
		return c, err
	}
	return c, nil
}

// flagSet reports whether flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
