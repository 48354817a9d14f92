package tui

import (
	"context"
	"errors"
	"sync"

	tea "github.com/charmbracelet/bubbletea"
)

// ErrNoTargets is returned by Run without a gateway or load generator target.
var ErrNoTargets = errors.New("tui: no targets: give gateway /metrics URLs or a load generator URL")

// Run shows the dashboard on the terminal until the user quits (q, Ctrl-C) or ctx ends; either
// is a clean end and returns nil. It owns the poller goroutine and stops it before returning.
// Extra options go to tea.NewProgram (tests pass input and output).
func Run(ctx context.Context, cfg Config, opts ...tea.ProgramOption) error {
	if len(cfg.Gateways) == 0 && cfg.Loadgen == "" {
		return ErrNoTargets
	}
	cfg.setDefaults()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	snaps := make(chan Snapshot, 1)
	p := &Poller{Gateways: cfg.Gateways, Loadgen: cfg.Loadgen, Interval: cfg.Interval, Log: cfg.Log}
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx, snaps) })
	defer func() {
		cancel()
		wg.Wait()
		close(snaps) // releases a pending waitForSnapshot
	}()
	m := NewModel(cfg, snaps)
	// Redraws happen only on new data (once per Interval), keys and resizes; the frame rate
	// only bounds how often such a change reaches the terminal.
	all := append([]tea.ProgramOption{tea.WithAltScreen(), tea.WithFPS(10), tea.WithContext(ctx)}, opts...)
	cfg.Log.Info("dashboard starting", "gateways", len(cfg.Gateways), "loadgen", cfg.Loadgen, "interval", cfg.Interval)
	_, err := tea.NewProgram(m, all...).Run()
	switch {
	case err == nil, errors.Is(err, tea.ErrInterrupted):
		err = nil
	case errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil:
		err = nil
	}
	cfg.Log.Info("dashboard stopped", "err", err)
	return err
}
