// Package gateway is the gateway node: it wires the session layer, the codec and the push path to
// an engine. It implements engines.Handler, so any registered engine carries it unchanged, and it
// serves the push API and the instance's health, metrics and statistics over HTTP.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/push"
	"github.com/pushwire/pushwire/core/session"
	"github.com/pushwire/pushwire/core/timewheel"
	"github.com/pushwire/pushwire/engines"
)

// Identity is what a verified login token says about the connection.
type Identity struct {
	App, Device, User string
	ExpiresAt         time.Time
}

// Verifier checks a login token without calling the control layer.
type Verifier interface {
	Verify(token string, now time.Time) (Identity, error)
}

// Apps authenticates businesses on the push API.
type Apps interface {
	// AppByPushKey returns the app whose push key is key.
	AppByPushKey(key string) (app string, ok bool)
}

// Config configures a Node. The zero value of each field means its documented default.
type Config struct {
	// Node is the instance ID sent in LOGIN_ACK. Default: hostname-pid.
	Node string
	// Engine and Transport name what carries the node, for stats and metrics only.
	Engine, Transport string
	// Heartbeat is the interval clients are told to PING at. Default 60s.
	Heartbeat time.Duration
	// IdleTimeout closes a logged-in connection that sent nothing for this long. Default
	// 3 × Heartbeat.
	IdleTimeout time.Duration
	// LoginTimeout closes a connection with no successful LOGIN within it. Default 10s.
	LoginTimeout time.Duration
	// MaxBody is the largest frame body accepted and pushed. Default frame.DefaultMaxBody.
	MaxBody int
	// MaxConnsPerUser closes a user's oldest connection past this many. Default 8; negative:
	// no limit.
	MaxConnsPerUser int
	// WheelTick is the timing wheel's granularity. Default 1s (tests use less).
	WheelTick time.Duration
	// Businesses configures each business (biz ID → backend, pool, notify URL, join policy,
	// slow-consumer policy). A REQUEST, JOIN or LEAVE of a biz not listed is UNKNOWN_BIZ.
	Businesses map[uint16]forward.Biz
	// RateLimit is the most REQUEST, JOIN and LEAVE frames one connection may send per second;
	// past it (after Burst) they are answered RATE_LIMITED. PING and PUSH_ACK are never limited.
	// Default 50; negative: no limit.
	RateLimit float64
	// RateBurst is how many such frames may arrive at once above the rate. Default 100.
	RateBurst int
	// AckTTL is how long an at-least-once push waits for PUSH_ACK when the push names no ttl_ms.
	// Default 60s.
	AckTTL time.Duration
	// MaxPending bounds the unacknowledged messages kept per device; the oldest is dropped
	// (counted) past it. Default 256.
	MaxPending int
	// DrainWindow is how long Drain spreads its GOAWAYs over. Default 10s.
	DrainWindow time.Duration
	// RetryMs is the retry_ms a GOAWAY tells clients, before jitter (±50%). Default 1000.
	RetryMs int
	// FanoutWorkers is the number of downlink fan-out goroutines. Default 2 × GOMAXPROCS.
	FanoutWorkers int
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.Node == "" {
		host, _ := os.Hostname()
		c.Node = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Engine == "" {
		c.Engine = "unknown"
	}
	if c.Transport == "" {
		c.Transport = "tcp"
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 60 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 3 * c.Heartbeat
	}
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 10 * time.Second
	}
	if c.MaxBody <= 0 {
		c.MaxBody = frame.DefaultMaxBody
	}
	if c.MaxConnsPerUser == 0 {
		c.MaxConnsPerUser = 8
	}
	if c.WheelTick <= 0 {
		c.WheelTick = time.Second
	}
	if c.RateLimit == 0 {
		c.RateLimit = 50
	}
	if c.RateBurst <= 0 {
		c.RateBurst = 100
	}
	if c.AckTTL <= 0 {
		c.AckTTL = time.Minute
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 256
	}
	if c.DrainWindow <= 0 {
		c.DrainWindow = 10 * time.Second
	}
	if c.RetryMs <= 0 {
		c.RetryMs = 1000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports a setting that cannot work, naming it.
func (c *Config) Validate() error {
	switch {
	case c.MaxBody > frame.MaxBodyLimit:
		return fmt.Errorf("gateway: max body %d over the limit %d", c.MaxBody, frame.MaxBodyLimit)
	case c.IdleTimeout < c.Heartbeat:
		return fmt.Errorf("gateway: idle timeout %v shorter than the heartbeat %v", c.IdleTimeout, c.Heartbeat)
	case c.WheelTick > c.LoginTimeout:
		return fmt.Errorf("gateway: wheel tick %v longer than the login timeout %v", c.WheelTick, c.LoginTimeout)
	}
	return nil
}

// Node is one gateway instance's engine-independent core.
type Node struct {
	cfg      Config
	log      *slog.Logger
	verifier Verifier
	apps     Apps
	lim      frame.Limits
	table    *session.Table
	groups   *session.Groups
	wheel    *timewheel.Wheel[*session.Session]
	fanout   *push.Fanout[*session.Session]
	fwd      *forward.Forwarder
	notifier *forward.Notifier // nil when no business has a notify URL
	acks     *ackStore
	biz      map[uint16]forward.Biz // with defaults applied; read-only
	m        *metrics
	started  time.Time
	hb       string // heartbeat seconds, for LOGIN_ACK
	rateIvl  int64  // nanoseconds between limited frames; 0: no limit
	rateTol  int64  // burst tolerance, nanoseconds
	stop     chan struct{}
	bg       sync.WaitGroup

	conns    atomic.Int64 // open transport connections
	msgSeq   atomic.Uint64
	lastGen  atomic.Uint64
	draining atomic.Bool

	forcedMu sync.Mutex // serializes forced collections and guards forced
	forced   Stats      // what collections forced by Stats(true) cost, subtracted from readings
}

// The engines.Handler the node implements.
var _ engines.Handler = (*Node)(nil)

// New returns a node. Call Start before handing it to an engine and Stop after the engine shut
// down.
func New(cfg Config, v Verifier, apps Apps) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if v == nil || apps == nil {
		return nil, errors.New("gateway: a token verifier and an app registry are required")
	}
	fcfg := forward.Config{Biz: cfg.Businesses, Logger: cfg.Logger}
	fwd, err := forward.New(fcfg)
	if err != nil {
		return nil, fmt.Errorf("gateway: businesses: %w", err)
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.Node),
		verifier: v,
		apps:     apps,
		lim:      frame.Limits{MaxBody: cfg.MaxBody},
		table:    session.NewTable(max(cfg.MaxConnsPerUser, 0)),
		groups:   session.NewGroups(),
		fanout:   push.New[*session.Session](push.Config{Workers: cfg.FanoutWorkers}),
		fwd:      fwd,
		biz:      make(map[uint16]forward.Biz, len(cfg.Businesses)),
		started:  time.Now(),
		hb:       strconv.Itoa(int((cfg.Heartbeat + time.Second - 1) / time.Second)),
		stop:     make(chan struct{}),
	}
	for id := range cfg.Businesses {
		n.biz[id], _ = fwd.Biz(id)
	}
	if urls := fcfg.NotifyURLs(); len(urls) > 0 {
		if n.notifier, err = forward.NewNotifier(forward.NotifyConfig{URLs: urls, Logger: cfg.Logger}); err != nil {
			_ = fwd.Close(context.Background())
			return nil, fmt.Errorf("gateway: businesses: %w", err)
		}
	}
	if cfg.RateLimit > 0 {
		n.rateIvl = int64(float64(time.Second) / cfg.RateLimit)
		n.rateTol = n.rateIvl * int64(cfg.RateBurst)
	}
	n.acks = newAckStore(cfg.MaxPending)
	n.m = newMetrics(n)
	slots := int((cfg.IdleTimeout+cfg.LoginTimeout)/cfg.WheelTick) + 2
	n.wheel = timewheel.New(cfg.WheelTick, min(slots, 1<<16), n.expire)
	return n, nil
}

// Start starts the node's timing wheel, fan-out workers and the expiry of unacknowledged pushes.
func (n *Node) Start() {
	n.wheel.Start()
	n.fanout.Start()
	n.bg.Add(1)
	go n.expireAcks()
}

// Stop stops what Start started and the forward pools and notifier, waiting for the requests in
// flight until ctx ends. Call it after the engine has shut down.
func (n *Node) Stop(ctx context.Context) error {
	close(n.stop)
	n.bg.Wait()
	n.wheel.Stop()
	n.fanout.Stop()
	err := n.fwd.Close(ctx)
	if n.notifier != nil {
		err = errors.Join(err, n.notifier.Close(ctx))
	}
	return err
}

// Config returns the node's effective configuration.
func (n *Node) Config() Config { return n.cfg }

// Sessions is the session table.
func (n *Node) Sessions() *session.Table { return n.table }

// now is the node's coarse clock in unix nanoseconds: the wheel's last tick.
func (n *Node) now() int64 { return n.wheel.Now().UnixNano() }

// OnOpen implements engines.Handler.
func (n *Node) OnOpen(c engines.Conn) {
	now := time.Now()
	s := session.New(c, now.UnixNano())
	c.SetContext(s)
	n.conns.Add(1)
	n.m.conns.Inc()
	n.wheel.Add(now.Add(n.cfg.LoginTimeout), s)
	if n.draining.Load() {
		// Draining: no new sessions. The client reconnects through the control layer.
		var meta frame.Meta
		meta = frame.AppendMetaString(meta, "reason", "shutting down")
		meta = frame.AppendMetaString(meta, "retry_ms", strconv.Itoa(n.cfg.RetryMs))
		n.m.goaways.Inc()
		_ = n.send(s, frame.Header{Type: frame.TypeGoaway, Code: frame.CodeShuttingDown}, meta, nil)
		n.kill(s, frame.CodeShuttingDown)
	}
}

// OnData implements engines.Handler: it decodes every whole frame in in and leaves a partial one.
func (n *Node) OnData(c engines.Conn, in []byte) (int, error) {
	s, _ := c.Context().(*session.Session)
	if s == nil || s.State() == session.StateClosed {
		return len(in), nil
	}
	consumed := 0
	for consumed < len(in) {
		f, k, err := frame.Decode(in[consumed:], n.lim)
		if errors.Is(err, frame.ErrShort) {
			break
		}
		if err != nil {
			var fe *frame.Error
			errors.As(err, &fe)
			n.m.protocolErrors.Inc()
			n.fail(s, fe.Code, fe.Msg)
			return len(in), nil
		}
		consumed += k
		n.m.framesIn[f.Type].Inc()
		if code := session.Check(s.State(), f.Type); code != frame.CodeOK {
			n.m.protocolErrors.Inc()
			n.fail(s, code, f.Type.String()+" not accepted in state "+s.State().String())
			return len(in), nil
		}
		s.Touch(n.now())
		n.handle(s, &f)
		if s.State() == session.StateClosed {
			return len(in), nil
		}
	}
	return consumed, nil
}

// OnClose implements engines.Handler.
func (n *Node) OnClose(c engines.Conn, err error) {
	s, _ := c.Context().(*session.Session)
	n.conns.Add(-1)
	n.m.conns.Dec()
	if s == nil {
		return
	}
	s.SetState(session.StateClosed)
	reason := s.CloseCode()
	label := "transport"
	switch {
	case reason != frame.CodeOK:
		label = reason.String()
	case errors.Is(err, engines.ErrWriteTimeout):
		label = frame.CodeSlowConsumer.String()
	case err == nil:
		label = "local"
	}
	n.m.closes.WithLabelValues(label).Inc()
	n.groups.LeaveAll(s)
	if n.table.Remove(s) {
		n.notify(forward.EventDisconnect, s, label)
	}
	n.log.Debug("connection closed", "conn", c.ID(), "device", s.Device, "reason", label, "err", err)
}

func (n *Node) handle(s *session.Session, f *frame.Frame) {
	switch f.Type {
	case frame.TypeLogin:
		n.login(s, f)
	case frame.TypePing:
		n.send(s, frame.Header{Type: frame.TypePong, Seq: f.Seq}, nil, nil)
	case frame.TypePushAck:
		n.m.pushAcks.Inc()
		if id, ok := f.Meta.Get("id"); ok {
			n.acks.ack(s.App, s.Device, id)
		}
	case frame.TypeRequest, frame.TypeJoin, frame.TypeLeave:
		if !n.allow(s) {
			n.m.rateLimited.Inc()
			n.respond(s, f, frame.CodeRateLimited, "over "+strconv.FormatFloat(n.cfg.RateLimit, 'g', -1, 64)+" requests/s")
			return
		}
		if f.Type == frame.TypeRequest {
			n.request(s, f)
		} else {
			n.joinLeave(s, f)
		}
	default:
		// session.Check lets nothing else through.
		n.fail(s, frame.CodeBadFrame, "unexpected "+f.Type.String())
	}
}

func (n *Node) login(s *session.Session, f *frame.Frame) {
	if !s.Transition(session.StateConnected, session.StateAuthenticating) {
		return
	}
	now := time.Now()
	tok, ok := f.Meta.Get("token")
	if !ok || len(tok) == 0 {
		n.loginFailed(s, f.Seq, "missing", "token missing")
		return
	}
	id, err := n.verifier.Verify(string(tok), now)
	if err != nil {
		n.loginFailed(s, f.Seq, "invalid", "token rejected: "+err.Error())
		return
	}
	if d, ok := f.Meta.Get("device"); ok && string(d) != id.Device {
		n.loginFailed(s, f.Seq, "mismatch", "token is for another device")
		return
	}
	if a, ok := f.Meta.Get("app"); ok && string(a) != id.App {
		n.loginFailed(s, f.Seq, "mismatch", "token is for another app")
		return
	}
	s.App, s.Device, s.User = id.App, id.Device, id.User
	s.LoginAt = now.UnixNano()
	s.Gen = n.nextGen(uint64(now.UnixNano()))
	if !s.Transition(session.StateAuthenticating, session.StateActive) {
		return // timed out meanwhile
	}
	for _, old := range n.table.Add(s) {
		n.m.evictions.Inc()
		meta := frame.AppendMetaString(nil, "reason", "evicted: a newer connection of the same device or user")
		n.send(old, frame.Header{Type: frame.TypeGoaway, Code: frame.CodeEvicted}, meta, nil)
		n.kill(old, frame.CodeEvicted)
	}
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "conn", strconv.FormatUint(s.ID(), 10))
	meta = frame.AppendMetaString(meta, "hb", n.hb)
	meta = frame.AppendMetaString(meta, "node", n.cfg.Node)
	n.send(s, frame.Header{Type: frame.TypeLoginAck, Seq: f.Seq}, meta, nil)
	n.m.logins.WithLabelValues("ok").Inc()
	if n.draining.Load() {
		// Logged in while the drain's GOAWAYs were going out: send this one its own.
		n.goaway(s)
	}
	n.notify(forward.EventConnect, s, "")
	n.resendPending(s)
}

// notify posts a connection state change to the businesses' notify URLs, never blocking.
func (n *Node) notify(typ string, s *session.Session, reason string) {
	if n.notifier == nil || s.LoginAt == 0 {
		return
	}
	n.notifier.Notify(forward.Event{Type: typ, App: s.App, Device: s.Device, User: s.User, Conn: s.ID(),
		Node: n.cfg.Node, Gen: s.Gen, Reason: reason, At: time.Now().UnixMilli()})
}

// allow is the connection's inbound rate limit (GCRA): it reports whether one more limited frame
// may pass now.
func (n *Node) allow(s *session.Session) bool {
	if n.rateIvl == 0 {
		return true
	}
	now := time.Now().UnixNano()
	tat := max(s.RateTAT, now)
	if tat-now > n.rateTol {
		return false
	}
	s.RateTAT = tat + n.rateIvl
	return true
}

// respond answers a REQUEST, JOIN or LEAVE with RESPONSE: same biz and seq, msg on failure.
func (n *Node) respond(s *session.Session, f *frame.Frame, code frame.Code, msg string) {
	var meta frame.Meta
	if msg != "" {
		meta = frame.AppendMetaString(nil, "msg", msg)
	}
	n.send(s, frame.Header{Type: frame.TypeResponse, Code: code, Biz: f.Biz, Seq: f.Seq}, meta, nil)
}

// request hands a REQUEST to its business's forward pool; the answer comes back as RESPONSE from
// a pool worker.
func (n *Node) request(s *session.Session, f *frame.Frame) {
	n.m.requests.Inc()
	biz, seq := f.Biz, f.Seq
	err := n.fwd.Submit(&forward.Request{
		App: s.App, Device: s.Device, User: s.User, Biz: biz, Conn: s.ID(), Node: n.cfg.Node, Seq: seq,
		Meta: f.Meta, Body: f.Body,
		Done: func(r forward.Response) {
			var meta frame.Meta
			if r.Msg != "" {
				meta = frame.AppendMetaString(nil, "msg", r.Msg)
			}
			n.m.responses.WithLabelValues(r.Code.String()).Inc()
			_ = n.send(s, frame.Header{Type: frame.TypeResponse, Code: r.Code, Biz: biz, Seq: seq}, meta, r.Body)
		},
	})
	if err != nil {
		var fe *forward.Error
		code := frame.CodeBackendError
		if errors.As(err, &fe) {
			code = fe.Code
		}
		n.m.responses.WithLabelValues(code.String()).Inc()
		n.respond(s, f, code, err.Error())
	}
}

// maxGroupLen bounds a group name.
const maxGroupLen = 128

// joinLeave serves JOIN and LEAVE: the biz must be configured and allow client joins.
func (n *Node) joinLeave(s *session.Session, f *frame.Frame) {
	b, ok := n.biz[f.Biz]
	switch {
	case !ok:
		n.respond(s, f, frame.CodeUnknownBiz, "no backend configured for biz "+strconv.Itoa(int(f.Biz)))
		return
	case !b.AllowJoin:
		n.respond(s, f, frame.CodeForbidden, "biz "+strconv.Itoa(int(f.Biz))+" does not let clients join groups")
		return
	}
	g := f.Meta.GetString("group")
	if g == "" || len(g) > maxGroupLen {
		n.respond(s, f, frame.CodeBadFrame, "meta group must be 1.."+strconv.Itoa(maxGroupLen)+" bytes")
		return
	}
	if f.Type == frame.TypeJoin {
		n.groups.Join(s, g)
	} else {
		n.groups.Leave(s, g)
	}
	n.respond(s, f, frame.CodeOK, "")
}

// nextGen returns a connection generation above every one this node handed out and at least
// floor (the login time), so generations increase per device across restarts too.
func (n *Node) nextGen(floor uint64) uint64 {
	for {
		last := n.lastGen.Load()
		g := max(last+1, floor)
		if n.lastGen.CompareAndSwap(last, g) {
			return g
		}
	}
}

func (n *Node) loginFailed(s *session.Session, seq uint32, result, msg string) {
	n.m.logins.WithLabelValues(result).Inc()
	meta := frame.AppendMetaString(nil, "msg", msg)
	n.send(s, frame.Header{Type: frame.TypeLoginAck, Code: frame.CodeAuthFailed, Seq: seq}, meta, nil)
	n.kill(s, frame.CodeAuthFailed)
}

// fail answers a protocol violation with ERROR and closes the connection.
func (n *Node) fail(s *session.Session, code frame.Code, msg string) {
	meta := frame.AppendMetaString(nil, "msg", msg)
	n.send(s, frame.Header{Type: frame.TypeError, Code: code}, meta, nil)
	n.kill(s, code)
}

// kill moves s to CLOSED with code as the reason and closes its connection; what was queued
// before (an ERROR, a GOAWAY) is still flushed by the engine.
func (n *Node) kill(s *session.Session, code frame.Code) {
	s.SetCloseCode(code)
	s.SetState(session.StateClosed)
	_ = s.Conn.Close()
}

// send encodes one frame into a fresh buffer and queues it. The queue overflowing closes the
// connection as a slow consumer.
func (n *Node) send(s *session.Session, h frame.Header, meta frame.Meta, body []byte) error {
	f := frame.Frame{Header: h, Meta: meta, Body: body}
	buf := frame.Append(make([]byte, 0, frame.HeaderLen+len(meta)+len(body)), &f)
	return n.write(s, h.Type, buf)
}

func (n *Node) write(s *session.Session, t frame.Type, buf []byte) error {
	err := s.Conn.Write(buf)
	switch {
	case err == nil:
		n.m.framesOut[t].Inc()
	case errors.Is(err, engines.ErrQueueFull):
		n.m.slowConsumers.Inc()
		n.kill(s, frame.CodeSlowConsumer)
	}
	return err
}

// expire runs on the wheel for each due session: the login timeout before login, the idle
// timeout after. A session has one wheel entry at a time; activity only stamps LastSeen, and the
// entry is re-armed here at the real deadline.
func (n *Node) expire(now time.Time, s *session.Session) {
	st := s.State()
	switch st {
	case session.StateClosed:
		return
	case session.StateConnected, session.StateAuthenticating:
		n.m.timeouts.WithLabelValues("login").Inc()
		n.fail(s, frame.CodeLoginTimeout, "no login within "+n.cfg.LoginTimeout.String())
		return
	case session.StateActive, session.StateDraining:
		deadline := time.Unix(0, s.LastSeen()).Add(n.cfg.IdleTimeout)
		if !now.Before(deadline) {
			n.m.timeouts.WithLabelValues("idle").Inc()
			n.fail(s, frame.CodeIdleTimeout, "no frame within "+n.cfg.IdleTimeout.String())
			return
		}
		n.wheel.Add(deadline, s)
	}
}
