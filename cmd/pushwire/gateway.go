package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/pushwire/pushwire/control"
	"github.com/pushwire/pushwire/control/token"
	"github.com/pushwire/pushwire/core/gateway"
	"github.com/pushwire/pushwire/engines"
	_ "github.com/pushwire/pushwire/engines/all"
	"github.com/pushwire/pushwire/engines/tlslayer"
)

func runGateway(args []string) error {
	fs := newFlags("gateway", "Run a gateway instance: accepts client connections on one listener per transport (--listen tcp,\n--tls-listen, --ws-listen, --wss-listen on the chosen I/O engine; --quic-listen on the quic engine), and serves the push API, /v1/stats, /healthz, /readyz and /metrics on --http\n(and /v1/stats?gc=1, /metrics, /debug/pprof on --admin).")
	cfgPath := fs.String("config", "", "deployment config file with apps and token keys (required)")
	engine := fs.String("engine", "std", "I/O engine: "+strings.Join(engines.Names(), ", "))
	tf := addGatewayTransportFlags(fs)
	httpAddr := fs.String("http", "127.0.0.1:7080", "address of the push API, stats, health and metrics")
	admin := fs.String("admin", "127.0.0.1:6060", "address of /debug/pprof, /metrics and /v1/stats with ?gc=1 (empty: off)")
	nodeID := fs.String("node", "", "instance ID (default hostname-pid)")
	hb := fs.Duration("heartbeat", 0, "heartbeat interval told to clients (default: the config file's heartbeat)")
	idle := fs.Duration("idle-timeout", 0, "close a logged-in connection silent this long (default 3 × heartbeat)")
	login := fs.Duration("login-timeout", 10*time.Second, "close a connection not logged in within this")
	maxBody := fs.Int("max-body", 64<<10, "largest frame body in bytes")
	perUser := fs.Int("max-conns-per-user", 8, "close a user's oldest connection past this many (-1: no limit)")
	maxGroups := fs.Int("max-groups-per-conn", 256, "groups one connection may JOIN; past it JOIN is answered FORBIDDEN (-1: no limit)")
	writeQueue := fs.Int("write-queue", engines.DefaultMaxWriteQueue, "bytes queued per connection before it is closed as a slow consumer")
	writeTimeout := fs.Duration("write-timeout", 10*time.Second, "how long a peer may take to accept queued bytes")
	workers := fs.Int("workers", 0, "engine writer/event-loop goroutines (0: the engine's default)")
	engineOpts := engineOptFlag{}
	fs.Var(engineOpts, "engine-opt", "an engine option, key=value (repeatable; overrides the config file's engine_options; see --help-engine)")
	helpEngine := fs.Bool("help-engine", false, "print the options of --engine (key, type, default, help) and exit")
	maxConns := fs.Int("max-conns", derivedMaxConns(), fmt.Sprintf("connections open at once, per listener; past it a new one gets GOAWAY OVERLOADED and is closed before login; 0 or negative: no cap. Default: the open-files limit (soft) less %d", fdReserve))
	tick := fs.Duration("wheel-tick", time.Second, "timing wheel granularity for login and idle timeouts")
	rateLimit := fs.Float64("rate-limit", 50, "REQUEST/JOIN/LEAVE frames per second per connection before RATE_LIMITED (-1: no limit)")
	rateBurst := fs.Int("rate-burst", 100, "frames a connection may send at once above --rate-limit")
	ackTTL := fs.Duration("ack-ttl", time.Minute, "how long an at-least-once push waits for PUSH_ACK when it names no ttl_ms")
	drainWindow := fs.Duration("drain-window", 10*time.Second, "on SIGTERM, spread GOAWAYs over this long before closing")
	retryMs := fs.Int("goaway-retry-ms", 1000, "retry_ms told to clients in GOAWAY (±50% jitter)")
	shutdown := fs.Duration("shutdown-timeout", 30*time.Second, "how long a shutdown may take after the drain window")
	routeFlags := addGatewayRouteFlags(fs)
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *helpEngine {
		return printEngineOptions(*engine)
	}
	log, err := logger()
	if err != nil {
		return err
	}
	specs, err := tf.plan(*engine)
	if err != nil {
		return err
	}
	var quicOpts map[string]string
	if qe := transportEngine(engines.TransportQUIC); qe != "" && len(tf.quicOpts) > 0 {
		if quicOpts, err = engineOptions(qe, nil, tf.quicOpts); err != nil {
			return fmt.Errorf("gateway: --quic-opt: %w", err)
		}
	}
	wsCfg, err := tf.wsConfig(gatewayMaxFrame(*maxBody), log)
	if err != nil {
		return err
	}
	var certs *tlslayer.Certs
	if *tf.cert != "" {
		if certs, err = tlslayer.LoadCerts(*tf.cert, *tf.key); err != nil {
			return fmt.Errorf("gateway: --tls-cert / --tls-key: %w", err)
		}
	}
	// SIGHUP is caught from here on: it must never end the process (its default action) once
	// anything can see the instance up.
	stopReload := reloadOnSIGHUP(certs, log)
	defer stopReload()
	cfg, err := loadConfig("gateway", *cfgPath)
	if err != nil {
		return err
	}
	engOpts, err := engineOptions(*engine, cfg.EngineOptions, engineOpts)
	if err != nil {
		return err
	}
	checkMaxConns(log, *maxConns)
	verifier, err := cfg.Verifier()
	if err != nil {
		return fmt.Errorf("gateway: --config: %w", err)
	}
	heartbeat := cfg.Heartbeat
	if *hb > 0 {
		heartbeat = *hb
	}
	rt, err := routeFlags.resolve(cfg.Route, specs, *httpAddr)
	if err != nil {
		return err
	}
	store, err := rt.open(context.Background(), log)
	if err != nil {
		return err
	}
	defer func() {
		if err := store.Close(); err != nil {
			log.Warn("closing the route store", "err", err)
		}
	}()
	linger := *routeFlags.linger
	if linger <= 0 {
		linger = *ackTTL
	}
	node, err := gateway.New(gateway.Config{
		Node:             *nodeID,
		Engine:           nodeEngine(specs),
		Transport:        strings.Join(transportsOf(specs), ","),
		Region:           *tf.region,
		Group:            *tf.group,
		Heartbeat:        heartbeat,
		IdleTimeout:      *idle,
		LoginTimeout:     *login,
		MaxBody:          *maxBody,
		MaxConnsPerUser:  *perUser,
		MaxGroupsPerConn: *maxGroups,
		WheelTick:        *tick,
		Businesses:       cfg.Businesses,
		RateLimit:        *rateLimit,
		RateBurst:        *rateBurst,
		AckTTL:           *ackTTL,
		DrainWindow:      *drainWindow,
		RetryMs:          *retryMs,
		Route:            store,
		Mode:             rt.cfg.Mode,
		InstanceTTL:      rt.cfg.InstanceTTL,
		Endpoints:        rt.endpoints,
		HTTPURL:          rt.httpURL,
		RemoteTimeout:    *routeFlags.remoteTimeout,
		Linger:           linger,
		Logger:           log,
	}, tokenVerifier{verifier}, pushKeys{cfg})
	if err != nil {
		return err
	}
	params := listenerParams{
		base: engines.Config{
			MaxWriteQueue: *writeQueue,
			WriteTimeout:  *writeTimeout,
			Workers:       *workers,
			MaxConns:      *maxConns,
			Options:       engOpts,
		},
		maxFrame: gatewayMaxFrame(*maxBody),
		retryMs:  *retryMs,
		certs:    certs,
		ws:       wsCfg,
		quicOpts: quicOpts,
		log:      log,
	}
	var listeners []*listener
	var engs []engines.Engine
	for _, spec := range specs {
		l, err := newListener(spec, params, node)
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		engs = append(engs, l.eng)
	}
	if err := registerRefused(node.Registry(), engs...); err != nil {
		return fmt.Errorf("gateway: metrics: %w", err)
	}
	if err := node.Start(context.Background()); err != nil {
		return err
	}
	stopNode := func(ctx context.Context) {
		if err := node.Stop(ctx); err != nil {
			log.Warn("stopping the node", "err", err)
		}
	}
	if err := startListeners(listeners); err != nil {
		stopNode(context.Background())
		return err
	}
	// A start-up failure past this point stops the node too, which takes the instance out of the
	// registry at once rather than when its TTL lapses.
	api, err := listenHTTP("http", *httpAddr, node.Handler(), log)
	if err != nil {
		_ = shutdownListeners(context.Background(), listeners, log)
		stopNode(context.Background())
		return err
	}
	var adm *httpServer
	if *admin != "" {
		if adm, err = listenHTTP("admin", *admin, gatewayAdminHandler(node), log); err != nil {
			_ = shutdownListeners(context.Background(), listeners, log)
			_ = api.Shutdown(context.Background())
			stopNode(context.Background())
			return err
		}
	}
	c := node.Config()
	for _, l := range listeners {
		log.Info("listening", "transport", l.transport, "addr", l.eng.Addr().String(), "engine", l.engine, "flag", l.flag())
	}
	advertised := make([]string, len(rt.endpoints))
	for i, ep := range rt.endpoints {
		advertised[i] = ep.Protocol + "://" + ep.Addr
	}
	log.Info("gateway serving", "engine", *engine, "transports", c.Transport, "http", api.Addr(), "node", c.Node,
		"heartbeat", c.Heartbeat, "idle_timeout", c.IdleTimeout, "login_timeout", c.LoginTimeout,
		"route", rt.cfg.Store, "mode", c.Mode, "advertise", strings.Join(advertised, ","), "region", c.Region, "group", c.Group,
		"version", version, "commit", commit)
	ctx, stop := signalContext()
	defer stop()
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down: draining", "conns", node.Stats(false).Conns, "window", *drainWindow)
		// A second signal skips the rest of the drain.
		dctx, cancelDrain := signalContext()
		dctx, cancelTimeout := context.WithTimeout(dctx, *drainWindow+*shutdown)
		if err := node.Drain(dctx); err != nil {
			log.Warn("drain cut short", "err", err)
		}
		cancelTimeout()
		cancelDrain()
	case serveErr = <-api.errc:
		log.Error("push API stopped", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
	defer cancel()
	defer stopNode(sctx)
	_ = shutdownListeners(sctx, listeners, log)
	_ = api.Shutdown(sctx)
	if adm != nil {
		_ = adm.Shutdown(sctx)
	}
	log.Info("gateway stopped")
	return serveErr
}

// gatewayMaxFrame is the largest frame the gateway accepts with the given max body.
func gatewayMaxFrame(maxBody int) int { return 18 + 4096 + maxBody }

// tokenVerifier adapts the control layer's token verifier to the gateway.
type tokenVerifier struct{ v *token.Verifier }

func (t tokenVerifier) Verify(tok string, now time.Time) (gateway.Identity, error) {
	c, err := t.v.Verify(tok, now)
	if err != nil {
		return gateway.Identity{}, err
	}
	return gateway.Identity{App: c.App, Device: c.Device, User: c.User}, nil
}

// gatewayAdminHandler serves the admin listener: /debug/pprof, /metrics, and the node's
// operator-only /v1/stats (which may force a garbage collection, ?gc=1).
func gatewayAdminHandler(node *gateway.Node) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", adminHandler(node.Registry()))
	mux.Handle("/v1/stats", node.AdminHandler())
	return mux
}

// pushKeys adapts the app registry to the gateway's push API authentication.
type pushKeys struct{ cfg *control.Config }

func (p pushKeys) AppByPushKey(key string) (string, bool) {
	app, ok := p.cfg.AppByPushKey(key)
	if !ok || app.Disabled {
		return "", false
	}
	return app.ID, true
}
