package gateway

import (
	"context"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
)

// Draining reports whether Drain has begun.
func (n *Node) Draining() bool { return n.draining.Load() }

// Drain moves the instance out of service without losing what it accepted. It reports itself
// draining (/readyz answers 503, /v1/stats and /metrics say so), refuses new connections with
// GOAWAY, sends GOAWAY (SHUTTING_DOWN, retry_ms with jitter) to every session spread evenly over
// Config.DrainWindow so the clients' reconnects through the control layer do not arrive at once,
// waits for the sessions to leave, and lets the forward pools finish the requests in flight. It
// returns when all that is done or ctx ends (ctx.Err()); the caller then shuts the engine down,
// which closes what is left, and calls Stop.
func (n *Node) Drain(ctx context.Context) error {
	if n.draining.Swap(true) {
		return nil
	}
	var all []*session.Session
	n.table.Range(func(s *session.Session) bool {
		all = append(all, s)
		return true
	})
	n.log.Info("draining", "sessions", len(all), "window", n.cfg.DrainWindow)
	start := time.Now()
	const step = 20 * time.Millisecond
	steps := max(int(n.cfg.DrainWindow/step), 1)
	per := (len(all) + steps - 1) / steps
	for i := 0; i < len(all); i += per {
		for _, s := range all[i:min(i+per, len(all))] {
			n.goaway(s)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(start.Add(time.Duration(i/per+1) * step))):
		}
	}
	// Clients close after GOAWAY; wait for them, then for the requests in flight.
	for n.table.Len() > 0 && time.Since(start) < n.cfg.DrainWindow+2*time.Second {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	err := n.fwd.Close(ctx)
	n.log.Info("drained", "sessions_left", n.table.Len(), "took", time.Since(start).Round(time.Millisecond))
	return err
}

// goaway tells s to reconnect elsewhere after about RetryMs (±50% jitter) and moves it to
// DRAINING, where it may still PING and PUSH_ACK.
func (n *Node) goaway(s *session.Session) {
	if !s.Transition(session.StateActive, session.StateDraining) {
		return
	}
	retry := n.cfg.RetryMs/2 + rand.IntN(n.cfg.RetryMs+1)
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "reason", "shutting down")
	meta = frame.AppendMetaString(meta, "retry_ms", strconv.Itoa(retry))
	n.m.goaways.Inc()
	_ = n.send(s, frame.Header{Type: frame.TypeGoaway, Code: frame.CodeShuttingDown}, meta, nil)
}
