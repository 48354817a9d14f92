package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/results"
)

// Phase names beyond the ones in package results.
const (
	PhaseGroupAll = "group-all" // one group holding every connection
)

// DefaultPhases is the order a run takes when Config.Phases is empty.
var DefaultPhases = []string{results.PhaseRamp, results.PhaseIdle, results.PhaseUpstream, results.PhasePush,
	results.PhaseGroup, PhaseGroupAll, results.PhaseBroadcast}

// tracker records which (message, client) deliveries arrived. A unicast message goes to one
// client (stride 1: indexed by message); a fan-out message to many (stride Conns: indexed by
// message × Conns + client).
type tracker struct {
	got    []atomic.Bool
	stride int
}

func (t *tracker) index(seq, client int) int {
	if t.stride == 1 {
		return seq
	}
	return seq*t.stride + client
}

// startTracking resets the latency histogram and delivery counts for a phase of msgs messages.
func (g *gen) startTracking(msgs, stride int) {
	g.histMu.Lock()
	g.hist = hdrhistogram.New(1, (5 * time.Minute).Microseconds(), 3)
	g.histMu.Unlock()
	g.tr.Store(&tracker{got: make([]atomic.Bool, msgs*stride), stride: stride})
	g.delivered.Store(0)
	g.dups.Store(0)
	g.lastRecv.Store(0)
}

// finishPhase fills the figures every delivery phase shares and checks completeness.
func (g *gen) finishPhase(ctx context.Context, p *results.Phase, base, start snapshot, t0, sendDone time.Time, expect int64) error {
	deadline := time.Now().Add(g.cfg.Drain)
	for g.delivered.Load() < expect && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	end, err := g.snapshot(ctx, false)
	if err != nil {
		return err
	}
	last := time.Unix(0, g.lastRecv.Load())
	if last.Before(sendDone) {
		last = sendDone
	}
	p.Duration = last.Sub(t0).Seconds()
	p.Gateway, p.Conns = gatewayFigures(base, start, end)
	p.Delivered = g.delivered.Load()
	p.Missing = p.Sent - p.Delivered - p.Offline - p.Failed
	if p.Duration > 0 {
		p.Deliveries = float64(p.Delivered) / p.Duration
	}
	g.histMu.Lock()
	p.Latency = latencyOf(g.hist)
	g.histMu.Unlock()
	p.Errors = g.takeErrors()
	if d := g.dups.Load(); d > 0 {
		if p.Errors == nil {
			p.Errors = map[string]int64{}
		}
		p.Errors["duplicate_delivery"] = d
	}
	g.log.Info(p.Name+": done", "sent", p.Sent, "delivered", p.Delivered, "offline", p.Offline, "failed", p.Failed,
		"missing", p.Missing, "deliveries_per_s", int(p.Deliveries), "p50_ms", p.Latency.P50, "p99_ms", p.Latency.P99)
	if p.Missing != 0 {
		return fmt.Errorf("loadgen: %s phase: %d messages missing", p.Name, p.Missing)
	}
	return nil
}

// upstream sends RequestRate REQUESTs per second for RequestDuration from the clients in turn,
// open loop: latency runs from each request's intended send time to its RESPONSE.
func (g *gen) upstream(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseUpstream, Target: g.cfg.Conns}
	g.m.setPhase(p.Name)
	total := int(g.cfg.RequestRate * g.cfg.RequestDuration.Seconds())
	g.startTracking(0, 1)
	start, err := g.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	g.log.Info("upstream: requesting", "rate", g.cfg.RequestRate, "seconds", g.cfg.RequestDuration.Seconds(), "requests", total, "biz", g.cfg.RequestBiz)
	t0 := time.Now()
	var sent, ok, failed atomic.Int64
	type job struct {
		seq int
		at  time.Time
	}
	jobs := make(chan job, total)
	var wg sync.WaitGroup
	for range g.cfg.RequestSenders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte("pwlg-request-0123456789abcdef")
			for j := range jobs {
				c := g.clients[j.seq%len(g.clients)]
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				r, err := c.Request(rctx, g.cfg.RequestBiz, nil, body)
				cancel()
				sent.Add(1)
				switch {
				case err != nil:
					g.countErr("request_" + errReason(err))
					continue // neither answered nor refused: counted missing
				case r.Code != frame.CodeOK:
					failed.Add(1)
					g.countErr("response_" + r.Code.String())
					continue
				}
				now := time.Now()
				ok.Add(1)
				g.delivered.Add(1)
				g.lastRecv.Store(now.UnixNano())
				us := now.Sub(j.at).Microseconds()
				g.histMu.Lock()
				_ = g.hist.RecordValue(max(us, 1))
				g.histMu.Unlock()
				g.m.observeLatency(us)
			}
		}()
	}
	n := 0
	progress := time.NewTicker(g.cfg.ProgressPeriod)
	for at := range (Pacer{Rate: g.cfg.RequestRate, Count: total}).Run(ctx, t0) {
		jobs <- job{seq: n, at: at}
		n++
		select {
		case <-progress.C:
			g.log.Info("upstream: progress", "sent", sent.Load(), "answered", ok.Load()+failed.Load(), "of", total)
		default:
		}
	}
	progress.Stop()
	close(jobs)
	wg.Wait()
	p.Sent, p.Failed = sent.Load(), failed.Load()
	err = g.finishPhase(ctx, &p, base, start, t0, time.Now(), ok.Load())
	return p, err
}

// pushAll calls the push API on every gateway (each delivers to the connections it holds) and
// sums the answers.
func (g *gen) pushAll(ctx context.Context, body map[string]any) (pushAnswer, error) {
	var sum pushAnswer
	for _, base := range g.cfg.GatewayHTTP {
		var ans pushAnswer
		if err := g.api(ctx, http.MethodPost, base+"/v1/push", body, &ans); err != nil {
			return sum, err
		}
		sum.Targets += ans.Targets
		sum.Delivered += ans.Delivered
		sum.Forwarded += ans.Forwarded
		sum.Offline += ans.Offline
		sum.Failed += ans.Failed
	}
	return sum, nil
}

// api makes one push-API call with the app's push key and decodes a 200 answer into out.
func (g *gen) api(ctx context.Context, method, url string, body, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+g.cfg.PushKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.http.Do(req)
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

// fanout sends msgs messages at rate per second, each to the targets body(seq) names on every
// gateway, and measures every delivery.
func (g *gen) fanout(ctx context.Context, base snapshot, p results.Phase, msgs int, rate float64, body func(seq int) map[string]any) (results.Phase, error) {
	g.startTracking(msgs, g.cfg.Conns)
	start, err := g.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	t0 := time.Now()
	var sent, offline, failed, accepted atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	n := 0
	for at := range (Pacer{Rate: rate, Count: msgs}).Run(ctx, t0) {
		b := body(n)
		b["payload"] = payloadPrefix + strconv.Itoa(n) + ":" + strconv.FormatInt(at.UnixNano(), 10)
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ans, err := g.pushAll(ctx, b)
			if err != nil {
				g.countErr("push_api")
				g.log.Warn(p.Name+": push failed", "err", err)
				return
			}
			sent.Add(int64(ans.Targets))
			accepted.Add(int64(ans.Delivered + ans.Forwarded))
			offline.Add(int64(ans.Offline))
			failed.Add(int64(ans.Failed))
		}()
		n++
	}
	wg.Wait()
	p.Sent, p.Offline, p.Failed = sent.Load(), offline.Load(), failed.Load()
	err = g.finishPhase(ctx, &p, base, start, t0, time.Now(), accepted.Load())
	return p, err
}

// group joins the clients into groups of GroupSize with JOIN frames, then pushes GroupRate
// messages per second for GroupDuration, each to one group in turn.
func (g *gen) group(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseGroup, Target: g.cfg.Conns}
	g.m.setPhase(p.Name)
	groups := (len(g.clients) + g.cfg.GroupSize - 1) / g.cfg.GroupSize
	g.log.Info("group: joining", "clients", len(g.clients), "group_size", g.cfg.GroupSize, "groups", groups)
	var wg sync.WaitGroup
	var joinFailed atomic.Int64
	sem := make(chan struct{}, 256)
	for i, c := range g.clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			r, err := c.Join(jctx, g.cfg.GroupBiz, "lg-g"+strconv.Itoa(i/g.cfg.GroupSize))
			if err != nil || r.Code != frame.CodeOK {
				joinFailed.Add(1)
				g.countErr("join")
			}
		}()
	}
	wg.Wait()
	if k := joinFailed.Load(); k > 0 {
		return p, fmt.Errorf("loadgen: group phase: %d joins failed", k)
	}
	msgs := int(g.cfg.GroupRate * g.cfg.GroupDuration.Seconds())
	g.log.Info("group: pushing", "rate", g.cfg.GroupRate, "messages", msgs)
	return g.fanout(ctx, base, p, msgs, g.cfg.GroupRate, func(seq int) map[string]any {
		return map[string]any{"biz": g.cfg.GroupBiz, "group": "lg-g" + strconv.Itoa(seq%groups)}
	})
}

// groupAll puts every connection into one group through the membership API, then pushes
// FanoutPushes messages to it, one a second.
func (g *gen) groupAll(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: PhaseGroupAll, Target: g.cfg.Conns}
	g.m.setPhase(p.Name)
	devices := make([]string, len(g.clients))
	for i := range devices {
		devices[i] = g.cfg.DevicePrefix + strconv.Itoa(i)
	}
	members := 0
	for _, gw := range g.cfg.GatewayHTTP {
		var ans struct {
			Changed int `json:"changed"`
		}
		if err := g.api(ctx, http.MethodPut, gw+"/v1/groups/lg-all/members", map[string]any{"devices": devices}, &ans); err != nil {
			return p, fmt.Errorf("loadgen: group-all phase: %w", err)
		}
		members += ans.Changed
	}
	g.log.Info("group-all: pushing", "members", members, "messages", g.cfg.FanoutPushes)
	return g.fanout(ctx, base, p, g.cfg.FanoutPushes, 1, func(int) map[string]any {
		return map[string]any{"biz": g.cfg.GroupBiz, "group": "lg-all"}
	})
}

// broadcast pushes FanoutPushes messages to every connection of the app, one a second.
func (g *gen) broadcast(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseBroadcast, Target: g.cfg.Conns}
	g.m.setPhase(p.Name)
	g.log.Info("broadcast: pushing", "messages", g.cfg.FanoutPushes)
	return g.fanout(ctx, base, p, g.cfg.FanoutPushes, 1, func(int) map[string]any {
		return map[string]any{"biz": g.cfg.PushBiz, "broadcast": true}
	})
}
