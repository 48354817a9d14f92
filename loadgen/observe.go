package loadgen

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/pushwire/pushwire/results"
)

// phaseObs watches one phase while it runs: its per-second series (series.go), the profiles of
// the gateways when profiling is on (profile.go), and what the saturation verdict needs: when
// the sends ended and the last delivery came (saturation.go).
type phaseObs struct {
	c      *coord
	name   string
	t0     time.Time
	expect time.Duration

	lastSend time.Time // the last operation sent, when the phase's finish knows it
	lastRecv time.Time // the last delivery, likewise

	stop   chan struct{}
	done   chan struct{} // closed when the series goroutine has returned
	series []results.Sample
	prof   *profiler
	once   sync.Once
}

// observe starts watching phase name, begun at t0 and meant to send for expect: the series
// goroutine, and the gateways' CPU profiles when profiling is on. The readings the first
// sample counts from are taken before it returns (a few milliseconds: the phase's first
// operations go out after them). end must follow; a phase
// that returns early without it has its sampling stop on its own after expect + Drain + 2
// minutes, or when ctx ends.
func (c *coord) observe(ctx context.Context, name string, t0 time.Time, expect time.Duration) *phaseObs {
	o := &phaseObs{c: c, name: name, t0: t0, expect: expect, stop: make(chan struct{}), done: make(chan struct{})}
	o.prof = c.startProfiles(ctx, name, expect)
	st := o.startSeries(ctx)
	go o.runSeries(ctx, st, expect+c.cfg.Drain+2*time.Minute)
	return o
}

// setTimes tells the observer when the phase's last operation went out and its last delivery
// came (zero: not known).
func (o *phaseObs) setTimes(lastSend, lastRecv time.Time) {
	if o != nil {
		o.lastSend, o.lastRecv = lastSend, lastRecv
	}
}

// times is when the sends ended and the last delivery came, since the phase start. Without a
// last send, the sends are taken to end when the phase meant them to (expect).
func (o *phaseObs) times() sendTimes {
	t := sendTimes{SendEnd: o.expect.Seconds()}
	if !o.lastSend.IsZero() {
		t.SendEnd = o.lastSend.Sub(o.t0).Seconds()
	}
	if !o.lastRecv.IsZero() {
		t.LastRecv = o.lastRecv.Sub(o.t0).Seconds()
	}
	return t
}

// end stops watching and writes what was observed into p: its series, its profiles, and the
// saturation verdict (after every other figure of p is set: it reads Offered, Achieved,
// Duration and the series).
func (o *phaseObs) end(ctx context.Context, p *results.Phase) {
	if o == nil {
		return
	}
	o.once.Do(func() { close(o.stop) })
	<-o.done
	p.Series = o.series
	p.Profiles = o.prof.finish(ctx)
	p.Saturation = saturation(p, o.times())
	p.Saturated = len(p.Saturation) > 0
	if p.Saturated {
		o.c.log.Warn(p.Name+": saturated", "why", strings.Join(p.Saturation, "; "))
	}
}
