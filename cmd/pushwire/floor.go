package main

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/pushwire/pushwire/floor"
)

func runFloor(args []string) error {
	fs := newFlags("floor", `Run the floor: a minimal pushwire server with no engine library (raw epoll and write(2)), the
yardstick every engine is measured against in the same sitting. It speaks just enough of the
protocol for the workbench's phases over tcp: LOGIN is answered LOGIN_ACK without verifying the
token (the device and app come from the LOGIN), PING PONG, JOIN and LEAVE their RESPONSE, REQUEST
a RESPONSE UNKNOWN_BIZ (it forwards to no business). It serves the gateway's push API (devices,
group, broadcast; no users, no ack), PUT/DELETE /v1/groups/{group}/members, /v1/stats and
/healthz on --http, and /v1/stats?gc=1 and /debug/pprof on --admin. No timeouts, no rate limits,
no cluster. SIGTERM closes the listener and every connection.`)
	cfgPath := fs.String("config", "", "deployment config file: its apps (push_key) and heartbeat (required)")
	listen := fs.String("listen", "127.0.0.1:7000", "address clients connect to (tcp)")
	httpAddr := fs.String("http", "127.0.0.1:7080", "address of the push API, stats and health")
	admin := fs.String("admin", "127.0.0.1:6060", "address of /debug/pprof and /v1/stats with ?gc=1 (empty: off)")
	nodeID := fs.String("node", "floor", "instance ID told to clients and served in /v1/stats")
	hb := fs.Duration("heartbeat", 0, "heartbeat interval told to clients (default: the config file's heartbeat)")
	maxBody := fs.Int("max-body", 64<<10, "largest frame body in bytes")
	writeQueue := fs.Int("write-queue", floor.DefaultWriteQueue, "bytes pending per connection before it is closed as a slow consumer")
	loops := fs.Int("loops", 0, "event loops, each with its own epoll (0: one per CPU)")
	maxGroups := fs.Int("max-groups-per-conn", floor.DefaultMaxGroupsPerConn, "groups one connection may JOIN (-1: no limit)")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	switch {
	case *hb < 0:
		return fmt.Errorf("floor: --heartbeat %v: must not be negative", *hb)
	case *maxBody <= 0:
		return fmt.Errorf("floor: --max-body %d: must be positive", *maxBody)
	case *writeQueue <= 0:
		return fmt.Errorf("floor: --write-queue %d: must be positive", *writeQueue)
	case *loops < 0:
		return fmt.Errorf("floor: --loops %d: must be 0 (one per CPU) or more", *loops)
	case *maxGroups == 0:
		return fmt.Errorf("floor: --max-groups-per-conn 0: want a positive number, or -1 for no limit")
	}
	cfg, err := loadConfig("floor", *cfgPath)
	if err != nil {
		return err
	}
	var apps []floor.App
	for _, a := range cfg.Apps {
		if a.PushKey != "" && !a.Disabled {
			apps = append(apps, floor.App{ID: a.ID, PushKey: a.PushKey})
		}
	}
	if len(apps) == 0 {
		return fmt.Errorf("floor: --config %s: no enabled app has a push_key", *cfgPath)
	}
	heartbeat := cfg.Heartbeat
	if *hb > 0 {
		heartbeat = *hb
	}
	srv, err := floor.New(floor.Config{
		Node:             *nodeID,
		Listen:           *listen,
		Apps:             apps,
		Heartbeat:        heartbeat,
		MaxBody:          *maxBody,
		WriteQueue:       *writeQueue,
		Loops:            *loops,
		MaxGroupsPerConn: *maxGroups,
		Logger:           log,
	})
	if err != nil {
		return fmt.Errorf("%w (check the flags)", err)
	}
	if err := srv.Start(); err != nil {
		return fmt.Errorf("floor: --listen: %w", err)
	}
	api, err := listenHTTP("http", *httpAddr, srv.Handler(), log)
	if err != nil {
		_ = srv.Close()
		return err
	}
	var adm *httpServer
	if *admin != "" {
		mux := http.NewServeMux()
		mux.Handle("/", adminHandler(nil))
		mux.Handle("/v1/stats", srv.AdminHandler())
		if adm, err = listenHTTP("admin", *admin, mux, log); err != nil {
			_ = api.Shutdown(context.Background())
			_ = srv.Close()
			return err
		}
	}
	c := srv.Config()
	log.Info("floor serving", "listen", srv.Addr().String(), "http", api.Addr(), "node", c.Node, "loops", c.Loops,
		"heartbeat", c.Heartbeat, "apps", len(apps), "version", version, "commit", commit)
	ctx, stop := signalContext()
	defer stop()
	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down", "conns", srv.Stats(false).Conns)
	case serveErr = <-api.errc:
		log.Error("push API stopped", "err", serveErr)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = api.Shutdown(sctx)
	if adm != nil {
		_ = adm.Shutdown(sctx)
	}
	if err := srv.Close(); err != nil {
		log.Warn("closing the floor", "err", err)
	}
	log.Info("floor stopped")
	return serveErr
}
