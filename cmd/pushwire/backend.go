package main

import (
	"context"
	"fmt"
	"time"

	"github.com/pushwire/pushwire/backend"
)

func runBackend(args []string) error {
	fs := newFlags("backend", "Run the demo business server: POST /echo (the upstream backend: echoes the body after\n"+
		"--delay, fails --error-rate of requests; per request ?delay=50ms&fail=1 or the meta\n"+
		"delay-ms and fail), POST /notify (the connection-event sink), GET /stats, /healthz, /metrics.")
	listen := fs.String("listen", "127.0.0.1:7090", "HTTP address")
	delay := fs.Duration("delay", 0, "delay before each /echo answer (at most 1m)")
	errorRate := fs.Float64("error-rate", 0, "share of /echo requests answered 500, 0..1")
	shutdown := fs.Duration("shutdown-timeout", 10*time.Second, "how long a shutdown may take")
	logger := logFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	log, err := logger()
	if err != nil {
		return err
	}
	switch {
	case *delay < 0 || *delay > backend.MaxDelay:
		return fmt.Errorf("backend: --delay %v: must be 0..%v", *delay, backend.MaxDelay)
	case !(*errorRate >= 0 && *errorRate <= 1):
		return fmt.Errorf("backend: --error-rate %v: must be 0..1", *errorRate)
	}
	srv, err := backend.New(backend.Config{Delay: *delay, ErrorRate: *errorRate, Logger: log})
	if err != nil {
		return err
	}
	api, err := listenHTTP("listen", *listen, srv.Handler(), log)
	if err != nil {
		return err
	}
	log.Info("backend serving", "listen", api.Addr(), "delay", *delay, "error_rate", *errorRate, "version", version, "commit", commit)
	ctx, stop := signalContext()
	defer stop()
	var serveErr error
	select {
	case <-ctx.Done():
		// In-flight requests (delayed echoes included) finish within the timeout.
		sctx, cancel := context.WithTimeout(context.Background(), *shutdown)
		defer cancel()
		if err := api.Shutdown(sctx); err != nil {
			log.Warn("backend shutdown", "err", err)
		}
	case serveErr = <-api.errc: // Serve failed: nothing to shut down (errc is read once)
	}
	st := srv.Stats()
	log.Info("backend stopped", "requests", st.Requests, "errors", st.Errors,
		"connect", st.Notifications.Connect, "disconnect", st.Notifications.Disconnect, "out_of_order", st.OutOfOrder)
	return serveErr
}
