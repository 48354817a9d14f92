package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/results"
)

// Phase names beyond the ones in package results.
const (
	PhaseGroupAll = "group-all" // one group holding every connection
)

// DefaultPhases is the order a run takes when Config.Phases is empty.
var DefaultPhases = []string{results.PhaseRamp, results.PhaseIdle, results.PhaseUpstream, results.PhasePush,
	results.PhaseGroup, PhaseGroupAll, results.PhaseBroadcast}

// membershipChunk is the devices per membership API call of the group-all phase.
const membershipChunk = 10_000

// phaseRun is what a phase noted at its start, and what its sending noted for finish.
type phaseRun struct {
	start       snapshot
	t0          time.Time
	disconnects int64 // the workers' count at the start
	redisCmds   int64 // INFO total_commands_processed at the start; -1 without Redis
	spend       spend // the load generator's processes at the start
	obs         *phaseObs

	// Set by the phase before finish: what one operation is (results.Cost.Op; "" means push API
	// calls, counted in Phase.Pushes), how many were sent and when the last went out.
	op       string
	sent     int64
	lastSent time.Time
}

// sendClock notes the operations a phase sends, each just before it goes out, and when the last
// one did.
type sendClock struct {
	n     atomic.Int64
	last  atomic.Int64  // unix ns
	total *atomic.Int64 // a running count to add to as well (nil: none)
}

// mark notes one operation going out now and returns now.
func (s *sendClock) mark() time.Time {
	now := time.Now()
	s.n.Add(1)
	storeMax(&s.last, now.UnixNano())
	if s.total != nil {
		s.total.Add(1)
	}
	return now
}

// note writes what s noted into pr.
func (s *sendClock) note(pr *phaseRun) {
	pr.sent = s.n.Load()
	if ns := s.last.Load(); ns > 0 {
		pr.lastSent = time.Unix(0, ns)
	}
}

// achievedRate is the rate n operations went out at, the first meant for t0 and the last sent at
// last, paced at offered per second: n / (last - t0 + 1/offered). Each operation owns one
// interval of the schedule, so a sender that kept up reaches exactly the offered rate, and one
// that fell behind, less. 0 when nothing was sent.
func achievedRate(n int64, t0, last time.Time, offered float64) float64 {
	if n <= 0 || last.IsZero() {
		return 0
	}
	window := last.Sub(t0).Seconds()
	if offered > 0 {
		window += 1 / offered
	}
	if window <= 0 {
		return 0
	}
	return float64(n) / window
}

// begin starts a phase: the workers reset their tracking (msgs messages; fanout: each to many
// devices), and the gateways' stats, the disconnect count and Redis's command count are read.
// expect is how long the phase is meant to send for (its observer's profiles cover it).
func (c *coord) begin(ctx context.Context, name string, msgs int, fanout bool, expect time.Duration) (*phaseRun, error) {
	return c.beginBatch(ctx, name, msgs, fanout, 1, expect)
}

// beginBatch is begin for a phase whose messages each go to batch devices (see trackReq).
func (c *coord) beginBatch(ctx context.Context, name string, msgs int, fanout bool, batch int, expect time.Duration) (*phaseRun, error) {
	if err := c.all(ctx, http.MethodPost, "/track", func(*workerProc) any {
		return trackReq{Phase: name, Msgs: msgs, Fanout: fanout, Batch: batch, Conns: c.cfg.Conns}
	}, nil); err != nil {
		return nil, err
	}
	_ = c.takeErrors()
	c.settleRedis(ctx, name)
	pr := &phaseRun{redisCmds: -1}
	var err error
	if pr.start, err = c.snapshot(ctx, false); err != nil {
		return nil, err
	}
	st, err := c.status(ctx)
	if err != nil {
		return nil, err
	}
	pr.disconnects = st.Disconnects
	if pr.redisCmds, err = c.redisCommands(ctx); err != nil {
		c.log.Warn(name+": Redis commands not counted", "err", err)
	}
	pr.spend = c.loadgenSpend()
	pr.t0 = time.Now()
	pr.obs = c.observe(ctx, name, pr.t0, expect)
	return pr, nil
}

// settleRedis waits (at most 15s) until Redis is back to the cluster's background rate: the
// gateways write memberships (JOINs, the membership API) in batches behind the calls that made
// them, and those writes belong to the phase before, not to the pushes that follow.
func (c *coord) settleRedis(ctx context.Context, phase string) {
	if c.cfg.RedisAddr == "" {
		return
	}
	limit := max(2*c.redisIdleRate, 50) // commands per second
	deadline := time.Now().Add(15 * time.Second)
	const window = 500 * time.Millisecond
	for time.Now().Before(deadline) && ctx.Err() == nil {
		a, err := c.redisCommands(ctx)
		if err != nil {
			return
		}
		t := time.NewTimer(window)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		b, err := c.redisCommands(ctx)
		if err != nil {
			return
		}
		rate := float64(b-a-1) / window.Seconds()
		if rate <= limit {
			return
		}
		c.log.Info(phase+": waiting for Redis to settle", "commands_per_s", int(rate), "background_per_s", int(c.redisIdleRate))
	}
}

// finish waits for the deliveries still expected (at most Config.Drain), collects and merges the
// workers' figures into p — with the rate achieved, the uncorrected latency, the cost per
// operation (pr.op; push API calls when unset) and the load generator's spend — and checks
// completeness: nothing missing, no online target reported offline, no unexpected disconnect.
func (c *coord) finish(ctx context.Context, p *results.Phase, base snapshot, pr *phaseRun, sendDone time.Time, expect int64) error {
	deadline := time.Now().Add(c.cfg.Drain)
	nextLog := time.Now().Add(c.cfg.ProgressPeriod)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st, err := c.status(ctx)
		if err != nil {
			return err
		}
		if st.Delivered >= expect {
			break
		}
		if time.Now().After(nextLog) {
			c.log.Info(p.Name+": draining", "delivered", st.Delivered, "expected", expect)
			nextLog = time.Now().Add(c.cfg.ProgressPeriod)
		}
		time.Sleep(50 * time.Millisecond)
	}
	col, err := c.collect(ctx)
	if err != nil {
		return err
	}
	end, err := c.snapshot(ctx, false)
	if err != nil {
		return err
	}
	cmds, _ := c.redisCommands(ctx) // -1 on failure: begin logged it already when Redis was down
	spent := c.loadgenSpend()
	last := col.lastRecv
	if last.Before(sendDone) {
		last = sendDone
	}
	p.Duration = last.Sub(pr.t0).Seconds()
	if pr.redisCmds >= 0 && cmds >= 0 {
		p.RedisCommands = max(cmds-pr.redisCmds-1, 0) // -1: the INFO that read the start
		p.RedisBackground = min(int64(c.redisIdleRate*time.Since(pr.t0).Seconds()), p.RedisCommands)
		if p.Pushes > 0 {
			p.RedisCommandsPerPush = float64(p.RedisCommands-p.RedisBackground) / float64(p.Pushes)
		}
	}
	c.figures(p, base, pr.start, end)
	p.Delivered = col.Delivered
	p.Missing = p.Sent - p.Delivered - p.Offline - p.Failed
	p.Disconnects = col.Disconnects - pr.disconnects
	if p.Duration > 0 {
		p.Deliveries = float64(p.Delivered) / p.Duration
	}
	p.Latency = latencyOf(col.hist)
	p.LatencyUncorrected = latencyOf(col.histU)
	op, ops := pr.op, pr.sent
	if op == "" {
		op, ops = opPush, p.Pushes
	}
	p.Achieved = achievedRate(pr.sent, pr.t0, pr.lastSent, p.Offered)
	deliveries := p.Delivered
	if op == opConnect {
		deliveries = 0 // a connect step counts its logins as delivered: they are its operations
	}
	p.Cost = costOf(op, ops, deliveries, p.Gateway)
	p.Loadgen = loadgenFigures(pr.spend, spent)
	p.Errors = mergeErrors(c.takeErrors(), col.errors)
	if col.Dups > 0 {
		p.Errors = mergeErrors(p.Errors, map[string]int64{"duplicate_delivery": col.Dups})
	}
	pr.obs.setTimes(pr.lastSent, col.lastRecv)
	pr.obs.end(ctx, p)
	c.log.Info(p.Name+": done", "offered_per_s", p.Offered, "achieved_per_s", math.Round(p.Achieved*100)/100, "sent", p.Sent, "delivered", p.Delivered, "forwarded", p.Forwarded, "offline", p.Offline,
		"failed", p.Failed, "missing", p.Missing, "disconnects", p.Disconnects, "deliveries_per_s", int(p.Deliveries),
		"p50_ms", p.Latency.P50, "p99_ms", p.Latency.P99, "p99_uncorrected_ms", p.LatencyUncorrected.P99,
		"redis_cmds_per_push", p.RedisCommandsPerPush)
	var problems []string
	if p.Missing > 0 {
		problems = append(problems, fmt.Sprintf("%d messages missing", p.Missing))
	}
	if p.OnlineOffline > 0 {
		problems = append(problems, fmt.Sprintf("%d targets that were online reported offline or stale", p.OnlineOffline))
	}
	if p.Disconnects > 0 {
		problems = append(problems, fmt.Sprintf("%d unexpected disconnects", p.Disconnects))
	}
	if len(problems) > 0 {
		return fmt.Errorf("loadgen: %s phase: %s", p.Name, strings.Join(problems, ", "))
	}
	return nil
}

// figures fills the gateway figures of p: the total and each instance's.
func (c *coord) figures(p *results.Phase, base, start, end snapshot) {
	p.Gateway, p.Conns = gatewayFigures(base, start, end)
	if len(end) < 2 {
		return
	}
	p.PerInstance = make([]results.Instance, len(end))
	for i := range end {
		one := func(s snapshot) snapshot {
			if i < len(s) {
				return s[i : i+1]
			}
			return nil
		}
		g, conns := gatewayFigures(one(base), one(start), end[i:i+1])
		p.PerInstance[i] = results.Instance{Node: end[i].Node, Conns: conns, Gateway: g}
	}
}

// ramp has the workers open Conns connections at ConnectRate (each its share) and waits until
// they are all logged in.
func (c *coord) ramp(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseRamp, Target: c.cfg.Conns}
	start, err := c.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	spend0 := c.loadgenSpend()
	t0 := time.Now()
	obs := c.observe(ctx, p.Name, t0, time.Duration(float64(c.cfg.Conns)/c.cfg.ConnectRate*float64(time.Second)))
	p.Offered = c.cfg.ConnectRate
	c.log.Info("ramp: connecting", "conns", c.cfg.Conns, "rate", c.cfg.ConnectRate, "workers", len(c.workers))
	answers := make([]rampAns, len(c.workers))
	done := make(chan error, 1)
	go func() {
		done <- c.all(ctx, http.MethodPost, "/ramp", func(w *workerProc) any {
			share := float64(w.hi-w.lo) / float64(c.cfg.Conns)
			return rampReq{Rate: c.cfg.ConnectRate * share, TimeoutMS: c.cfg.RampTimeout.Milliseconds()}
		}, func(i int) any { return &answers[i] })
	}()
	tick := time.NewTicker(c.cfg.ProgressPeriod)
	defer tick.Stop()
	var rampErr error
wait:
	for {
		select {
		case rampErr = <-done:
			break wait
		case <-tick.C:
			if st, err := c.status(ctx); err == nil {
				c.log.Info("ramp: progress", "connected", st.Connected, "target", c.cfg.Conns)
			}
		}
	}
	d := time.Since(t0)
	var connected int64
	var errs map[string]int64
	for _, a := range answers {
		connected += a.Connected
		errs = mergeErrors(errs, a.Errors)
	}
	p.Errors = errs
	if rampErr != nil {
		return p, rampErr
	}
	st, err := c.status(ctx)
	if err != nil {
		return p, err
	}
	end, err := c.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	p.Duration = d.Seconds()
	c.figures(&p, base, start, end)
	p.ConnectRate = float64(connected) / d.Seconds()
	p.Achieved = rampAchieved(answers, c.cfg.ConnectRate)
	p.Cost = costOf(opConnect, connected, 0, p.Gateway)
	p.Loadgen = loadgenFigures(spend0, c.loadgenSpend())
	p.Disconnects = st.Disconnects
	obs.end(ctx, &p)
	c.log.Info("ramp: done", "connected", connected, "gateway_sessions", p.Conns, "seconds", d.Seconds(), "rate", p.ConnectRate)
	if p.Conns < c.cfg.Conns {
		return p, fmt.Errorf("loadgen: ramp reached %d of %d connections (errors: %v)", p.Conns, c.cfg.Conns, p.Errors)
	}
	if p.Disconnects > 0 {
		return p, fmt.Errorf("loadgen: ramp: %d unexpected disconnects", p.Disconnects)
	}
	return p, nil
}

// rampAchieved is the rate the workers started their connects at, together: the connects
// started over the time from the earliest schedule start to the last connect's start, plus one
// interval of the offered schedule (each connect owns one). Logins that come late show as the
// deliveries trailing the sends, not as a rate missed. 0 when the workers said nothing.
func rampAchieved(answers []rampAns, offered float64) float64 {
	var first, last, n int64
	for _, a := range answers {
		if a.StartNS == 0 || a.LastSentNS == 0 {
			continue
		}
		if first == 0 || a.StartNS < first {
			first = a.StartNS
		}
		last = max(last, a.LastSentNS)
		n += a.Connected
	}
	if n == 0 || offered <= 0 {
		return 0
	}
	window := time.Duration(last-first).Seconds() + 1/offered
	return float64(n) / window
}

// idle holds the connections and measures memory per connection after a forced GC.
func (c *coord) idle(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseIdle, Target: c.cfg.Conns}
	start, err := c.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	st0, err := c.status(ctx)
	if err != nil {
		return p, err
	}
	cmds0, err := c.redisCommands(ctx)
	if err != nil {
		c.log.Warn("idle: Redis commands not counted", "err", err)
	}
	c.log.Info("idle: holding", "seconds", c.cfg.Idle.Seconds())
	spend0 := c.loadgenSpend()
	t0 := time.Now()
	obs := c.observe(ctx, p.Name, t0, c.cfg.Idle)
	select {
	case <-time.After(c.cfg.Idle):
	case <-ctx.Done():
		return p, ctx.Err()
	}
	spent := c.loadgenSpend()
	end, err := c.snapshot(ctx, true)
	if err != nil {
		return p, err
	}
	st, err := c.status(ctx)
	if err != nil {
		return p, err
	}
	p.Duration = time.Since(t0).Seconds()
	if cmds, err := c.redisCommands(ctx); err == nil && cmds0 >= 0 && cmds >= 0 {
		// what the cluster asks of Redis with no push: registrations, registry reads, heartbeats
		p.RedisCommands = max(cmds-cmds0-1, 0)
		p.RedisBackground = p.RedisCommands
		c.redisIdleRate = float64(p.RedisCommands) / time.Since(t0).Seconds()
	}
	c.figures(&p, base, start, end)
	p.Loadgen = loadgenFigures(spend0, spent)
	p.Disconnects = st.Disconnects - st0.Disconnects
	obs.end(ctx, &p)
	c.log.Info("idle: done", "sessions", p.Conns, "redis_cmds_per_s", int(c.redisIdleRate), "connected", st.Connected, "disconnects", p.Disconnects,
		"rss_per_conn", int(p.Gateway.RSSPerConn), "heap_per_conn", int(p.Gateway.HeapPerConn), "goroutines", p.Gateway.Goroutines)
	if p.Disconnects > 0 {
		return p, fmt.Errorf("loadgen: idle phase: %d unexpected disconnects", p.Disconnects)
	}
	return p, nil
}

// upstream has the workers send RequestRate REQUESTs per second (each its share) for
// RequestDuration.
func (c *coord) upstream(ctx context.Context, base snapshot) (results.Phase, error) {
	return c.requests(ctx, base, results.Phase{Name: results.PhaseUpstream, Target: c.cfg.Conns}, c.cfg.RequestRate, c.cfg.RequestDuration)
}

// requests has the workers send rate REQUESTs per second (each its share) for dur, measured as
// phase p.
func (c *coord) requests(ctx context.Context, base snapshot, p results.Phase, rate float64, dur time.Duration) (results.Phase, error) {
	p.Offered = rate
	pr, err := c.begin(ctx, p.Name, 0, false, dur)
	if err != nil {
		return p, err
	}
	c.log.Info(p.Name+": requesting", "rate", rate, "seconds", dur.Seconds(), "biz", c.cfg.RequestBiz)
	answers := make([]upstreamAns, len(c.workers))
	senders := max(c.cfg.RequestSenders/len(c.workers), 16)
	err = c.all(ctx, http.MethodPost, "/upstream", func(w *workerProc) any {
		share := float64(w.hi-w.lo) / float64(c.cfg.Conns)
		return upstreamReq{Rate: rate * share, DurationMS: dur.Milliseconds(), Biz: c.cfg.RequestBiz, Senders: senders}
	}, func(i int) any { return &answers[i] })
	if err != nil {
		return p, err
	}
	var ok int64
	pr.op = opRequest
	for _, a := range answers {
		p.Sent += a.Sent
		p.Failed += a.Failed
		ok += a.OK
		if t := time.Unix(0, a.LastSentNS); a.LastSentNS > 0 && t.After(pr.lastSent) {
			pr.lastSent = t
		}
	}
	pr.sent = p.Sent
	return p, c.finish(ctx, &p, base, pr, time.Now(), ok)
}

// tally sums the push API's answers of a phase.
type tally struct {
	sent, pushes, forwarded, offline, failed, onlineOffline atomic.Int64

	mu     sync.Mutex
	remote *results.Remote
}

// add accounts one push API call to targets online devices (err: the call failed).
func (t *tally) add(c *coord, targets int64, ans pushAnswer, err error) {
	t.sent.Add(targets)
	t.pushes.Add(1)
	if err != nil {
		t.failed.Add(targets)
		c.countErr("push_api")
		c.log.Debug("push failed", "err", err)
		return
	}
	if ans.Targets != targets {
		c.countErr("answer_targets_mismatch")
	}
	offline, failed := ans.Offline, ans.Failed
	if r := ans.Remote; r != nil {
		offline += r.Offline + r.Stale
		failed += r.Failed
		t.mu.Lock()
		if t.remote == nil {
			t.remote = &results.Remote{}
		}
		t.remote.Instances += r.Instances
		t.remote.Reported += r.Reported
		t.remote.Delivered += r.Delivered
		t.remote.Offline += r.Offline
		t.remote.Stale += r.Stale
		t.remote.Failed += r.Failed
		t.mu.Unlock()
	}
	t.forwarded.Add(ans.Forwarded)
	t.offline.Add(offline)
	t.failed.Add(failed)
	// Every target of the bench is a device the load generator holds: an offline or stale report
	// is an online device the cluster did not find.
	t.onlineOffline.Add(offline)
}

// fill writes the tally into p and returns the deliveries still expected.
func (t *tally) fill(p *results.Phase) int64 {
	p.Sent, p.Pushes, p.Forwarded = t.sent.Load(), t.pushes.Load(), t.forwarded.Load()
	p.Offline, p.Failed, p.OnlineOffline = t.offline.Load(), t.failed.Load(), t.onlineOffline.Load()
	p.Remote = t.remote
	return p.Sent - p.Offline - p.Failed
}

// gateway picks the gateway for a push at random: never by where its targets are.
func (c *coord) gateway() string {
	return c.cfg.GatewayHTTP[rand.IntN(len(c.cfg.GatewayHTTP))]
}

// payload is the text of message seq of a phase, meant to go out at intended and sent at actual
// (see parsePayload).
func payload(seq int, intended, actual time.Time) string {
	return payloadPrefix + strconv.Itoa(seq) + ":" + strconv.FormatInt(intended.UnixNano(), 10) + ":" +
		strconv.FormatInt(actual.UnixNano(), 10)
}

// push sends PushRate unicast pushes per second for PushDuration through the push API, open
// loop, then waits for the deliveries.
func (c *coord) push(ctx context.Context, base snapshot) (results.Phase, error) {
	return c.unicast(ctx, base, results.Phase{Name: results.PhasePush, Target: c.cfg.Conns}, c.cfg.PushRate, c.cfg.PushDuration, 1)
}

// unicast sends rate push API calls per second for dur, each naming batch devices (one: a
// unicast push; more: a batch push), open loop through PushSenders callers, measured as phase
// p, then waits for the deliveries.
func (c *coord) unicast(ctx context.Context, base snapshot, p results.Phase, rate float64, dur time.Duration, batch int) (results.Phase, error) {
	p.Offered = rate
	batch = max(batch, 1)
	calls := int(rate * dur.Seconds())
	total := calls * batch
	pr, err := c.beginBatch(ctx, p.Name, total, false, batch, dur)
	if err != nil {
		return p, err
	}
	c.log.Info(p.Name+": sending", "rate", rate, "seconds", dur.Seconds(), "calls", calls, "devices_per_call", batch)
	var t tally
	sc := sendClock{total: &c.pushCalls}
	type job struct {
		seq int
		at  time.Time
	}
	jobs := make(chan job, max(calls, 1))
	var wg sync.WaitGroup
	for range c.cfg.PushSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				// Message seq*batch+k goes to device (seq*batch+k) mod Conns: every message of
				// the phase has its own sequence number, tracked once.
				devices := make([]string, batch)
				for k := range devices {
					devices[k] = c.cfg.DevicePrefix + strconv.Itoa((j.seq*batch+k)%c.cfg.Conns)
				}
				var ans pushAnswer
				gw := c.gateway()
				err := c.api(ctx, http.MethodPost, gw+"/v1/push",
					map[string]any{"biz": c.cfg.PushBiz, "devices": devices, "payload": payload(j.seq, j.at, sc.mark())}, &ans)
				t.add(c, int64(batch), ans, err)
			}
		}()
	}
	n := 0
	tick := time.NewTicker(c.cfg.ProgressPeriod)
	for at := range (Pacer{Rate: rate, Count: calls}).Run(ctx, pr.t0) {
		jobs <- job{seq: n, at: at}
		n++
		select {
		case <-tick.C:
			c.progress(ctx, p.Name, t.pushes.Load(), calls)
		default:
		}
	}
	tick.Stop()
	close(jobs)
	wg.Wait()
	expect := t.fill(&p)
	sc.note(pr)
	return p, c.finish(ctx, &p, base, pr, time.Now(), expect)
}

func (c *coord) progress(ctx context.Context, phase string, pushes int64, of int) {
	if st, err := c.status(ctx); err == nil {
		c.log.Info(phase+": progress", "pushes", pushes, "of", of, "delivered", st.Delivered, "connected", st.Connected)
	}
}

// api makes one push-API call with the app's push key and decodes a 200 answer into out.
func (c *coord) api(ctx context.Context, method, url string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.PushKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, strings.TrimSpace(string(rb)))
	}
	return json.Unmarshal(rb, out)
}

// fanout sends msgs messages at rate per second, each one push API call (the route layer fans it
// out across the cluster) through a gateway chosen at random, to the targets body(seq) names
// (how many: targets), and measures every delivery.
func (c *coord) fanout(ctx context.Context, base snapshot, p results.Phase, msgs int, rate float64, body func(seq int) (map[string]any, int64)) (results.Phase, error) {
	p.Offered = rate
	pr, err := c.begin(ctx, p.Name, msgs, true, time.Duration(float64(msgs)/rate*float64(time.Second)))
	if err != nil {
		return p, err
	}
	var t tally
	sc := sendClock{total: &c.pushCalls}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	n := 0
	tick := time.NewTicker(c.cfg.ProgressPeriod)
	for at := range (Pacer{Rate: rate, Count: msgs}).Run(ctx, pr.t0) {
		b, targets := body(n)
		seq := n
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			var ans pushAnswer
			gw := c.gateway()
			b["payload"] = payload(seq, at, sc.mark())
			err := c.api(ctx, http.MethodPost, gw+"/v1/push", b, &ans)
			if err != nil {
				c.log.Warn(p.Name+": push failed", "err", err)
			}
			t.add(c, targets, ans, err)
		}()
		n++
		select {
		case <-tick.C:
			c.progress(ctx, p.Name, t.pushes.Load(), msgs)
		default:
		}
	}
	tick.Stop()
	wg.Wait()
	expect := t.fill(&p)
	sc.note(pr)
	return p, c.finish(ctx, &p, base, pr, time.Now(), expect)
}

// group has every client JOIN its group (GroupSize devices each, by index), then pushes
// GroupRate messages per second for GroupDuration, each to one group in turn.
func (c *coord) group(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseGroup, Target: c.cfg.Conns}
	if err := c.joinGroups(ctx, c.cfg.GroupSize); err != nil {
		return p, err
	}
	return c.groupPush(ctx, base, p, c.cfg.GroupRate, c.cfg.GroupDuration)
}

// joinGroups has every client JOIN its group of size devices (by index): lg-g<index / size>.
func (c *coord) joinGroups(ctx context.Context, size int) error {
	groups := (c.cfg.Conns + size - 1) / size
	c.log.Info("group: joining", "clients", c.cfg.Conns, "group_size", size, "groups", groups)
	answers := make([]joinAns, len(c.workers))
	if err := c.all(ctx, http.MethodPost, "/join", func(*workerProc) any {
		return joinReq{Biz: c.cfg.GroupBiz, GroupSize: size}
	}, func(i int) any { return &answers[i] }); err != nil {
		return err
	}
	var failed int64
	for _, a := range answers {
		failed += a.Failed
	}
	if failed > 0 {
		return fmt.Errorf("loadgen: group phase: %d joins failed", failed)
	}
	return nil
}

// groupPush pushes rate messages per second for dur, each to one of the groups of GroupSize
// devices that joinGroups made, in turn, measured as phase p.
func (c *coord) groupPush(ctx context.Context, base snapshot, p results.Phase, rate float64, dur time.Duration) (results.Phase, error) {
	size := c.cfg.GroupSize
	groups := (c.cfg.Conns + size - 1) / size
	msgs := max(int(rate*dur.Seconds()), 1)
	c.log.Info(p.Name+": pushing", "rate", rate, "messages", msgs)
	return c.fanout(ctx, base, p, msgs, rate, func(seq int) (map[string]any, int64) {
		g := seq % groups
		members := min(size, c.cfg.Conns-g*size)
		return map[string]any{"biz": c.cfg.GroupBiz, "group": groupName(g*size, size)}, int64(members)
	})
}

// groupAll puts every device into one group through the membership API (chunks of
// membershipChunk devices, through the gateways in turn: any gateway accepts any device), then
// pushes FanoutPushes messages to it, one a second.
func (c *coord) groupAll(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: PhaseGroupAll, Target: c.cfg.Conns}
	changed := 0
	for lo, k := 0, 0; lo < c.cfg.Conns; lo, k = lo+membershipChunk, k+1 {
		hi := min(lo+membershipChunk, c.cfg.Conns)
		devices := make([]string, 0, hi-lo)
		for i := lo; i < hi; i++ {
			devices = append(devices, c.cfg.DevicePrefix+strconv.Itoa(i))
		}
		var ans struct {
			Changed int `json:"changed"`
		}
		gw := c.cfg.GatewayHTTP[k%len(c.cfg.GatewayHTTP)]
		if err := c.api(ctx, http.MethodPut, gw+"/v1/groups/lg-all/members", map[string]any{"devices": devices}, &ans); err != nil {
			return p, fmt.Errorf("loadgen: group-all phase: %w", err)
		}
		changed += ans.Changed
	}
	c.log.Info("group-all: pushing", "members", c.cfg.Conns, "changed", changed, "messages", c.cfg.FanoutPushes)
	return c.fanout(ctx, base, p, c.cfg.FanoutPushes, 1, func(int) (map[string]any, int64) {
		return map[string]any{"biz": c.cfg.GroupBiz, "group": "lg-all"}, int64(c.cfg.Conns)
	})
}

// broadcast pushes FanoutPushes messages to every connection of the app, one a second.
func (c *coord) broadcast(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseBroadcast, Target: c.cfg.Conns}
	c.log.Info("broadcast: pushing", "messages", c.cfg.FanoutPushes)
	return c.fanout(ctx, base, p, c.cfg.FanoutPushes, 1, func(int) (map[string]any, int64) {
		return map[string]any{"biz": c.cfg.PushBiz, "broadcast": true}, int64(c.cfg.Conns)
	})
}
