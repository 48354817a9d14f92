package loadgen

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pushwire/pushwire/results"
)

// A capacity search (Config.Capacity) finds, per workload, the highest offered rate the
// deployment sustains: after the ramp, each workload runs in steps, each step a phase
// "<workload>@<rate>" sending at that rate for StepDuration. A step holds when it was not
// saturated (the offered rate reached, latency not growing, deliveries not trailing), nothing
// was missing or failed, no connection dropped, and its p99 stayed within the workload's limit
// (results.StepFailures; P99Limit, the broadcast's BroadcastP99Limit). The search starts at the workload's start rate, doubles while steps
// hold, up to its maximum, then bisects Refine times between the last rate that held and the
// first that failed. A failed step does not end the run; only a worker or gateway that dies
// does. Between steps the gateways are left to go quiet and lost connections are restored.

// DefaultStartRates are the workloads' first rates: connects/s, requests/s, push API calls/s,
// batch calls/s, group messages/s, broadcast messages/s.
var DefaultStartRates = map[string]float64{
	results.WorkloadConnect: 500, results.WorkloadUpstream: 500, results.WorkloadPush: 500,
	results.WorkloadBatch: 100, results.WorkloadGroup: 10, results.WorkloadBroadcast: 1,
}

// DefaultMaxRates are the highest rates a search tries: far above what two cores sustain, so
// the machine, not the cap, ends each search.
var DefaultMaxRates = map[string]float64{
	results.WorkloadConnect: 200_000, results.WorkloadUpstream: 500_000, results.WorkloadPush: 500_000,
	results.WorkloadBatch: 100_000, results.WorkloadGroup: 20_000, results.WorkloadBroadcast: 1_000,
}

// capacityDefaults checks and completes the capacity settings (nothing to do for a plain run).
func (c *Config) capacityDefaults() error {
	if len(c.Capacity) == 0 {
		return nil
	}
	for i, w := range c.Capacity {
		if !slices.Contains(results.Workloads, w) {
			return fmt.Errorf("loadgen: capacity workload %q: want one of %s", w, strings.Join(results.Workloads, ", "))
		}
		if slices.Contains(c.Capacity[:i], w) {
			return fmt.Errorf("loadgen: capacity workload %q named twice", w)
		}
	}
	if c.P99Limit < 0 {
		return fmt.Errorf("loadgen: p99 limit %s: must be positive", c.P99Limit)
	}
	if c.P99Limit == 0 {
		c.P99Limit = time.Duration(results.DefaultP99Limit * float64(time.Millisecond))
	}
	if c.BroadcastP99Limit < 0 {
		return fmt.Errorf("loadgen: broadcast p99 limit %s: must be positive", c.BroadcastP99Limit)
	}
	if c.BroadcastP99Limit == 0 {
		c.BroadcastP99Limit = time.Duration(results.DefaultBroadcastP99Limit * float64(time.Millisecond))
	}
	if c.StepDuration < 0 {
		return fmt.Errorf("loadgen: step duration %s: must be positive", c.StepDuration)
	}
	if c.StepDuration == 0 {
		c.StepDuration = 5 * time.Second
	}
	if c.Refine == 0 {
		c.Refine = 2
	}
	if c.BatchSize < 0 {
		return fmt.Errorf("loadgen: batch size %d: must be positive", c.BatchSize)
	}
	if c.BatchSize == 0 {
		c.BatchSize = 10
	}
	if c.GroupSize == 0 {
		c.GroupSize = 100 // the search's groups: small, so a group message is a fan-out, not a broadcast
	}
	start, err := rates("start rate", c.StartRates, DefaultStartRates)
	if err != nil {
		return err
	}
	top, err := rates("max rate", c.MaxRates, DefaultMaxRates)
	if err != nil {
		return err
	}
	for _, w := range c.Capacity {
		if start[w] > top[w] {
			return fmt.Errorf("loadgen: capacity workload %s: start rate %g above its max rate %g", w, start[w], top[w])
		}
	}
	c.StartRates, c.MaxRates = start, top
	return nil
}

// rates is def overridden by set, each rate checked.
func rates(what string, set, def map[string]float64) (map[string]float64, error) {
	out := map[string]float64{}
	for w, r := range def {
		out[w] = r
	}
	for w, r := range set {
		if !slices.Contains(results.Workloads, w) {
			return nil, fmt.Errorf("loadgen: %s of %q: not a workload (have %s)", what, w, strings.Join(results.Workloads, ", "))
		}
		if !(r > 0) || math.IsInf(r, 0) {
			return nil, fmt.Errorf("loadgen: %s of %s: %g: must be a positive number", what, w, r)
		}
		out[w] = r
	}
	return out, nil
}

// ParseRates reads "workload=rate,…" (the --start-rates and --max-rates flags); flag names the
// flag in errors. Empty: none.
func ParseRates(flag, s string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		w, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("%s %q: want workload=rate,… (e.g. push=1000,group=20)", flag, part)
		}
		w = strings.TrimSpace(w)
		if !slices.Contains(results.Workloads, w) {
			return nil, fmt.Errorf("%s: %q is not a workload (have %s)", flag, w, strings.Join(results.Workloads, ", "))
		}
		r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(r > 0) || math.IsInf(r, 0) {
			return nil, fmt.Errorf("%s: %s=%s: the rate must be a positive number", flag, w, v)
		}
		out[w] = r
	}
	return out, nil
}

// searchCeiling runs the steps of one workload's search: run(rate) says whether the step at rate
// held; an error from it ends the search at once. Steps start at start, double while they hold
// up to top (the last one at top exactly), then bisect refine times between the last rate that
// held and the first that failed. It returns the highest rate that held (0: not even start) and
// the lowest that failed above it (0: none failed).
func searchCeiling(start, top float64, refine int, run func(rate float64) (bool, error)) (ceiling, failedAt float64, err error) {
	rate := min(start, top)
	for {
		ok, err := run(rate)
		if err != nil {
			return ceiling, failedAt, err
		}
		if !ok {
			failedAt = rate
			break
		}
		ceiling = rate
		if rate >= top {
			return ceiling, 0, nil
		}
		rate = min(rate*2, top)
	}
	if ceiling == 0 {
		return 0, failedAt, nil
	}
	for range max(refine, 0) {
		mid, ok := midRate(ceiling, failedAt)
		if !ok {
			break
		}
		held, err := run(mid)
		if err != nil {
			return ceiling, failedAt, err
		}
		if held {
			ceiling = mid
		} else {
			failedAt = mid
		}
	}
	return ceiling, failedAt, nil
}

// midRate is a round rate between lo and hi, near their middle: two significant digits where
// they tell the middle from lo and hi, more where needed; false when no rate with four
// significant digits lies strictly between them.
func midRate(lo, hi float64) (float64, bool) {
	m := (lo + hi) / 2
	for digits := 2; digits <= 4; digits++ {
		if r := roundSig(m, digits); r > lo && r < hi {
			return r, true
		}
	}
	return 0, false
}

// roundSig rounds v to digits significant digits.
func roundSig(v float64, digits int) float64 {
	if v == 0 {
		return 0
	}
	scale := math.Pow(10, float64(digits)-math.Ceil(math.Log10(math.Abs(v))))
	return math.Round(v*scale) / scale
}

// stepName is the phase name of a step: "<workload>@<rate>".
func stepName(workload string, rate float64) string {
	return workload + "@" + strconv.FormatFloat(rate, 'f', -1, 64)
}

// capSearch is the state of a capacity search across its steps.
type capSearch struct {
	c      *coord
	base   snapshot
	limits *results.Capacity // the p99 limits (P99Limit, Limits), no ceilings
	joined bool              // every connection is in its group (the group workload); a reconnect undoes it
}

// limits are the search's p99 limits in milliseconds as results.Capacity records them: P99Limit
// for every workload, Limits for the broadcast when its limit differs.
func (cfg *Config) limits() *results.Capacity {
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	l := &results.Capacity{P99Limit: ms(cfg.P99Limit)}
	if b := ms(cfg.BroadcastP99Limit); b > 0 && b != l.P99Limit {
		l.Limits = map[string]float64{results.WorkloadBroadcast: b}
	}
	return l
}

// capacity runs the search over Config.Capacity after the ramp: the steps go into res.Phases
// and the ceilings into res.Capacity. It returns an error only when the run cannot go on (a
// worker or gateway died, ctx ended); the ceilings found so far are set then too.
func (c *coord) capacity(ctx context.Context, base snapshot, res *results.Result) error {
	s := &capSearch{c: c, base: base, limits: c.cfg.limits()}
	if res.Config == nil {
		res.Config = map[string]any{}
	}
	res.Config["phases"] = results.PhaseRamp
	res.Config["capacity"] = strings.Join(c.cfg.Capacity, ",")
	res.Config["p99_limit_ms"] = s.limits.P99Limit
	res.Config["broadcast_p99_limit_ms"] = s.limits.LimitFor(results.WorkloadBroadcast)
	res.Config["step_duration_s"] = c.cfg.StepDuration.Seconds()
	res.Config["refine"] = max(c.cfg.Refine, 0)
	res.Config["batch_size"] = c.cfg.BatchSize
	res.Config["group_size"] = c.cfg.GroupSize
	defer func() {
		res.Capacity = &results.Capacity{P99Limit: s.limits.P99Limit, Limits: s.limits.Limits, Ceilings: results.Ceilings(res, s.limits)}
	}()
	for _, wl := range c.cfg.Capacity {
		start, top := c.cfg.StartRates[wl], c.cfg.MaxRates[wl]
		c.log.Info("capacity: searching", "workload", wl, "start_per_s", start, "max_per_s", top,
			"step_s", c.cfg.StepDuration.Seconds(), "p99_limit_ms", s.limits.LimitFor(wl), "refine", max(c.cfg.Refine, 0))
		steps := 0
		ceiling, failedAt, err := searchCeiling(start, top, c.cfg.Refine, func(rate float64) (bool, error) {
			steps++
			p, err := s.step(ctx, wl, rate)
			res.Phases = append(res.Phases, p)
			if err != nil {
				return false, err
			}
			why := results.StepFailures(&res.Phases[len(res.Phases)-1], s.limits.LimitFor(wl))
			if len(why) == 0 {
				c.log.Info("capacity: step held", "step", p.Name, "achieved_per_s", math.Round(p.Achieved*10)/10, "p99_ms", latencyP99(p.Latency))
				return true, nil
			}
			c.log.Info("capacity: step failed", "step", p.Name, "why", strings.Join(why, "; "))
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("loadgen: capacity: %s: %w", wl, err)
		}
		c.log.Info("capacity: ceiling", "workload", wl, "rate_per_s", ceiling, "failed_at_per_s", failedAt, "steps", steps)
	}
	return nil
}

func latencyP99(l *results.Latency) float64 {
	if l == nil {
		return 0
	}
	return l.P99
}

// step runs workload wl at rate as one phase, after settling the deployment. A step that went
// wrong is returned with its error noted in the phase (a failed step); the error returned is a
// fatal one: a worker or gateway gone, or ctx ended.
func (s *capSearch) step(ctx context.Context, wl string, rate float64) (results.Phase, error) {
	c := s.c
	p := results.Phase{Name: stepName(wl, rate), Workload: wl, Target: c.cfg.Conns, Offered: rate}
	if err := s.settle(ctx); err != nil {
		return p, err
	}
	c.m.setPhase(p.Name)
	dur := c.cfg.StepDuration
	var err error
	switch wl {
	case results.WorkloadConnect:
		p, err = s.connect(ctx, p, rate, dur)
		s.joined = false
	case results.WorkloadUpstream:
		p, err = c.requests(ctx, s.base, p, rate, dur)
	case results.WorkloadPush:
		p, err = c.unicast(ctx, s.base, p, rate, dur, 1)
	case results.WorkloadBatch:
		p, err = c.unicast(ctx, s.base, p, rate, dur, c.cfg.BatchSize)
	case results.WorkloadGroup:
		if !s.joined {
			if err = c.joinGroups(ctx, c.cfg.GroupSize); err == nil {
				s.joined = true
			}
		}
		if err == nil {
			p, err = c.groupPush(ctx, s.base, p, rate, dur)
		}
	case results.WorkloadBroadcast:
		msgs := max(int(math.Round(rate*dur.Seconds())), 1)
		p, err = c.fanout(ctx, s.base, p, msgs, rate, func(int) (map[string]any, int64) {
			return map[string]any{"biz": c.cfg.PushBiz, "broadcast": true}, int64(c.cfg.Conns)
		})
	}
	if err == nil {
		return p, nil
	}
	if ferr := s.fatal(ctx); ferr != nil {
		return p, fmt.Errorf("%s: %w (the step: %v)", p.Name, ferr, err)
	}
	// The step's own failure: it fails the step, visibly. Completeness problems already show in
	// the phase's counts; anything else is noted among its errors.
	if len(results.StepFailures(&p, s.limits.LimitFor(wl))) == 0 || p.Latency == nil {
		msg := err.Error()
		if len(msg) > 200 {
			msg = msg[:200] + "…"
		}
		p.Errors = mergeErrors(p.Errors, map[string]int64{"step: " + msg: 1})
	}
	return p, nil
}

// fatal returns why the run cannot go on, if it cannot: ctx ended, a worker exited, a gateway
// does not answer.
func (s *capSearch) fatal(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.c.workerExited(); err != nil {
		return err
	}
	if _, err := s.c.snapshot(ctx, false); err != nil {
		return fmt.Errorf("a gateway does not answer: %w", err)
	}
	return nil
}

// Settling between steps.
const (
	settleTimeout = 30 * time.Second
	settlePoll    = 250 * time.Millisecond
	// quietCPU is the gateways' CPU use, in cores, below which they count as idle.
	quietCPU = 0.25
)

// settle readies the deployment for a step: lost connections are restored (at the ramp's
// connect rate) and then the gateways must hold every connection and be idle — their CPU use
// under quietCPU cores, so a step's backlog does not run into the next — waiting at most
// settleTimeout (then it goes on, with a warning). It fails only when connections cannot be
// restored or something died.
func (s *capSearch) settle(ctx context.Context) error {
	c := s.c
	st, err := c.status(ctx)
	if err != nil {
		return err
	}
	if lost := int64(c.cfg.Conns) - st.Connected; lost > 0 {
		c.log.Info("capacity: restoring connections", "lost", lost, "rate", c.cfg.ConnectRate)
		s.joined = false
		if err := s.reconnect(ctx, c.cfg.ConnectRate, func(w *workerProc) int { return w.hi - w.lo }, nil); err != nil {
			return err
		}
		if st, err = c.status(ctx); err != nil {
			return err
		}
		if st.Connected < int64(c.cfg.Conns) {
			return fmt.Errorf("loadgen: capacity: %d of %d connections after restoring the lost ones", st.Connected, c.cfg.Conns)
		}
	}
	deadline := time.Now().Add(settleTimeout)
	prev, err := c.snapshot(ctx, false)
	if err != nil {
		return err
	}
	prevAt := time.Now()
	for {
		t := time.NewTimer(settlePoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		now, err := c.snapshot(ctx, false)
		if err != nil {
			return err
		}
		at := time.Now()
		var cpu float64
		sessions := 0
		for i := range now {
			sessions += now[i].Sessions
			if i < len(prev) {
				cpu += now[i].CPUSeconds - prev[i].CPUSeconds
			}
		}
		load := cpu / at.Sub(prevAt).Seconds()
		if sessions == c.cfg.Conns && load < quietCPU {
			return nil
		}
		if at.After(deadline) {
			c.log.Warn("capacity: the gateways did not settle; going on", "sessions", sessions, "conns", c.cfg.Conns, "cpu_cores", load)
			return nil
		}
		prev, prevAt = now, at
	}
}

// reconnect asks every worker to connect its clients [0, count(w)) that are not connected, at
// rate (each its share); ans(i), when not nil, receives worker i's answer.
func (s *capSearch) reconnect(ctx context.Context, rate float64, count func(w *workerProc) int, ans func(i int) any) error {
	c := s.c
	return c.all(ctx, http.MethodPost, "/reconnect", func(w *workerProc) any {
		share := float64(w.hi-w.lo) / float64(c.cfg.Conns)
		n := count(w)
		wrate := rate * share
		return reconnectReq{Count: n, Rate: wrate,
			TimeoutMS: (time.Duration(float64(n)/wrate*float64(time.Second)) + time.Minute).Milliseconds()}
	}, ans)
}

// connect is one step of the connect workload: rate × dur devices (at most all), each worker its
// share, are closed, and once the gateways have seen them go, connected and logged in again at
// rate, each connect's latency measured from its intended time to its LOGIN_ACK. Achieved is the
// logins' rate; a device that did not log in is missing.
func (s *capSearch) connect(ctx context.Context, p results.Phase, rate float64, dur time.Duration) (results.Phase, error) {
	c := s.c
	total := min(c.cfg.Conns, max(int(math.Round(rate*dur.Seconds())), 1))
	count := func(w *workerProc) int {
		n := int(math.Round(float64(total) * float64(w.hi-w.lo) / float64(c.cfg.Conns)))
		return min(max(n, 1), w.hi-w.lo)
	}
	closed := 0
	for _, w := range c.workers {
		closed += count(w)
	}
	if err := c.all(ctx, http.MethodPost, "/reconnect", func(w *workerProc) any {
		return reconnectReq{Close: true, Count: count(w)}
	}, nil); err != nil {
		return p, err
	}
	// The gateways see the connections go before the step starts: their closing is not its cost.
	want := c.cfg.Conns - closed
	deadline := time.Now().Add(settleTimeout)
	for {
		snap, err := c.snapshot(ctx, false)
		if err != nil {
			return p, err
		}
		sessions := 0
		for _, st := range snap {
			sessions += st.Sessions
		}
		if sessions <= want {
			break
		}
		if time.Now().After(deadline) {
			c.log.Warn(p.Name+": the gateways still hold closed connections; going on", "sessions", sessions, "want", want)
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	pr, err := c.begin(ctx, p.Name, 0, false, dur)
	if err != nil {
		return p, err
	}
	c.log.Info(p.Name+": connecting", "rate", rate, "devices", closed)
	answers := make([]reconnectAns, len(c.workers))
	err = s.reconnect(ctx, rate, count, func(i int) any { return &answers[i] })
	var first, last int64
	for _, a := range answers {
		p.Sent += a.Sent
		pr.sent += a.Connected
		last = max(last, a.LastAckNS)
		if a.StartNS > 0 && (first == 0 || a.StartNS < first) {
			first = a.StartNS
		}
	}
	if err != nil {
		return p, err
	}
	pr.op = opConnect
	if last > 0 && first > 0 {
		// The rate reached runs from the workers' schedules' start (not the phase's, which is
		// an API call earlier: a short step would lose a tenth of its rate to it) to the last
		// LOGIN_ACK; finish measures from pr.t0, so the window is moved there.
		window := time.Duration(last - first)
		pr.lastSent = pr.t0.Add(window)
		if window > 0 {
			p.ConnectRate = float64(pr.sent) / window.Seconds()
		}
	}
	return p, c.finish(ctx, &p, s.base, pr, time.Now(), pr.sent)
}
