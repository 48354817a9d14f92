// Package loadgen is pushwire's load generator: it connects simulated devices through the
// control layer with the Go SDK, holds them, and pushes to them through the gateways' push API at
// a fixed rate, measuring end-to-end latency from each message's intended send time into HDR
// histograms and counting every message as delivered or accounted for.
package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/client"
	"github.com/pushwire/pushwire/results"
)

// Config is one load run. The zero value of a field means its documented default.
type Config struct {
	ControlURL  string   // required
	GatewayHTTP []string // required: every gateway's HTTP base URL (push API and stats)
	App         string   // required
	Secret      string   // required: the app secret devices prove
	PushKey     string   // required: the app's push key

	// GatewayAdmin are the gateways' admin base URLs, in the order of GatewayHTTP: the memory
	// snapshots, which force a garbage collection first (/v1/stats?gc=1, served on the admin
	// listener only), are read there. Default none: memory is read without a forced collection.
	GatewayAdmin []string

	Conns          int           // connections to open; default 10,000
	ConnectRate    float64       // new connections per second; default 2,000
	RampTimeout    time.Duration // give up waiting for the ramp after; default Conns/ConnectRate + 60s
	Idle           time.Duration // idle hold; default 10s
	PushRate       float64       // unicast pushes per second; default 2,000
	PushDuration   time.Duration // how long to push; default 10s
	PushBiz        uint16        // default 1
	PushSenders    int           // concurrent push API callers; default 64
	Drain          time.Duration // wait for the last deliveries after pushing; default 10s
	Sources        []string      // local IPs to dial from, round robin; default none (kernel's choice)
	DevicePrefix   string        // device IDs are prefix + index; default "lg-<unix time>-"
	Engine         string        // labels for the result
	Transport      string        // default "tcp"
	Commit         string        // for the result's environment
	ResultConfig   map[string]any
	Logger         *slog.Logger
	ProgressPeriod time.Duration // how often progress is logged; default 2s
	MetricsAddr    string        // serve Prometheus /metrics here (see metrics.go); default "" (off)

	// Phases names the phases to run, in order, from DefaultPhases; ramp always runs first.
	// Default: DefaultPhases.
	Phases          []string
	RequestRate     float64       // upstream REQUESTs per second; default 2,000
	RequestDuration time.Duration // default 10s
	RequestBiz      uint16        // default 1
	RequestSenders  int           // requests in flight at most; default 256
	GroupSize       int           // members of each group in the group phase; default 1,000
	GroupRate       float64       // group pushes per second; default 10
	GroupDuration   time.Duration // default 10s
	GroupBiz        uint16        // a biz that lets clients join; default 1
	FanoutPushes    int           // messages of the group-all and broadcast phases, one a second; default 5
}

func (c *Config) setDefaults() error {
	switch {
	case c.ControlURL == "":
		return errors.New("loadgen: control URL required")
	case len(c.GatewayHTTP) == 0:
		return errors.New("loadgen: at least one gateway HTTP URL required")
	case len(c.GatewayAdmin) > 0 && len(c.GatewayAdmin) != len(c.GatewayHTTP):
		return fmt.Errorf("loadgen: gateway admin URLs: %d for %d gateways (one per gateway, in the same order)", len(c.GatewayAdmin), len(c.GatewayHTTP))
	case c.App == "" || c.Secret == "" || c.PushKey == "":
		return errors.New("loadgen: app, secret and push key required")
	}
	if c.Conns <= 0 {
		c.Conns = 10_000
	}
	if c.ConnectRate <= 0 {
		c.ConnectRate = 2000
	}
	if c.RampTimeout <= 0 {
		c.RampTimeout = time.Duration(float64(c.Conns)/c.ConnectRate*float64(time.Second)) + 60*time.Second
	}
	if c.Idle <= 0 {
		c.Idle = 10 * time.Second
	}
	if c.PushRate <= 0 {
		c.PushRate = 2000
	}
	if c.PushDuration <= 0 {
		c.PushDuration = 10 * time.Second
	}
	if c.PushBiz == 0 {
		c.PushBiz = 1
	}
	if c.PushSenders <= 0 {
		c.PushSenders = 64
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	if len(c.Phases) == 0 {
		c.Phases = DefaultPhases
	}
	for _, ph := range c.Phases {
		if !slices.Contains(DefaultPhases, ph) {
			return fmt.Errorf("loadgen: unknown phase %q (have %s)", ph, strings.Join(DefaultPhases, ", "))
		}
	}
	if c.RequestRate <= 0 {
		c.RequestRate = 2000
	}
	if c.RequestDuration <= 0 {
		c.RequestDuration = 10 * time.Second
	}
	if c.RequestBiz == 0 {
		c.RequestBiz = 1
	}
	if c.RequestSenders <= 0 {
		c.RequestSenders = 256
	}
	if c.GroupSize <= 0 {
		c.GroupSize = 1000
	}
	if c.GroupRate <= 0 {
		c.GroupRate = 10
	}
	if c.GroupDuration <= 0 {
		c.GroupDuration = 10 * time.Second
	}
	if c.GroupBiz == 0 {
		c.GroupBiz = 1
	}
	if c.FanoutPushes <= 0 {
		c.FanoutPushes = 5
	}
	if c.DevicePrefix == "" {
		c.DevicePrefix = "lg-" + strconv.FormatInt(time.Now().Unix(), 36) + "-"
	}
	if c.Transport == "" {
		c.Transport = "tcp"
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ProgressPeriod <= 0 {
		c.ProgressPeriod = 2 * time.Second
	}
	for _, s := range c.Sources {
		if net.ParseIP(s) == nil {
			return fmt.Errorf("loadgen: source address %q is not an IP", s)
		}
	}
	return nil
}

type gen struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client

	clients   []*client.Client
	connected atomic.Int64
	everUp    atomic.Int64

	errMu  sync.Mutex
	errors map[string]int64

	// delivery phases
	histMu    sync.Mutex
	hist      *hdrhistogram.Histogram
	tr        atomic.Pointer[tracker] // which deliveries arrived
	delivered atomic.Int64
	dups      atomic.Int64
	lastRecv  atomic.Int64

	m *metrics // nil unless Config.MetricsAddr is set
}

// Run executes the phases (ramp, idle, push) and returns the result. It closes every connection
// it opened before returning, also when ctx ends early (the result then holds the phases done).
func Run(ctx context.Context, cfg Config) (*results.Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	g := &gen{
		cfg:    cfg,
		log:    cfg.Logger,
		http:   &http.Client{Transport: tr, Timeout: 30 * time.Second},
		errors: map[string]int64{},
	}
	defer tr.CloseIdleConnections()
	stopMetrics, err := g.startMetrics()
	if err != nil {
		return nil, err
	}
	defer stopMetrics()
	started := time.Now()
	res := &results.Result{
		Schema:    results.SchemaVersion,
		ID:        results.NewID(started, cfg.Engine, cfg.Transport),
		StartedAt: started.UTC(),
		Engine:    cfg.Engine,
		Transport: cfg.Transport,
		Config:    cfg.resultConfig(),
		Env:       results.CaptureEnv(cfg.Commit),
	}
	defer func() { res.Duration = time.Since(started).Seconds() }()
	defer g.closeAll()

	base, err := g.snapshot(ctx, true)
	if err != nil {
		return res, err
	}
	run := map[string]func(context.Context, snapshot) (results.Phase, error){
		results.PhaseRamp: g.ramp, results.PhaseIdle: g.idle, results.PhaseUpstream: g.upstream,
		results.PhasePush: g.push, results.PhaseGroup: g.group, PhaseGroupAll: g.groupAll,
		results.PhaseBroadcast: g.broadcast,
	}
	phases := append([]string{results.PhaseRamp}, slices.DeleteFunc(slices.Clone(cfg.Phases), func(s string) bool { return s == results.PhaseRamp })...)
	for _, name := range phases {
		p, err := run[name](ctx, base)
		res.Phases = append(res.Phases, p)
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			return res, err
		}
	}
	return res, nil
}

func (c *Config) resultConfig() map[string]any {
	m := map[string]any{
		"conns":            c.Conns,
		"connect_rate":     c.ConnectRate,
		"idle_s":           c.Idle.Seconds(),
		"push_rate":        c.PushRate,
		"push_duration_s":  c.PushDuration.Seconds(),
		"push_senders":     c.PushSenders,
		"gateways":         len(c.GatewayHTTP),
		"source_addresses": len(c.Sources),
		"phases":           strings.Join(c.Phases, ","),
		"request_rate":     c.RequestRate,
		"group_size":       c.GroupSize,
		"group_rate":       c.GroupRate,
		"fanout_pushes":    c.FanoutPushes,
	}
	for k, v := range c.ResultConfig {
		m[k] = v
	}
	return m
}

func (g *gen) countErr(reason string) {
	g.errMu.Lock()
	g.errors[reason]++
	g.errMu.Unlock()
	g.m.countErr(reason)
}

func (g *gen) takeErrors() map[string]int64 {
	g.errMu.Lock()
	defer g.errMu.Unlock()
	if len(g.errors) == 0 {
		return nil
	}
	m := g.errors
	g.errors = map[string]int64{}
	return m
}

// errReason classifies a client error for the per-reason counts.
func errReason(err error) string {
	var ce *client.ControlError
	var se *client.Error
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return "control_" + strconv.Itoa(ce.Status)
	case errors.As(err, &se):
		return "gateway_" + se.Code.String()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		return "reset"
	}
	return "other"
}

func (g *gen) dialer(i int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if len(g.cfg.Sources) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(g.cfg.Sources[i%len(g.cfg.Sources)])}
		// Let the kernel pick the port at connect time, per destination, instead of at bind:
		// without it one source address is capped near 28k connections in all.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return d.DialContext
}

// ramp opens Conns connections at ConnectRate and waits until they are all logged in.
func (g *gen) ramp(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseRamp, Target: g.cfg.Conns}
	g.m.setPhase(p.Name)
	start, err := g.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	t0 := time.Now()
	g.log.Info("ramp: connecting", "conns", g.cfg.Conns, "rate", g.cfg.ConnectRate)
	g.clients = make([]*client.Client, g.cfg.Conns)
	rampCtx, cancel := context.WithTimeout(ctx, g.cfg.RampTimeout)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 512) // connects in flight: stay under the accept backlog
	progress := time.NewTicker(g.cfg.ProgressPeriod)
	defer progress.Stop()
	i := 0
	for range (Pacer{Rate: g.cfg.ConnectRate, Count: g.cfg.Conns}).Run(rampCtx, t0) {
		select {
		case <-progress.C:
			g.log.Info("ramp: progress", "started", i, "connected", g.connected.Load(), "target", g.cfg.Conns)
		default:
		}
		select {
		case sem <- struct{}{}:
		case <-rampCtx.Done():
		}
		if rampCtx.Err() != nil {
			break
		}
		c, err := g.newClient(i)
		if err != nil {
			return p, err
		}
		g.clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.Connect(rampCtx)
			<-sem
			if err != nil {
				g.countErr(errReason(err))
				return
			}
		}()
		i++
	}
	wg.Wait()
	// Wait for connections still logging in (none should be: Connect returns after LOGIN_ACK).
	for g.connected.Load() < int64(g.cfg.Conns) && rampCtx.Err() == nil {
		time.Sleep(50 * time.Millisecond)
	}
	d := time.Since(t0)
	end, err := g.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	p.Duration = d.Seconds()
	p.Gateway, p.Conns = gatewayFigures(base, start, end)
	p.ConnectRate = float64(g.connected.Load()) / d.Seconds()
	p.Errors = g.takeErrors()
	g.log.Info("ramp: done", "connected", g.connected.Load(), "gateway_sessions", p.Conns, "seconds", d.Seconds(), "rate", p.ConnectRate)
	if p.Conns < g.cfg.Conns {
		return p, fmt.Errorf("loadgen: ramp reached %d of %d connections (errors: %v)", p.Conns, g.cfg.Conns, p.Errors)
	}
	return p, nil
}

func (g *gen) newClient(i int) (*client.Client, error) {
	return client.New(client.Config{
		ControlURL: g.cfg.ControlURL,
		App:        g.cfg.App,
		Secret:     g.cfg.Secret,
		Device:     g.cfg.DevicePrefix + strconv.Itoa(i),
		User:       "u" + strconv.Itoa(i),
		HTTPClient: g.http,
		Dial:       g.dialer(i),
		OnPush:     func(p client.Push) { g.onPush(i, p) },
		OnState: func(st client.State, err error) {
			g.m.onState(st, err)
			switch st {
			case client.Connected:
				g.connected.Add(1)
				g.everUp.Add(1)
			case client.Disconnected:
				g.connected.Add(-1)
			case client.Idle, client.Connecting, client.Closed:
				// not a change of what is connected
			}
		},
		Logger: g.log,
	})
}

func (g *gen) closeAll() {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range g.clients {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close()
			<-sem
		}()
	}
	wg.Wait()
}

// idle holds the connections and measures memory per connection after a forced GC.
func (g *gen) idle(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhaseIdle, Target: g.cfg.Conns}
	g.m.setPhase(p.Name)
	start, err := g.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	g.log.Info("idle: holding", "seconds", g.cfg.Idle.Seconds())
	t0 := time.Now()
	select {
	case <-time.After(g.cfg.Idle):
	case <-ctx.Done():
		return p, ctx.Err()
	}
	end, err := g.snapshot(ctx, true)
	if err != nil {
		return p, err
	}
	p.Duration = time.Since(t0).Seconds()
	p.Gateway, p.Conns = gatewayFigures(base, start, end)
	p.Errors = g.takeErrors()
	g.log.Info("idle: done", "sessions", p.Conns, "rss_per_conn", int(p.Gateway.RSSPerConn), "heap_per_conn", int(p.Gateway.HeapPerConn), "goroutines", p.Gateway.Goroutines)
	return p, nil
}

// pushAnswer mirrors the push API's answer.
type pushAnswer struct {
	Targets   int `json:"targets"`
	Delivered int `json:"delivered"`
	Forwarded int `json:"forwarded"`
	Offline   int `json:"offline"`
	Failed    int `json:"failed"`
}

const payloadPrefix = "pwlg:"

func (g *gen) onPush(ci int, p client.Push) {
	now := time.Now()
	rest, ok := bytes.CutPrefix(p.Payload, []byte(payloadPrefix))
	if !ok {
		return
	}
	seqB, tsB, ok := bytes.Cut(rest, []byte(":"))
	if !ok {
		return
	}
	seq, err1 := strconv.Atoi(string(seqB))
	ts, err2 := strconv.ParseInt(string(tsB), 10, 64)
	tr := g.tr.Load()
	if tr == nil || err1 != nil || err2 != nil || seq < 0 {
		return
	}
	idx := tr.index(seq, ci)
	if idx >= len(tr.got) {
		return
	}
	if tr.got[idx].Swap(true) {
		g.dups.Add(1)
		return
	}
	g.delivered.Add(1)
	g.lastRecv.Store(now.UnixNano())
	us := now.Sub(time.Unix(0, ts)).Microseconds()
	g.histMu.Lock()
	_ = g.hist.RecordValue(max(us, 1))
	g.histMu.Unlock()
	g.m.observeLatency(us)
}

// push sends PushRate unicast pushes per second for PushDuration through the push API, open
// loop, then waits for the deliveries.
func (g *gen) push(ctx context.Context, base snapshot) (results.Phase, error) {
	p := results.Phase{Name: results.PhasePush, Target: g.cfg.Conns}
	g.m.setPhase(p.Name)
	total := int(g.cfg.PushRate * g.cfg.PushDuration.Seconds())
	g.startTracking(total, 1)
	start, err := g.snapshot(ctx, false)
	if err != nil {
		return p, err
	}
	g.log.Info("push: sending", "rate", g.cfg.PushRate, "seconds", g.cfg.PushDuration.Seconds(), "messages", total)
	t0 := time.Now()
	var sent, offline, failed, accepted atomic.Int64
	type job struct {
		seq int
		at  time.Time
	}
	jobs := make(chan job, total)
	var wg sync.WaitGroup
	for w := 0; w < g.cfg.PushSenders; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				dev := g.cfg.DevicePrefix + strconv.Itoa(j.seq%g.cfg.Conns)
				payload := payloadPrefix + strconv.Itoa(j.seq) + ":" + strconv.FormatInt(j.at.UnixNano(), 10)
				ans, err := g.pushOne(ctx, j.seq, dev, payload)
				sent.Add(1)
				if err != nil {
					failed.Add(1)
					g.countErr("push_api")
					g.log.Debug("push failed", "err", err)
					continue
				}
				accepted.Add(int64(ans.Delivered + ans.Forwarded))
				offline.Add(int64(ans.Offline))
				failed.Add(int64(ans.Failed))
			}
		}()
	}
	pctx, cancel := context.WithCancel(ctx)
	n := 0
	progress := time.NewTicker(g.cfg.ProgressPeriod)
	for at := range (Pacer{Rate: g.cfg.PushRate, Count: total}).Run(pctx, t0) {
		jobs <- job{seq: n, at: at}
		n++
		select {
		case <-progress.C:
			g.log.Info("push: progress", "sent", sent.Load(), "delivered", g.delivered.Load(), "of", total)
		default:
		}
	}
	progress.Stop()
	cancel()
	close(jobs)
	wg.Wait()
	p.Sent, p.Offline, p.Failed = sent.Load(), offline.Load(), failed.Load()
	err = g.finishPhase(ctx, &p, base, start, t0, time.Now(), accepted.Load())
	return p, err
}

func (g *gen) pushOne(ctx context.Context, seq int, device, payload string) (pushAnswer, error) {
	var ans pushAnswer
	body, _ := json.Marshal(map[string]any{"biz": g.cfg.PushBiz, "devices": []string{device}, "payload": payload})
	base := g.cfg.GatewayHTTP[seq%len(g.cfg.GatewayHTTP)]
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/push", bytes.NewReader(body))
	if err != nil {
		return ans, err
	}
	req.Header.Set("Authorization", "Bearer "+g.cfg.PushKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := g.http.Do(req)
	if err != nil {
		return ans, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return ans, err
	}
	if resp.StatusCode != http.StatusOK {
		return ans, fmt.Errorf("push API: %s: %s", resp.Status, strings.TrimSpace(string(b)))
	}
	return ans, json.Unmarshal(b, &ans)
}

func latencyOf(h *hdrhistogram.Histogram) *results.Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return &results.Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}
