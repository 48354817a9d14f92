package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pushwire/pushwire/control"
)

func runControl(args []string) error {
	fs := newFlags("control", "Run the control layer: POST /v1/connect hands out tokens and access points;\nGET /healthz and /metrics.\n\n"+
		"The access points come from the instance registry with --route redis (or route.store: redis in the\n"+
		"config file): the live, non-draining gateways serving the client's transports, least loaded first.\n"+
		"Otherwise they are the static list of --endpoint or the config file's endpoints.\n"+
		"Connects faster than the config file's limits (per device, per source address) are answered 429.")
	cfgPath := fs.String("config", "", "deployment config file with apps, token keys, endpoints, route and limits (required)")
	listen := fs.String("listen", "127.0.0.1:7100", "HTTP address of the control API")
	routeStore := fs.String("route", "", "where the gateways are found: memory (the static endpoints; the default) or redis (the instance registry the gateways register in); overrides route.store")
	redisAddrs := fs.String("redis", "", "Redis addresses, comma-separated host:port (one: a single server; several: a cluster); overrides route.redis.addrs")
	refresh := fs.Duration("registry-refresh", control.DefaultRegistryRefresh, "with --route redis: how often the instance registry is read")
	endpoints := fs.String("endpoint", "", "static access points given to clients, replacing the config file's (not with --route redis): comma-separated protocol://host:port (e.g. tcp://127.0.0.1:7000)")
	health := fs.String("endpoint-health", "", "each --endpoint's gateway HTTP base URL, comma-separated in the same order (e.g. http://127.0.0.1:7080): control polls each one's /v1/stats, leaves draining or silent gateways out of connect answers and lists the least loaded first")
	watch := fs.Duration("watch-interval", time.Second, "how often the gateways' /v1/stats are polled")
	corsOrigins := fs.String("cors-origins", "", "origins of the web pages that may call /v1/connect from a browser, comma-separated (\"*\" for any, or http(s)://host[:port]); replaces the config file's cors_origins")
	admin := fs.String("admin", "", "address of /debug/pprof, /metrics and /v1/instances (the watched or registered gateways, for pushwire tui --control) (empty: off)")
	shutdown := fs.Duration("shutdown-timeout", 10*time.Second, "how long a shutdown may take")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	cfg, err := loadConfig("control", *cfgPath)
	if err != nil {
		return err
	}
	if *routeStore != "" {
		cfg.Route.Store = *routeStore
	}
	if *redisAddrs != "" {
		cfg.Route.Redis.Addrs = splitList(*redisAddrs)
	}
	if err := cfg.Route.Validate(); err != nil {
		return fmt.Errorf("control: route (--route, --redis or the config file): %w", err)
	}
	if *refresh <= 0 {
		return fmt.Errorf("control: --registry-refresh %v: want a positive duration", *refresh)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := []control.Option{control.WithLogger(log), control.WithMetrics(reg)}
	ctx, stop := signalContext()
	defer stop()
	if cfg.Route.Store == control.RouteRedis {
		if *endpoints != "" {
			return fmt.Errorf("control: --endpoint with --route redis: the instance registry gives the access points; drop --endpoint, or use --route memory for a static list")
		}
		st, err := openRouteStore(ctx, cfg.Route, log)
		if err != nil {
			return fmt.Errorf("control: route store: %w", err)
		}
		defer func() { _ = st.Close() }()
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = st.Ping(pctx)
		cancel()
		if err != nil {
			return fmt.Errorf("control: route store redis (%s) does not answer: %w", strings.Join(cfg.Route.Redis.Addrs, ","), err)
		}
		opts = append(opts, control.WithRegistry(st, *refresh))
	}
	if *endpoints != "" {
		eps, err := parseEndpoints(*endpoints, *health)
		if err != nil {
			return err
		}
		opts = append(opts, control.WithEndpoints(eps))
	}
	if *corsOrigins != "" {
		origins := splitList(*corsOrigins)
		if err := control.CheckCORSOrigins("--cors-origins", origins); err != nil {
			return fmt.Errorf("control: %w", err)
		}
		opts = append(opts, control.WithCORSOrigins(origins))
	}
	srv, err := control.NewServer(cfg, opts...)
	if err != nil {
		return err
	}
	if cfg.Route.Store == control.RouteRedis {
		// One reading before serving, so the first connects find the gateways already registered.
		if err := srv.Refresh(ctx); err == nil {
			log.Info("instance registry read", "instances", len(srv.Instances()))
		}
	}
	api, err := listenHTTP("listen", *listen, srv.Handler(), log)
	if err != nil {
		return err
	}
	var adm *httpServer
	if *admin != "" {
		mux := http.NewServeMux()
		mux.Handle("/", adminHandler(reg))
		mux.Handle("/v1/instances", srv.InstancesHandler())
		if adm, err = listenHTTP("admin", *admin, mux, log); err != nil {
			_ = api.Shutdown(context.Background())
			return err
		}
	}
	log.Info("control serving", "listen", api.Addr(), "apps", len(cfg.Apps), "route", cfg.Route.Store,
		"limit_per_device", limitText(cfg.Limits.ConnectPerDevice), "limit_per_source", limitText(cfg.Limits.ConnectPerSource),
		"version", version, "commit", commit)
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		if cfg.Route.Store == control.RouteRedis {
			srv.Run(ctx)
		} else {
			srv.Watch(ctx, *watch)
		}
	}()
	defer func() { stop(); <-watchDone }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-api.errc:
	}
	sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
	defer cancel()
	_ = api.Shutdown(sctx)
	if adm != nil {
		_ = adm.Shutdown(sctx)
	}
	log.Info("control stopped")
	return serveErr
}

// limitText is a connect limit as the log shows it.
func limitText(l control.RateLimit) string {
	if l.Off() {
		return "off"
	}
	return fmt.Sprintf("%s burst %d", l.Rate, l.Burst)
}

// parseEndpoints parses "tcp://127.0.0.1:7000,ws://…" for --endpoint, with the health URLs of
// --endpoint-health (none, or one per endpoint).
func parseEndpoints(s, health string) ([]control.Endpoint, error) {
	var eps []control.Endpoint
	for _, item := range splitList(s) {
		proto, addr, ok := strings.Cut(item, "://")
		if !ok || proto == "" || addr == "" {
			return nil, fmt.Errorf("--endpoint %q: want protocol://host:port", item)
		}
		eps = append(eps, control.Endpoint{Protocol: proto, Addr: addr})
	}
	if health != "" {
		urls := splitList(health)
		if len(urls) != len(eps) {
			return nil, fmt.Errorf("--endpoint-health: %d URLs for %d endpoints: give one per --endpoint, in order", len(urls), len(eps))
		}
		for i, u := range urls {
			eps[i].Health = u
		}
	}
	return eps, nil
}
