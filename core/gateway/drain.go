package gateway

import (
	"context"
	"math/rand/v2"
	"time"
)

// Drain moves the instance out of service without losing what it accepted. It reports itself
// draining (/readyz answers 503, /v1/stats and /metrics say so), refuses new connections with
// GOAWAY, sends GOAWAY (SHUTTING_DOWN, retry_ms with jitter) to every session spread evenly over
// Config.DrainWindow so the clients' reconnects through the control layer do not arrive at once,
// waits for the sessions to leave (at most two seconds past the window), and lets the forward
// pools finish the requests in flight. It returns when all that is done or ctx ends (ctx.Err());
// the caller then shuts the engine down, which closes what is left, and calls Stop.
//
// Drain may be called more than once: later calls wait for the first and return its result.
func (n *Node) Drain(ctx context.Context) error {
	n.drainOnce.Do(func() { n.drainErr = n.drain(ctx) })
	return n.drainErr
}

func (n *Node) drain(ctx context.Context) error {
	n.draining.Store(true)
	if n.clustered() {
		// Control hands out no draining instance: say so now, not at the next registration.
		if err := n.registerInstance(ctx); err != nil {
			n.log.Warn("registering as draining failed", "err", err)
		}
	}
	var all []*Client
	n.table.Range(func(c *Client) bool {
		all = append(all, c)
		return true
	})
	n.log.Info("draining", "sessions", len(all), "window", n.cfg.DrainWindow)
	start := time.Now()
	const step = 20 * time.Millisecond
	steps := max(int(n.cfg.DrainWindow/step), 1)
	per := max((len(all)+steps-1)/steps, 1)
	pace := time.NewTimer(0)
	defer pace.Stop()
	for i := 0; i < len(all); i += per {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-pace.C:
		}
		for _, c := range all[i:min(i+per, len(all))] {
			c.goaway(n.retryJitter())
		}
		pace.Reset(time.Until(start.Add(time.Duration(i/per+1) * step)))
	}
	// Clients close after GOAWAY: wait for the last to leave the table (unregister closes
	// emptied), then for the requests in flight.
	if n.table.Len() == 0 {
		n.emptyOnce.Do(func() { close(n.emptied) })
	}
	late := time.NewTimer(time.Until(start.Add(n.cfg.DrainWindow + 2*time.Second)))
	defer late.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-n.emptied:
	case <-late.C:
	}
	err := n.fwd.Close(ctx)
	n.log.Info("drained", "sessions_left", n.table.Len(), "took", time.Since(start).Round(time.Millisecond))
	return err
}

// retryJitter is the retry_ms of a drain's GOAWAY: Config.RetryMs ±50%.
func (n *Node) retryJitter() int { return n.cfg.RetryMs/2 + rand.IntN(n.cfg.RetryMs+1) }
