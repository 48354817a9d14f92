// Package gateway is the gateway node: it wires the session layer, the codec and the push path to
// an engine. It implements engines.Handler, so any registered engine carries it unchanged, and it
// serves the push API and the instance's health, metrics and statistics over HTTP.
package gateway

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/frame"
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
	wheel    *timewheel.Wheel[*session.Session]
	m        *metrics
	started  time.Time
	hb       string // heartbeat seconds, for LOGIN_ACK

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
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.Node),
		verifier: v,
		apps:     apps,
		lim:      frame.Limits{MaxBody: cfg.MaxBody},
		table:    session.NewTable(max(cfg.MaxConnsPerUser, 0)),
		started:  time.Now(),
		hb:       strconv.Itoa(int((cfg.Heartbeat + time.Second - 1) / time.Second)),
	}
	n.m = newMetrics(n)
	slots := int((cfg.IdleTimeout+cfg.LoginTimeout)/cfg.WheelTick) + 2
	n.wheel = timewheel.New(cfg.WheelTick, min(slots, 1<<16), n.expire)
	return n, nil
}

// Start starts the node's timing wheel.
func (n *Node) Start() { n.wheel.Start() }

// Stop stops the timing wheel. Call it after the engine has shut down.
func (n *Node) Stop() { n.wheel.Stop() }

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
	n.table.Remove(s)
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
	case frame.TypeRequest, frame.TypeJoin, frame.TypeLeave:
		// No business is configured on this node: every biz is unknown.
		meta := frame.AppendMetaString(nil, "msg", "no backend configured for biz "+strconv.Itoa(int(f.Biz)))
		n.send(s, frame.Header{Type: frame.TypeResponse, Code: frame.CodeUnknownBiz, Biz: f.Biz, Seq: f.Seq}, meta, nil)
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
