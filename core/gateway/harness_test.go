package gateway

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
	"github.com/pushwire/pushwire/engines"
)

// TestMain fails the package if a test leaves a goroutine behind: Stop must stop the wheel, the
// fan-out workers, the forward pools, the notifier and the expiry of pushes, and wait for them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// wait bounds how long a test waits for something that happens on another goroutine (a backend's
// answer). Nothing waits for time to pass: the clock is the test's.
const wait = 10 * time.Second

// testClock is a clock the test moves by hand.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Unix(1_700_000_000, 0)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// hmacVerifier is a real token verifier: a token is base64url("app\ndevice\nuser\nexpiry unix")
// "." base64url(HMAC-SHA256 of that payload), as a control layer would sign it.
type hmacVerifier struct{ key []byte }

var testKey = hmacVerifier{key: []byte("a test key of at least 16 bytes")}

func (v hmacVerifier) mint(app, device, user string, exp time.Time) string {
	payload := []byte(strings.Join([]string{app, device, user, strconv.FormatInt(exp.Unix(), 10)}, "\n"))
	mac := hmac.New(sha256.New, v.key)
	mac.Write(payload)
	return base64.RawURLEncoding.EncodeToString(payload) + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func (v hmacVerifier) Verify(tok string, now time.Time) (Identity, error) {
	p64, s64, ok := strings.Cut(tok, ".")
	if !ok {
		return Identity{}, errors.New("malformed")
	}
	payload, err1 := base64.RawURLEncoding.DecodeString(p64)
	sig, err2 := base64.RawURLEncoding.DecodeString(s64)
	if err1 != nil || err2 != nil {
		return Identity{}, errors.New("malformed")
	}
	mac := hmac.New(sha256.New, v.key)
	mac.Write(payload)
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return Identity{}, errors.New("bad signature")
	}
	f := strings.Split(string(payload), "\n")
	if len(f) != 4 {
		return Identity{}, errors.New("malformed claims")
	}
	exp, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return Identity{}, errors.New("malformed expiry")
	}
	if !now.Before(time.Unix(exp, 0)) {
		return Identity{}, errors.New("expired")
	}
	return Identity{App: f[0], Device: f[1], User: f[2]}, nil
}

// oneApp is the app registry: push key "key" is app "app".
type oneApp struct{}

func (oneApp) AppByPushKey(key string) (string, bool) { return "app", key == "key" }

var quiet = slog.New(slog.DiscardHandler)

// testNode is a started node on a test clock, stopped at the end of the test.
type testNode struct {
	*Node
	clock *testClock
	ids   atomic.Uint64
}

func newNode(t testing.TB, cfg Config) *testNode {
	t.Helper()
	clock, shared := cfg.Clock.(*testClock) // several nodes of one test may share a clock
	if !shared {
		clock = newTestClock()
	}
	if cfg.Node == "" {
		cfg.Node = "t"
	}
	cfg.Logger = quiet
	cfg.Clock = clock
	n, err := New(cfg, testKey, oneApp{})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
	})
	return &testNode{Node: n, clock: clock}
}

// advance moves the clock by d and lets the timing wheel fire what fell due.
func (n *testNode) advance(d time.Duration) {
	n.wheel.Advance(n.clock.add(d))
}

// pipe is an in-memory transport implementing engines.Conn and engines.FrameWriter the way an
// engine does: a write queue bounded in bytes (ErrQueueFull past it, ErrClosed after Close), the
// handler's callbacks never concurrent for one connection, OnClose exactly once and only after
// the callback that closed it returns. The test plays the peer: feed sends bytes, next reads a
// frame from the write queue.
type pipe struct {
	n   *testNode
	id  uint64
	ctx any

	mu       sync.Mutex
	queue    []byte // written and not yet read by the peer
	max      int    // write queue bound in bytes
	closed   bool
	reported bool // OnClose called
	inData   bool // inside OnData
	signal   chan struct{}
	in       []byte // bytes fed and not yet consumed by the handler
}

var _ engines.FrameWriter = (*pipe)(nil)

// dial opens a connection to the node with a write queue of maxQueue bytes (0: 256 KiB).
func (n *testNode) dial(maxQueue int) *pipe {
	if maxQueue == 0 {
		maxQueue = engines.DefaultMaxWriteQueue
	}
	p := &pipe{n: n, id: n.ids.Add(1), max: maxQueue, signal: make(chan struct{}, 1)}
	n.OnOpen(p)
	return p
}

func (p *pipe) ID() uint64         { return p.id }
func (p *pipe) RemoteAddr() string { return "127.0.0.1:" + strconv.FormatUint(p.id, 10) }
func (p *pipe) Context() any       { return p.ctx }
func (p *pipe) SetContext(v any)   { p.ctx = v }

func (p *pipe) Write(b []byte) error { return p.WriteFrame(b, nil) }

func (p *pipe) WriteFrame(head, tail []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return engines.ErrClosed
	case len(p.queue)+len(head)+len(tail) > p.max:
		return engines.ErrQueueFull
	}
	p.queue = append(append(p.queue, head...), tail...)
	p.wake()
	return nil
}

func (p *pipe) wake() {
	select {
	case p.signal <- struct{}{}:
	default:
	}
}

// Close closes the connection; the handler's OnClose follows, after the current OnData if the
// close came from inside it.
func (p *pipe) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	inData := p.inData
	p.wake()
	p.mu.Unlock()
	if !inData {
		p.report(nil)
	}
	return nil
}

// hangUp is the peer closing the connection.
func (p *pipe) hangUp() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.report(io.EOF)
}

func (p *pipe) report(err error) {
	p.mu.Lock()
	if p.reported {
		p.mu.Unlock()
		return
	}
	p.reported = true
	p.mu.Unlock()
	if p.n != nil { // nil for the index tests' clients outside a node
		p.n.OnClose(p, err)
	}
	p.wake() // a waitClosed that woke before reported was set waits for this
}

// feed delivers bytes from the peer, as an engine's read does.
func (p *pipe) feed(b []byte) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.inData = true
	p.in = append(p.in, b...)
	in := p.in
	p.mu.Unlock()
	k, err := p.n.OnData(p, in)
	p.mu.Lock()
	p.inData = false
	p.in = p.in[k:]
	closed := p.closed || err != nil
	p.closed = closed
	p.mu.Unlock()
	if closed {
		p.report(err)
	}
}

// send encodes a frame and feeds it.
func (p *pipe) send(h frame.Header, meta frame.Meta, body []byte) {
	f := frame.Frame{Header: h, Meta: meta, Body: body}
	p.feed(frame.Append(nil, &f))
}

// waitClosed waits for a close that comes from another goroutine (a backend's answer).
func (p *pipe) waitClosed(t testing.TB) {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for !p.isClosed() {
		select {
		case <-p.signal:
		case <-deadline.C:
			t.Fatalf("conn %d: not closed within %v", p.id, wait)
		}
	}
}

// isClosed reports whether the connection is closed and the handler was told.
func (p *pipe) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed && p.reported
}

// take returns the next frame in the write queue, if there is one.
func (p *pipe) take(t testing.TB) (frame.Frame, bool) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) == 0 {
		return frame.Frame{}, false
	}
	f, k, err := frame.Decode(p.queue, frame.Limits{MaxBody: frame.MaxBodyLimit})
	if err != nil {
		t.Fatalf("conn %d: the node wrote an undecodable frame: %v", p.id, err)
	}
	// Copy out: the queue's bytes are reused.
	f.Meta = append(frame.Meta(nil), f.Meta...)
	f.Body = append([]byte(nil), f.Body...)
	p.queue = p.queue[k:]
	return f, true
}

// next waits for the next frame the node writes (a backend's answer comes from another goroutine).
func (p *pipe) next(t testing.TB) frame.Frame {
	t.Helper()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		if f, ok := p.take(t); ok {
			return f
		}
		select {
		case <-p.signal:
		case <-deadline.C:
			t.Fatalf("conn %d: no frame within %v", p.id, wait)
		}
	}
}

// expect reads the next frame and checks its type and code.
func (p *pipe) expect(t testing.TB, typ frame.Type, code frame.Code) frame.Frame {
	t.Helper()
	f := p.next(t)
	if f.Type != typ || f.Code != code {
		t.Fatalf("conn %d: got %v %v (msg %q), want %v %v", p.id, f.Type, f.Code, f.Meta.GetString("msg"), typ, code)
	}
	return f
}

// quiet reports that the node wrote nothing more.
func (p *pipe) silent(t testing.TB) {
	t.Helper()
	if f, ok := p.take(t); ok {
		t.Fatalf("conn %d: unexpected %v %v (msg %q)", p.id, f.Type, f.Code, f.Meta.GetString("msg"))
	}
}

// client is the connection's Client.
func (p *pipe) client() *Client { return p.ctx.(*Client) }

func (p *pipe) state() session.State { return p.client().state() }

// login sends LOGIN with tok and the device meta.
func (p *pipe) login(tok, device string) {
	meta := frame.AppendMetaString(nil, "token", tok)
	if device != "" {
		meta = frame.AppendMetaString(meta, "device", device)
	}
	p.send(frame.Header{Type: frame.TypeLogin, Seq: 1}, meta, nil)
}

// token mints a token of app "app" valid for an hour on n's clock.
func (n *testNode) token(device, user string) string {
	return testKey.mint("app", device, user, n.clock.Now().Add(time.Hour))
}

// connect opens a connection and logs device in as user, checking LOGIN_ACK OK.
func (n *testNode) connect(t testing.TB, device, user string) *pipe {
	t.Helper()
	p := n.dial(0)
	p.login(n.token(device, user), device)
	ack := p.expect(t, frame.TypeLoginAck, frame.CodeOK)
	if got := ack.Meta.GetString("conn"); got != fmt.Sprint(p.id) {
		t.Fatalf("LOGIN_ACK conn %q, want %d", got, p.id)
	}
	return p
}
