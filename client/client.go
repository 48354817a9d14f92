// Package client is the pushwire Go client SDK. A Client asks the control layer for a token and
// endpoints, logs in to a gateway, keeps the connection alive with heartbeats, delivers pushes
// (acknowledging and de-duplicating at-least-once ones), sends requests, and — under Run —
// reconnects with exponential backoff and full jitter.
//
// A Client holds at most one connection. Its goroutines: the reader of the live connection (one),
// and, for an instant at each heartbeat, the heartbeat timer's callback. Run's loop runs on the
// caller's goroutine. Nothing else is started per client, and buffers are allocated on first use.
//
// Callback order for one connection attempt (OnState, OnPush):
//
//	Connecting(previous failure or nil) ─┬─▶ (attempt failed: its error is returned, no callback)
//	                                     └─▶ Connected ─▶ OnPush* ─▶ Disconnected(reason)
//	Close ─▶ Closed(nil); Run returning for another reason ─▶ Closed(Run's error)
//
// Disconnected follows exactly one Connected, so the two can be counted against each other.
// Connecting and Connected run on the goroutine that called Connect (or Run); OnPush and
// Disconnected on the connection's reader goroutine.
//
// Lock order: Client.mu before conn.mu; conn.wmu before conn.mu. No lock is held while a callback
// runs or while the socket is read.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/internal/transport"
)

// Errors returned by a Client. Connection failures are also reported as *Error (sent by the
// gateway), *ControlError (sent by the control layer) or *frame.Error (a malformed frame).
var (
	ErrClosed           = errors.New("client: closed")
	ErrNotConnected     = errors.New("client: not connected")
	ErrConnected        = errors.New("client: already connected or connecting")
	ErrRunning          = errors.New("client: Run is already running")
	ErrConnLost         = errors.New("client: connection lost")
	ErrHeartbeatTimeout = errors.New("client: heartbeat timeout: nothing received from the gateway")
	ErrNoEndpoint       = errors.New("client: no endpoint with a supported protocol")
)

// Defaults (see Config).
const (
	DefaultPlatform   = "native"
	DefaultNetwork    = "wifi"
	DefaultSDK        = "pushwire-go/1"
	DefaultBackoffMin = 200 * time.Millisecond
	DefaultBackoffMax = 30 * time.Second
	DefaultTimeout    = 10 * time.Second
	DefaultHeartbeat  = 60 * time.Second // when neither the gateway nor control names one

	stableAfter = time.Minute // a connection up this long resets the backoff
	missedBeats = 3           // heartbeats without any frame before the connection is dead
)

// Config configures a Client. The zero value of an optional field means its documented default;
// defaults are applied in one place (setDefaults).
type Config struct {
	ControlURL string // required, e.g. "http://127.0.0.1:7100"
	App        string // required
	Secret     string // required: the app secret that signs the control call
	Device     string // required
	User       string // optional

	Platform string // default "native"
	Network  string // default "wifi"
	SDK      string // default "pushwire-go/1"

	// HTTPClient makes the control call. Default: one shared keep-alive client with a 10s timeout.
	HTTPClient *http.Client
	// Dial opens the TCP connection under the tcp, tls, ws and wss transports (QUIC's UDP
	// socket is LocalAddr's). Default: net.Dialer{Timeout: 10s}.DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Transports are the protocols this client will use ("tcp", "tls", "ws", "wss", "quic").
	// They filter control's endpoints and do not reorder them: the endpoints are tried in
	// control's order, skipping those whose protocol is not listed. Default: all five
	// (transport.Protocols). An unknown or repeated name is an error naming the field.
	Transports []string
	// TLS holds the roots and server name that verify the gateway under tls, wss and quic. It is
	// cloned per connection; ALPN and the TLS 1.3 minimum are set by the SDK. nil: the system
	// roots and the endpoint's host as the server name.
	TLS *tls.Config
	// WSPath is the request path of the WebSocket upgrade (ws, wss). Default "/ws".
	WSPath string
	// Origin is the Origin header of the WebSocket upgrade, optional.
	Origin string
	// LocalAddr is the source IP of QUIC's UDP socket, optional (TCP's comes from Dial).
	LocalAddr string

	// OnPush is called for each push on the connection's reader goroutine, in order. It must not
	// block long (nothing else is read meanwhile) and must not wait for a Request's answer. The
	// Push is the callee's to keep.
	OnPush func(Push)
	// OnState is called at each state change (see the package comment for the order). Optional.
	// It must not block long and must not call Connect or Run.
	OnState func(State, error)

	// Heartbeat is the PING interval. 0: the gateway's hb from LOGIN_ACK (then control's
	// heartbeat_s, then 60s).
	Heartbeat time.Duration
	// Reconnect backoff for Run: exponential from BackoffMin to BackoffMax with full jitter, reset
	// after a connection that stayed up over a minute. Defaults 200ms and 30s.
	BackoffMin, BackoffMax time.Duration
	// Timeout bounds each endpoint's dial with its handshakes (TLS, WebSocket upgrade, QUIC),
	// the login exchange and each write. Default 10s.
	Timeout time.Duration
	// MaxBody is the largest frame body accepted from the gateway and sent in a request.
	// Default frame.DefaultMaxBody; at most frame.MaxBodyLimit.
	MaxBody int
	// Logger receives debug logs per connection and warnings for permanent failures.
	// Default slog.Default().
	Logger *slog.Logger
}

var (
	defaultDialer     = net.Dialer{Timeout: DefaultTimeout}
	defaultHTTPClient = sync.OnceValue(func() *http.Client {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConns = 1024
		t.MaxIdleConnsPerHost = 256 // many clients in one process share the control host
		return &http.Client{Transport: t, Timeout: DefaultTimeout}
	})
)

func (cfg *Config) setDefaults() {
	for len(cfg.ControlURL) > 0 && cfg.ControlURL[len(cfg.ControlURL)-1] == '/' {
		cfg.ControlURL = cfg.ControlURL[:len(cfg.ControlURL)-1]
	}
	if cfg.Platform == "" {
		cfg.Platform = DefaultPlatform
	}
	if cfg.Network == "" {
		cfg.Network = DefaultNetwork
	}
	if cfg.SDK == "" {
		cfg.SDK = DefaultSDK
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient()
	}
	if cfg.Dial == nil {
		cfg.Dial = defaultDialer.DialContext
	}
	if len(cfg.Transports) == 0 {
		cfg.Transports = transport.Protocols
	}
	cfg.Transports = append([]string(nil), cfg.Transports...) // the caller may reuse its slice
	if cfg.WSPath == "" {
		cfg.WSPath = transport.DefaultPath
	}
	if cfg.BackoffMin == 0 {
		cfg.BackoffMin = DefaultBackoffMin
	}
	if cfg.BackoffMax == 0 {
		cfg.BackoffMax = DefaultBackoffMax
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxBody == 0 {
		cfg.MaxBody = frame.DefaultMaxBody
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
}

// validate checks a Config after setDefaults. Each error names the field.
func (cfg *Config) validate() error {
	for _, f := range []struct{ name, v string }{
		{"ControlURL", cfg.ControlURL}, {"App", cfg.App}, {"Secret", cfg.Secret}, {"Device", cfg.Device},
	} {
		if f.v == "" {
			return fmt.Errorf("client: Config.%s is required", f.name)
		}
	}
	u, err := url.Parse(cfg.ControlURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("client: Config.ControlURL %q is not an http(s) URL", cfg.ControlURL)
	}
	if err := transport.Check("client: Config.Transports", cfg.Transports); err != nil {
		return err
	}
	if cfg.WSPath[0] != '/' {
		return fmt.Errorf("client: Config.WSPath %q does not start with /", cfg.WSPath)
	}
	if cfg.LocalAddr != "" && net.ParseIP(cfg.LocalAddr) == nil {
		return fmt.Errorf("client: Config.LocalAddr %q is not an IP address", cfg.LocalAddr)
	}
	switch {
	case cfg.Heartbeat < 0:
		return errors.New("client: Config.Heartbeat is negative")
	case cfg.BackoffMin < 0:
		return errors.New("client: Config.BackoffMin is negative")
	case cfg.BackoffMax < cfg.BackoffMin:
		return errors.New("client: Config.BackoffMax is below BackoffMin")
	case cfg.Timeout < 0:
		return errors.New("client: Config.Timeout is negative")
	case cfg.MaxBody < 0 || cfg.MaxBody > frame.MaxBodyLimit:
		return fmt.Errorf("client: Config.MaxBody %d is outside 0..%d", cfg.MaxBody, frame.MaxBodyLimit)
	}
	return nil
}

// State is a Client's connection state.
type State uint8

// States, in the order a connection goes through them.
const (
	Idle         State = iota // never connected
	Connecting                // asking control, dialing, logging in
	Connected                 // logged in
	Disconnected              // the connection ended; the error says why
	Closed                    // Close was called or Run returned
)

var stateNames = [...]string{"idle", "connecting", "connected", "disconnected", "closed"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Push is one message from the gateway.
type Push struct {
	Biz      uint16
	Seq      uint32 // increasing per connection
	ID       string // the message ID (meta id)
	Group    string // the group it was sent to, if any (meta group)
	Payload  []byte // a copy the callee owns
	Received time.Time
}

// Response answers a Request. A code other than OK is a business or gateway failure, not an error
// of Request: see Err.
type Response struct {
	Code frame.Code
	Msg  string     // meta msg, set on failure
	Meta frame.Meta // a copy
	Body []byte     // a copy
}

// Err is nil when r.Code is OK, else an *Error carrying the code and message.
func (r *Response) Err() error {
	if r.Code == frame.CodeOK {
		return nil
	}
	return &Error{Code: r.Code, Msg: r.Msg, Frame: frame.TypeResponse}
}

// Error is a failure sent by the gateway: a refused LOGIN_ACK, an ERROR frame, a GOAWAY (or a
// failed RESPONSE, through Response.Err). errors.As finds it through wrapping.
type Error struct {
	Code  frame.Code
	Msg   string
	Frame frame.Type // the frame that carried it: LOGIN_ACK, ERROR, GOAWAY or RESPONSE
}

func (e *Error) Error() string {
	s := "client: gateway " + e.Frame.String() + ": " + e.Code.String()
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

// opError is a local failure during one step of a connection (dial, login, read, write, control).
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string { return "client: " + e.op + ": " + e.err.Error() }
func (e *opError) Unwrap() error { return e.err }

// Stats are a Client's counters since New.
type Stats struct {
	Connects   uint64 // successful logins
	Reconnects uint64 // successful logins by Run after a lost connection
	Pushes     uint64 // PUSH frames received, duplicates included
	Duplicates uint64 // acked pushes whose ID was seen before: acked again, not delivered
	Gaps       uint64 // pushes whose seq skipped past the previous one's successor on a connection
	Pings      uint64 // PINGs sent
	Pongs      uint64 // PONGs received
	// Errors counts failed attempts and lost connections by reason: a gateway code name
	// ("AUTH_FAILED", "IDLE_TIMEOUT"…), "goaway", "control_<status>", "control", "dial" (the
	// connect and its handshakes: TLS, WebSocket upgrade, QUIC), "login", "read", "write", "eof",
	// "protocol", "heartbeat_timeout", "no_endpoint", "other". Closes asked for locally (Close,
	// Run's context) are not counted.
	Errors map[string]uint64
}

// Client is one device's connection to pushwire. Its methods are safe for concurrent use.
type Client struct {
	cfg    Config
	lim    frame.Limits
	hbUnit time.Duration // the unit of LOGIN_ACK's hb: a second (tests shorten it)

	running    atomic.Bool
	inCallback atomic.Int32 // callbacks in progress: Close does not wait for the reader then
	closeCh    chan struct{}

	mu            sync.Mutex
	closed        bool
	connecting    bool
	cancelConnect context.CancelCauseFunc
	cn            *conn // the live connection, nil when there is none
	lastErr       error // the last failed attempt or lost connection, for the next Connecting
	errs          map[string]uint64

	connects, reconnects, pushes, duplicates, gaps, pings, pongs atomic.Uint64

	seen dedup // only the live connection's reader touches it
}

// New returns a Client for cfg. It validates cfg: a missing required field is an error naming it.
// It does not connect: see Connect and Run.
func New(cfg Config) (*Client, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Client{
		cfg:     cfg,
		lim:     frame.Limits{MaxBody: cfg.MaxBody},
		hbUnit:  time.Second,
		closeCh: make(chan struct{}),
	}, nil
}

// Connect makes one attempt: control → dial → LOGIN → LOGIN_ACK, trying the endpoints control
// returned in control's order, skipping those whose protocol is not in Config.Transports, until
// one logs in (a refused token, AUTH_FAILED, stops at once). On success the connection's reader
// and heartbeat run until the connection ends; Connect does not reconnect (Run does). ctx bounds
// the attempt only: the connection outlives it. A GOAWAY is left to Run; without Run the connection
// lasts until the gateway closes it.
//
// It returns ErrClosed after Close, ErrConnected while a connection is live or another Connect
// is in progress, a *ControlError when control refused, an *Error when the gateway refused the
// login, and otherwise the dial or I/O failure of each endpoint tried.
func (c *Client) Connect(ctx context.Context) error {
	_, err := c.connect(ctx)
	return err
}

func (c *Client) connect(ctx context.Context) (*conn, error) {
	c.mu.Lock()
	switch {
	case c.closed:
		c.mu.Unlock()
		return nil, ErrClosed
	case c.connecting || c.cn != nil:
		c.mu.Unlock()
		return nil, ErrConnected
	}
	ctx, cancel := context.WithCancelCause(ctx)
	c.connecting = true
	c.cancelConnect = cancel
	prev := c.lastErr
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.connecting = false
		c.cancelConnect = nil
		c.mu.Unlock()
		cancel(nil)
	}()

	c.setState(Connecting, prev)
	cn, err := c.dialAny(ctx)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("client: connect: %w", context.Cause(ctx))
		}
		c.mu.Lock()
		c.lastErr = err
		c.mu.Unlock()
		return nil, err
	}

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		cn.shutdown(ErrClosed, true)
		return nil, ErrClosed
	}
	c.cn = cn
	c.lastErr = nil
	c.mu.Unlock()
	c.connects.Add(1)
	c.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "client: connected",
		slog.String("device", c.cfg.Device), slog.String("conn", cn.id), slog.String("node", cn.node),
		slog.Duration("heartbeat", cn.hb))
	c.setState(Connected, nil)
	go cn.readLoop()
	cn.startHeartbeat()
	return cn, nil
}

// dialAny asks control for a token and endpoints and logs in to the first endpoint that works,
// in control's order, among those whose protocol is in Config.Transports. A failed endpoint
// (dial, handshake, login refused) is followed by the next one. It counts every failure it sees
// in Stats.Errors (except cancellations).
func (c *Client) dialAny(ctx context.Context) (*conn, error) {
	info, err := fetchToken(ctx, &c.cfg)
	if err != nil {
		c.countFailure(ctx, err)
		return nil, err
	}
	var errs []error
	for _, ep := range info.Endpoints {
		if !c.uses(ep.Protocol) {
			continue
		}
		cn, err := c.dialLogin(ctx, info, ep)
		if err == nil {
			return cn, nil
		}
		err = fmt.Errorf("%w (endpoint %s %s)", err, ep.Protocol, ep.Addr)
		c.countFailure(ctx, err)
		c.cfg.Logger.LogAttrs(ctx, slog.LevelDebug, "client: endpoint failed",
			slog.String("device", c.cfg.Device), slog.String("addr", ep.Addr), slog.Any("err", err))
		if ctx.Err() != nil {
			return nil, err
		}
		errs = append(errs, err)
		// A refused token is refused by every gateway: asking the next one only adds load.
		var se *Error
		if errors.As(err, &se) && se.Code == frame.CodeAuthFailed {
			break
		}
	}
	if len(errs) == 0 {
		protos := make([]string, len(info.Endpoints))
		for i, ep := range info.Endpoints {
			protos[i] = ep.Protocol
		}
		err := fmt.Errorf("%w (control offered %q; Config.Transports is %q)", ErrNoEndpoint, protos, c.cfg.Transports)
		c.countFailure(ctx, err)
		return nil, err
	}
	if len(errs) == 1 {
		return nil, errs[0]
	}
	return nil, errors.Join(errs...)
}

// uses reports whether proto is one of Config.Transports.
func (c *Client) uses(proto string) bool {
	for _, p := range c.cfg.Transports {
		if p == proto {
			return true
		}
	}
	return false
}

// dialLogin dials ep over its protocol (handshakes included, bounded by ctx and Timeout) and
// logs in.
func (c *Client) dialLogin(ctx context.Context, info *ConnectInfo, ep Endpoint) (*conn, error) {
	dctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	nc, err := transport.Dial(dctx, ep.Protocol, ep.Addr, transport.Options{
		TLS:       c.cfg.TLS,
		Dial:      c.cfg.Dial,
		LocalAddr: c.cfg.LocalAddr,
		Path:      c.cfg.WSPath,
		Origin:    c.cfg.Origin,
	})
	cancel()
	if err != nil {
		return nil, &opError{"dial", err}
	}
	cn := newConn(c, nc)
	cn.proto = ep.Protocol
	if err := cn.login(ctx, info); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return cn, nil
}

// Run connects and stays connected until ctx ends or Close is called: after a lost connection it
// reconnects through control with backoff (after a GOAWAY, after about its retry_ms instead).
// A connection made by an earlier Connect is adopted.
//
// It returns ErrClosed after Close, ctx.Err() when ctx ends, ErrRunning when another Run is
// running, and a *ControlError (wrapped) when control refuses permanently (400, 401, 403 and other
// 4xx but 408 and 429): retrying those would only hammer control.
func (c *Client) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return ErrRunning
	}
	defer c.running.Store(false)
	err := c.run(ctx)
	if !errors.Is(err, ErrClosed) {
		c.setState(Closed, err)
	}
	return err
}

func (c *Client) run(ctx context.Context) error {
	attempt := 0
	hadConn := false
	for {
		cn := c.current()
		var err error
		if cn == nil {
			cn, err = c.connect(ctx)
		}
		var delay time.Duration
		switch {
		case err != nil:
			switch {
			case c.isClosed():
				return ErrClosed
			case ctx.Err() != nil:
				return ctx.Err()
			case isPermanent(err):
				c.cfg.Logger.LogAttrs(ctx, slog.LevelWarn, "client: giving up: control refused permanently",
					slog.String("device", c.cfg.Device), slog.Any("err", err))
				return err
			case errors.Is(err, ErrConnected):
				// Another Connect is in flight: let it finish.
				delay = c.cfg.BackoffMin
			default:
				delay = c.backoff(attempt)
				attempt++
				var ce *ControlError
				if errors.As(err, &ce) && ce.RetryAfter > delay {
					delay = ce.RetryAfter
				}
			}
		default:
			if hadConn {
				c.reconnects.Add(1)
			}
			hadConn = true
			up := time.Now()
			goaway, err := c.hold(ctx, cn)
			if err != nil {
				return err
			}
			if time.Since(up) >= stableAfter {
				attempt = 0
			}
			if goaway >= 0 {
				delay = goaway
			} else {
				delay = c.backoff(attempt)
				attempt++
			}
		}
		if err := c.sleep(ctx, delay); err != nil {
			return err
		}
	}
}

// hold waits until cn ends. After a GOAWAY it closes cn itself once the GOAWAY's delay has passed
// (if the gateway has not closed it first) and returns what remains of that delay; without a
// GOAWAY it returns -1. When ctx ends or Close is called it closes cn, waits for its reader and
// returns the error for Run.
func (c *Client) hold(ctx context.Context, cn *conn) (time.Duration, error) {
	goawayCh := cn.goawayCh
	var deadline <-chan time.Time
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-cn.done:
			if cn.goawayErr == nil {
				return -1, nil
			}
			return max(0, time.Until(cn.goawayAt.Add(cn.goawayDelay))), nil
		case <-goawayCh:
			goawayCh = nil
			timer = time.NewTimer(time.Until(cn.goawayAt.Add(cn.goawayDelay)))
			deadline = timer.C
		case <-deadline:
			deadline = nil
			cn.shutdown(cn.goawayErr, false)
		case <-ctx.Done():
			cn.shutdown(fmt.Errorf("client: run stopped: %w", context.Cause(ctx)), true)
			<-cn.done
			return 0, ctx.Err()
		case <-c.closeCh:
			cn.shutdown(ErrClosed, true)
			<-cn.done
			return 0, ErrClosed
		}
	}
}

// sleep waits d, or until ctx ends or Close is called.
func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-c.closeCh:
		}
	}
	switch {
	case c.isClosed():
		return ErrClosed
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return nil
}

// backoff is the delay before attempt (0-based): full jitter over min(BackoffMax, BackoffMin·2^n).
func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.BackoffMin
	for i := 0; i < attempt && d < c.cfg.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, c.cfg.BackoffMax)
	if d <= 0 {
		return 0
	}
	return rand.N(d + 1)
}

// isPermanent reports whether err means retrying with this Config cannot succeed.
func isPermanent(err error) bool {
	var ce *ControlError
	return errors.As(err, &ce) && !ce.Temporary
}

// Request sends a REQUEST for biz (≠ 0) with meta (built with frame.AppendMeta) and body, and waits
// for the RESPONSE with the same seq. A RESPONSE with a failure code is returned as a Response
// (see Response.Err), not as an error. meta and body may be reused when Request returns.
//
// It does not wait for a connection: without one it returns ErrNotConnected (ErrClosed after
// Close). If the connection ends first it returns an error wrapping ErrConnLost and the reason;
// when ctx ends, ctx.Err().
func (c *Client) Request(ctx context.Context, biz uint16, meta frame.Meta, body []byte) (*Response, error) {
	return c.call(ctx, frame.TypeRequest, biz, meta, body)
}

// Join asks the gateway to add this connection to group for biz; the RESPONSE says whether it did.
func (c *Client) Join(ctx context.Context, biz uint16, group string) (*Response, error) {
	return c.call(ctx, frame.TypeJoin, biz, frame.AppendMetaString(nil, "group", group), nil)
}

// Leave asks the gateway to remove this connection from group for biz.
func (c *Client) Leave(ctx context.Context, biz uint16, group string) (*Response, error) {
	return c.call(ctx, frame.TypeLeave, biz, frame.AppendMetaString(nil, "group", group), nil)
}

func (c *Client) call(ctx context.Context, typ frame.Type, biz uint16, meta frame.Meta, body []byte) (*Response, error) {
	if biz == 0 {
		return nil, fmt.Errorf("client: %s: biz 0 is the connection itself", typ)
	}
	f := frame.Frame{Header: frame.Header{Type: typ, Biz: biz}, Meta: meta, Body: body}
	if err := frame.Check(&f, c.lim); err != nil {
		return nil, fmt.Errorf("client: %s: %w", typ, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cn := c.current()
	if cn == nil {
		if c.isClosed() {
			return nil, ErrClosed
		}
		return nil, ErrNotConnected
	}
	seq, ch, err := cn.register()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConnLost, err)
	}
	f.Seq = seq
	if err := cn.write(&f); err != nil {
		cn.unregister(seq)
		return nil, fmt.Errorf("%w: %w", ErrConnLost, err)
	}
	select {
	case r := <-ch:
		return r, nil
	case <-cn.closing:
		select {
		case r := <-ch:
			return r, nil
		default:
		}
		reason, _ := cn.reason()
		return nil, fmt.Errorf("%w: %w", ErrConnLost, reason)
	case <-ctx.Done():
		cn.unregister(seq)
		return nil, ctx.Err()
	}
}

// Close closes the connection, cancels a Connect in progress and stops Run. It waits for the
// connection's reader to finish unless called from a callback. Calling it again does nothing.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.closeCh)
	cn, cancel := c.cn, c.cancelConnect
	c.mu.Unlock()
	if cancel != nil {
		cancel(ErrClosed)
	}
	if cn != nil {
		cn.shutdown(ErrClosed, true)
		if c.inCallback.Load() == 0 {
			<-cn.done
		}
	}
	c.setState(Closed, nil)
	return nil
}

// ConnID is the live connection's ID from LOGIN_ACK, "" when not connected.
func (c *Client) ConnID() string {
	if cn := c.current(); cn != nil {
		return cn.id
	}
	return ""
}

// Node is the ID of the gateway instance holding the live connection, "" when not connected.
func (c *Client) Node() string {
	if cn := c.current(); cn != nil {
		return cn.node
	}
	return ""
}

// Transport is the protocol of the live connection ("tcp", "ws"…), "" when not connected.
func (c *Client) Transport() string {
	if cn := c.current(); cn != nil {
		return cn.proto
	}
	return ""
}

// Heartbeat is the live connection's PING interval, 0 when not connected.
func (c *Client) Heartbeat() time.Duration {
	if cn := c.current(); cn != nil {
		return cn.hb
	}
	return 0
}

// Stats returns a snapshot of the counters; Errors is a copy.
func (c *Client) Stats() Stats {
	s := Stats{
		Connects:   c.connects.Load(),
		Reconnects: c.reconnects.Load(),
		Pushes:     c.pushes.Load(),
		Duplicates: c.duplicates.Load(),
		Gaps:       c.gaps.Load(),
		Pings:      c.pings.Load(),
		Pongs:      c.pongs.Load(),
	}
	c.mu.Lock()
	if len(c.errs) > 0 {
		s.Errors = make(map[string]uint64, len(c.errs))
		for k, v := range c.errs {
			s.Errors[k] = v
		}
	}
	c.mu.Unlock()
	return s
}

func (c *Client) current() *conn {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cn
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// countFailure counts a failed attempt unless it is a cancellation.
func (c *Client) countFailure(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	c.count(err)
}

func (c *Client) count(err error) {
	key := reasonKey(err)
	c.mu.Lock()
	if c.errs == nil {
		c.errs = make(map[string]uint64)
	}
	c.errs[key]++
	c.mu.Unlock()
}

// detach forgets cn as the live connection after its reader ended.
func (c *Client) detach(cn *conn, reason error, local bool) {
	c.mu.Lock()
	if c.cn == cn {
		c.cn = nil
	}
	if !local {
		c.lastErr = reason
	}
	c.mu.Unlock()
	if !local {
		c.count(reason)
	}
	c.cfg.Logger.LogAttrs(context.Background(), slog.LevelDebug, "client: disconnected",
		slog.String("device", c.cfg.Device), slog.String("conn", cn.id), slog.Any("reason", reason))
}

func (c *Client) setState(s State, err error) {
	if c.cfg.OnState == nil {
		return
	}
	c.inCallback.Add(1)
	defer c.inCallback.Add(-1)
	c.cfg.OnState(s, err)
}
