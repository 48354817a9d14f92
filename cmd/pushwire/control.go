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
	fs := newFlags("control", "Run the control layer: POST /v1/connect hands out tokens and access points;\nGET /healthz and /metrics.")
	cfgPath := fs.String("config", "", "deployment config file with apps, token keys and endpoints (required)")
	listen := fs.String("listen", "127.0.0.1:7100", "HTTP address of the control API")
	endpoints := fs.String("endpoint", "", "access points given to clients, replacing the config file's: comma-separated protocol://host:port (e.g. tcp://127.0.0.1:7000)")
	health := fs.String("endpoint-health", "", "each --endpoint's gateway HTTP base URL, comma-separated in the same order (e.g. http://127.0.0.1:7080): control polls each one's /v1/stats, leaves draining or silent gateways out of connect answers and lists the least loaded first")
	watch := fs.Duration("watch-interval", time.Second, "how often the gateways' /v1/stats are polled")
	admin := fs.String("admin", "", "address of /debug/pprof, /metrics and /v1/instances (the watched gateways, for pushwire tui --control) (empty: off)")
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	opts := []control.Option{control.WithLogger(log), control.WithMetrics(reg)}
	if *endpoints != "" {
		eps, err := parseEndpoints(*endpoints, *health)
		if err != nil {
			return err
		}
		opts = append(opts, control.WithEndpoints(eps))
	}
	srv, err := control.NewServer(cfg, opts...)
	if err != nil {
		return err
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
	log.Info("control serving", "listen", api.Addr(), "apps", len(cfg.Apps), "version", version, "commit", commit)
	ctx, stop := signalContext()
	defer stop()
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		srv.Watch(ctx, *watch)
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
