package conformance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
	_ "github.com/pushwire/pushwire/engines/all"
)

// TestMain fails the run if any goroutine outlives the tests (case 9), and removes the test
// certificates.
//
// Ignored, because they belong to a library and live as long as the process by design, not to
// one engine instance that Shutdown must stop:
//   - github.com/cloudwego/netpoll.(*defaultPoll).Wait: netpoll's pollers (netpoll.Configure's
//     PollerNum) start on first use and are never stopped.
//   - github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers and .ticktock: the two
//     housekeeping goroutines of gnet's package-level goroutine.DefaultWorkerPool (an ants pool
//     made by a package variable's initializer, so before TestMain runs).
//
// Keep this list minimal: anything an engine starts per instance must be gone after Shutdown.
func TestMain(m *testing.M) {
	code := m.Run()
	removeCerts()
	if code == 0 {
		if err := goleak.Find(
			goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
			goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
			goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
		); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: errors on successful test run: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// target is one cell of the matrix: a registered engine with extra options, and a transport
// composed over it as the gateway composes it (see stacks).
type target struct {
	name      string            // subtest path: <label>/<transport>
	label     string            // the engine's subtest name: its registered name, or std,writer=conn
	engine    string            // registered name
	transport string            // engines.Transport*
	opts      map[string]string // merged into Config.Options
}

// targets lists every registered engine with every transport it carries, plus std with its
// per-connection writer on tcp.
func targets() []target {
	var ts []target
	add := func(label, engine string, opts map[string]string, transports []string) {
		for _, tr := range transports {
			ts = append(ts, target{name: label + "/" + tr, label: label, engine: engine, transport: tr, opts: opts})
		}
	}
	for _, name := range engines.Names() {
		trs, err := engines.Transports(name)
		if err != nil {
			panic(err) // a name Names just listed
		}
		add(name, name, nil, trs)
		if name == "std" {
			add("std,writer=conn", "std", map[string]string{"writer": "conn"}, []string{engines.TransportTCP})
		}
	}
	return ts
}

// forEachEngine runs test as the subtest TestX/<engine>/<transport> for every target. A target
// whose transport has no stack in this build is skipped, saying so.
func forEachEngine(t *testing.T, test func(t *testing.T, tg target)) {
	forEachTarget(t, func(tg target) bool { return true }, test)
}

// forEachTarget is forEachEngine over the targets keep accepts.
func forEachTarget(t *testing.T, keep func(tg target) bool, test func(t *testing.T, tg target)) {
	ts := targets()
	if len(ts) == 0 {
		t.Fatal("no engine registered: does the test import engines/all?")
	}
	for i := 0; i < len(ts); {
		label := ts[i].label
		j := i
		for j < len(ts) && ts[j].label == label {
			j++
		}
		cells := ts[i:j]
		i = j
		t.Run(label, func(t *testing.T) {
			for _, tg := range cells {
				t.Run(tg.transport, func(t *testing.T) {
					if !keep(tg) {
						t.Skipf("%s: not run on this transport (see the test's comment)", tg.name)
					}
					if _, ok := stacks[tg.transport]; !ok {
						t.Skipf("%s: no %s stack in this build", tg.name, tg.transport)
					}
					test(t, tg)
				})
			}
		})
	}
}

// server is a started engine (the outermost layer's handler given to it) and the suite's handler.
type server struct {
	engines.Engine
	tg   target
	h    *handler
	addr string
	shut atomic.Bool
}

// build composes tg's transport over h and builds tg's engine with cfg. cfg.MaxFrame, if set, is
// the largest frame h takes; the engine gets the outermost layer's EngineMaxFrame.
func (tg target) build(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	if len(tg.opts) > 0 {
		opts := maps.Clone(tg.opts)
		maps.Copy(opts, cfg.Options)
		cfg.Options = opts
	}
	stack, ok := stacks[tg.transport]
	if !ok {
		return nil, fmt.Errorf("%s: no %s stack in this build", tg.name, tg.transport)
	}
	outer, err := stack(h, &cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: compose %s: %w", tg.name, tg.transport, err)
	}
	return engines.New(tg.engine, cfg, outer)
}

// start builds and starts tg's engine with cfg and h. Cleanup shuts it down (unless the test
// did) and checks the handler saw every OnClose exactly once.
func (tg target) start(t testing.TB, cfg engines.Config, h *handler) *server {
	t.Helper()
	e, err := tg.build(cfg, h)
	if err != nil {
		t.Fatalf("new %s: %v", tg.name, err)
	}
	if err := e.Start(); err != nil {
		t.Fatalf("start %s: %v", tg.name, err)
	}
	s := &server{Engine: e, tg: tg, h: h, addr: e.Addr().String()}
	t.Cleanup(func() {
		if !s.shut.Load() {
			if err := s.shutdown(10 * time.Second); err != nil {
				t.Errorf("shutdown: %v", err)
			}
		}
		h.check(t)
	})
	return s
}

// shutdown calls Shutdown with a deadline d.
func (s *server) shutdown(d time.Duration) error {
	s.shut.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.Shutdown(ctx)
}

// connState is the handler's per-connection state, kept in the Conn's context slot.
type connState struct {
	inCall atomic.Bool // inside OnData or OnClose
	closed atomic.Bool // OnClose happened
	hello  atomic.Bool // the client's hello arrived
}

// handler is the suite's engines.Handler. It decodes whole pushwire frames, keeps partial ones,
// counts them, echoes them if echo is set, and records protocol violations of the seam.
type handler struct {
	lim  frame.Limits
	echo bool

	frames atomic.Int64 // whole frames decoded, hellos aside
	ready  atomic.Int64 // connections whose hello arrived
	opens  atomic.Int64
	closes atomic.Int64

	mu         sync.Mutex
	open       map[uint64]engines.Conn // opened and not yet closed, by ID
	order      []engines.Conn          // every connection, in OnOpen order
	closeCount map[uint64]int
	reasons    map[uint64]error
	violations []string
}

func newHandler(lim frame.Limits, echo bool) *handler {
	return &handler{lim: lim, echo: echo, open: map[uint64]engines.Conn{}, closeCount: map[uint64]int{}, reasons: map[uint64]error{}}
}

func (h *handler) violate(format string, args ...any) {
	h.mu.Lock()
	h.violations = append(h.violations, fmt.Sprintf(format, args...))
	h.mu.Unlock()
}

// OnOpen records c.
func (h *handler) OnOpen(c engines.Conn) {
	if c.Context() != nil {
		h.violate("conn %d: context set before OnOpen", c.ID())
	}
	c.SetContext(&connState{})
	h.mu.Lock()
	if _, dup := h.open[c.ID()]; dup {
		h.violations = append(h.violations, fmt.Sprintf("conn %d: OnOpen for an ID already open", c.ID()))
	}
	h.open[c.ID()] = c
	h.order = append(h.order, c)
	h.mu.Unlock()
	h.opens.Add(1)
}

// enter checks the callback discipline at the start of OnData or OnClose.
func (h *handler) enter(c engines.Conn, what string) *connState {
	st, ok := c.Context().(*connState)
	if !ok {
		h.violate("conn %d: %s before OnOpen", c.ID(), what)
		return &connState{}
	}
	if st.closed.Load() {
		h.violate("conn %d: %s after OnClose", c.ID(), what)
	}
	if !st.inCall.CompareAndSwap(false, true) {
		h.violate("conn %d: %s concurrent with another callback", c.ID(), what)
	}
	return st
}

// OnData decodes every whole frame in in and returns the bytes they take; a partial frame
// stays with the engine. A protocol error closes the connection. The client's hello (biz
// helloBiz) marks the connection ready and is neither counted nor echoed.
func (h *handler) OnData(c engines.Conn, in []byte) (int, error) {
	st := h.enter(c, "OnData")
	defer st.inCall.Store(false)
	off := 0
	for off < len(in) {
		f, n, err := frame.Decode(in[off:], h.lim)
		if errors.Is(err, frame.ErrShort) {
			break
		}
		if err != nil {
			return off, fmt.Errorf("conformance: conn %d: decode: %w", c.ID(), err)
		}
		if f.Biz == helloBiz {
			if st.hello.CompareAndSwap(false, true) {
				h.ready.Add(1)
			}
			off += n
			continue
		}
		h.frames.Add(1)
		if h.echo {
			if err := c.Write(append([]byte(nil), in[off:off+n]...)); err != nil {
				return off, fmt.Errorf("conformance: conn %d: echo: %w", c.ID(), err)
			}
		}
		off += n
	}
	return off, nil
}

// OnClose records the close and its reason.
func (h *handler) OnClose(c engines.Conn, err error) {
	st := h.enter(c, "OnClose")
	st.closed.Store(true)
	st.inCall.Store(false)
	h.mu.Lock()
	h.closeCount[c.ID()]++
	h.reasons[c.ID()] = err
	delete(h.open, c.ID())
	h.mu.Unlock()
	h.closes.Add(1)
}

// conns returns every connection opened so far, in OnOpen order.
func (h *handler) conns() []engines.Conn {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]engines.Conn(nil), h.order...)
}

// waitOpens waits until n connections have been opened and have said hello, and returns the
// n-th opened.
func (h *handler) waitOpens(t testing.TB, n int) engines.Conn {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("%d OnOpen and hello", n), func() bool { return h.opens.Load() >= int64(n) && h.ready.Load() >= int64(n) })
	return h.conns()[n-1]
}

// waitClosed waits for c's OnClose and returns its reason.
func (h *handler) waitClosed(t testing.TB, c engines.Conn, d time.Duration) error {
	t.Helper()
	waitFor(t, d, fmt.Sprintf("OnClose of conn %d", c.ID()), func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.closeCount[c.ID()] > 0
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.reasons[c.ID()]
}

// closeCountOf is how many times OnClose ran for c.
func (h *handler) closeCountOf(c engines.Conn) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closeCount[c.ID()]
}

// check reports violations, and any connection whose OnClose did not run exactly once. It is
// meant for after Shutdown, when every connection must have been closed.
func (h *handler) check(t testing.TB) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, v := range h.violations {
		if i == 10 {
			t.Errorf("... and %d more violations", len(h.violations)-10)
			break
		}
		t.Error(v)
	}
	bad := 0
	for _, c := range h.order {
		if n := h.closeCount[c.ID()]; n != 1 {
			if bad++; bad <= 10 {
				t.Errorf("conn %d: OnClose called %d times, want exactly 1", c.ID(), n)
			}
		}
	}
	if bad > 10 {
		t.Errorf("... %d connections in all with OnClose not called exactly once", bad)
	}
}

// waitFor polls cond until it holds or d passes.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// client is the far end of one connection: a byte stream of protocol frames over the target's
// transport (internal/transport's client for every transport but tcp).
type client struct {
	net.Conn
	r *frame.Reader
	// local is the client's address as the server's Conn.RemoteAddr shows it.
	local string
}

// dialAll dials n clients to s, from 8 goroutines (a handshake costs more than a connect), and
// waits until h has seen every one open and say hello.
func dialAll(t testing.TB, s *server, h *handler, n int) []*client {
	t.Helper()
	clients := make([]*client, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range min(n, 8) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				c, err := dialHello(s)
				if err != nil {
					mu.Lock()
					firstErr = cmp.Or(firstErr, err)
					mu.Unlock()
					return
				}
				clients[i] = c
			}
		})
	}
	wg.Wait()
	for _, c := range clients {
		if c != nil {
			t.Cleanup(func() { _ = c.Close() })
		}
	}
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	h.waitOpens(t, n)
	return clients
}

// cellConns scales a case's connection count n to the cell: the full count on tcp; on the
// transports with a handshake (and WebSocket) a quarter, an eighth under the race detector,
// where every handshake costs several times more. The cases check the same thing at any count;
// TestManyConnections is the one about numbers.
func cellConns(tg target, n int) int {
	if tg.transport == engines.TransportTCP {
		return n
	}
	if raceEnabled {
		return max(n/8, 20)
	}
	return max(n/4, 20)
}

// helloBiz marks the frame every client of the suite sends first, as a pushwire client sends
// its login first: a layer may hold a connection's writes until its handshake has completed
// (tls, wss: the server's side ends with the client's Finished), and a QUIC stream reaches the
// server only with its first bytes. The handler counts a connection ready on its hello, and the
// tests wait for that (waitOpens) before they write to it.
const helloBiz = 0xFFFF

// hello is the frame every client sends first.
var hello = mkFrame(helloBiz, 0, 0, 0)

// dial connects to s over its transport and sends the hello; cleanup closes the connection.
func dial(t testing.TB, s *server) *client {
	t.Helper()
	c, err := dialHello(s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialHello connects to s over its transport and sends the hello.
func dialHello(s *server) (*client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := dialTransport(ctx, s.tg.transport, s.addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", s.tg.transport, err)
	}
	if _, err := c.Write(hello); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("hello over %s: %w", s.tg.transport, err)
	}
	return newClient(c), nil
}

func newClient(c net.Conn) *client {
	return &client{Conn: c, r: frame.NewReader(c, frame.Limits{MaxBody: frame.MaxBodyLimit}), local: c.LocalAddr().String()}
}

// next reads one whole frame within d and returns a copy of its bytes on the wire.
func (c *client) next(d time.Duration) (frame.Frame, []byte, error) {
	_ = c.SetReadDeadline(time.Now().Add(d))
	f, err := c.r.Next()
	if err != nil {
		return frame.Frame{}, nil, err
	}
	raw := frame.Append(nil, &f)
	g, _, err := frame.Decode(raw, frame.Limits{MaxBody: frame.MaxBodyLimit})
	return g, raw, err
}

// mustNext is next that fails the test on an error.
func (c *client) mustNext(t testing.TB, d time.Duration) (frame.Frame, []byte) {
	t.Helper()
	f, raw, err := c.next(d)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	return f, raw
}

// expectEnd reads until the connection ends, within d, and returns the bytes read before it and
// the error that ended it (io.EOF for an orderly close).
func (c *client) expectEnd(t testing.TB, d time.Duration) (int, error) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 64<<10)
	total := 0
	for {
		n, err := c.Read(buf)
		total += n
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open %v later (read %d bytes)", d, total)
			}
			return total, err
		}
	}
}

// mkFrame encodes a PUSH frame with the given biz and seq, a meta of exactly metaLen bytes
// (0, or at least 4) and a body of bodyLen bytes of a pattern that depends on seq.
func mkFrame(biz uint16, seq uint32, metaLen, bodyLen int) []byte {
	f := frame.Frame{Header: frame.Header{Type: frame.TypePush, Biz: biz, Seq: seq}}
	if metaLen > 0 {
		f.Meta = frame.AppendMeta(nil, "k", make([]byte, metaLen-4)) // 1 + len("k") + 2 + value
	}
	f.Body = make([]byte, bodyLen)
	for i := range f.Body {
		f.Body[i] = byte(int(seq) + i)
	}
	return frame.Append(nil, &f)
}
