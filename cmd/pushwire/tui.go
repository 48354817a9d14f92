package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/pushwire/pushwire/tui"
)

func runTUI(args []string) error {
	fs := newFlags("tui", `Watch a running deployment live in the terminal: polls every gateway's and the load
generator's Prometheus /metrics once per --interval and shows, per instance and in total,
connections, connects/s, upstream requests/s, deliveries/s, RSS (per connection), heap,
goroutines, GC pause p99 and GC CPU share; charts over time; the load generator's progress,
errors and reconnects by reason; and an event line (appeared, down, draining, error bursts).

Give the gateways with --targets (pushwire bench prints the command line to use), or let the
control layer name them: --control is its --admin address, which lists the gateways it watches
(asked once at start). A target that stops answering is shown as down, not fatal.

Keys: q quit · tab, ←/→ (or 1-4) switch views · p pause · s save the figures as JSON to
--out/tui-<time>.json.

Example:
  pushwire tui --targets 127.0.0.1:7080,127.0.0.1:7081 --loadgen 127.0.0.1:7190`)
	targets := fs.String("targets", "", "comma-separated gateway metrics URLs: host:port, http://host:port or a full URL (default path /metrics)")
	controlAdmin := fs.String("control", "", "the control layer's --admin address: watch every gateway it lists at /v1/instances")
	lg := fs.String("loadgen", "", "the load generator's metrics URL, as for --targets (pushwire loadgen --metrics)")
	interval := fs.Duration("interval", time.Second, "polling interval")
	out := fs.String("out", "results", "directory where s saves snapshots")
	burst := fs.Float64("burst", 10, "errors per second that count as an error burst in the event line")
	logFile := fs.String("log-file", "", "write the dashboard's log here (default: no log; never the terminal)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := parse(fs, args); err != nil {
		return err
	}
	var gateways []string
	for _, t := range splitList(*targets) {
		u, err := tui.MetricsURL(t)
		if err != nil {
			return fmt.Errorf("--targets: %w", err)
		}
		gateways = append(gateways, u)
	}
	if *controlAdmin != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		found, err := tui.Discover(ctx, http.DefaultClient, *controlAdmin)
		cancel()
		if err != nil {
			return fmt.Errorf("--control: %w", err)
		}
		gateways = append(gateways, found...)
	}
	var lgURL string
	if *lg != "" {
		u, err := tui.MetricsURL(*lg)
		if err != nil {
			return fmt.Errorf("--loadgen: %w", err)
		}
		lgURL = u
	}
	if len(gateways) == 0 && lgURL == "" {
		fs.Usage()
		return errors.New("tui: --targets or --control (or --loadgen) required")
	}
	if *interval < 100*time.Millisecond {
		return fmt.Errorf("--interval %s: at least 100ms", *interval)
	}
	log, closeLog, err := fileLogger(*logFile, *logLevel)
	if err != nil {
		return err
	}
	defer closeLog()
	ctx, stop := signalContext()
	defer stop()
	return tui.Run(ctx, tui.Config{Gateways: gateways, Loadgen: lgURL, Interval: *interval, OutDir: *out, Burst: *burst, Log: log})
}

// fileLogger returns a text logger writing to path (discarding when path is empty), for
// commands that own the terminal.
func fileLogger(path, level string) (*slog.Logger, func(), error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	if path == "" {
		return slog.New(slog.DiscardHandler), func() {}, nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("--log-file: %w", err)
	}
	var w io.Writer = f
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lv})), func() { _ = f.Close() }, nil
}
