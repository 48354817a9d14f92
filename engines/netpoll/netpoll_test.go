package netpollengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/engines"
)

// TestMain checks that no goroutine outlives the tests. Ignored, because netpoll starts them
// once per process and never stops them, so they belong to no engine instance:
// (*defaultPoll).Wait, netpoll's epoll loops (netpoll.Configure's PollerNum). netpoll's other
// goroutines (its gopool workers running OnConnect/OnRequest, the goroutine running a batch of
// hang-ups) end on their own right after the close callbacks that Shutdown waits for, and
// goleak's retries cover that.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
	)
}

// lineHandler consumes whole lines only (like the core consumes whole frames) and echoes them.
// It fails the test if calls for one connection overlap or come outside OnOpen..OnClose.
type lineHandler struct {
	t      *testing.T
	mu     sync.Mutex
	conns  map[uint64]engines.Conn
	state  map[uint64]int // 1 open, 2 closed
	busy   map[uint64]bool
	opens  atomic.Int64
	closes map[uint64]int
	errs   map[uint64]error
	maxIn  atomic.Int64
	closed chan uint64
}

func newLineHandler(t *testing.T) *lineHandler {
	return &lineHandler{t: t, conns: map[uint64]engines.Conn{}, state: map[uint64]int{}, busy: map[uint64]bool{},
		closes: map[uint64]int{}, errs: map[uint64]error{}, closed: make(chan uint64, 1000)}
}

func (h *lineHandler) enter(c engines.Conn, want int, what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state[c.ID()] != want {
		h.t.Errorf("conn %d: %s in state %d", c.ID(), what, h.state[c.ID()])
	}
	if h.busy[c.ID()] {
		h.t.Errorf("conn %d: %s concurrent with another callback", c.ID(), what)
	}
	h.busy[c.ID()] = true
}

func (h *lineHandler) leave(c engines.Conn) {
	h.mu.Lock()
	h.busy[c.ID()] = false
	h.mu.Unlock()
}

func (h *lineHandler) OnOpen(c engines.Conn) {
	h.enter(c, 0, "OnOpen")
	defer h.leave(c)
	h.opens.Add(1)
	h.mu.Lock()
	h.conns[c.ID()] = c
	h.state[c.ID()] = 1
	h.mu.Unlock()
}

func (h *lineHandler) OnData(c engines.Conn, in []byte) (int, error) {
	h.enter(c, 1, "OnData")
	defer h.leave(c)
	if int64(len(in)) > h.maxIn.Load() {
		h.maxIn.Store(int64(len(in)))
	}
	i := bytes.LastIndexByte(in, '\n')
	if i < 0 {
		return 0, nil
	}
	if bytes.Contains(in[:i+1], []byte("quit\n")) {
		return i + 1, errors.New("quit")
	}
	out := append([]byte(nil), in[:i+1]...)
	if err := c.Write(out); err != nil {
		return 0, err
	}
	return i + 1, nil
}

func (h *lineHandler) OnClose(c engines.Conn, err error) {
	h.enter(c, 1, "OnClose")
	defer h.leave(c)
	h.mu.Lock()
	h.closes[c.ID()]++
	h.errs[c.ID()] = err
	h.state[c.ID()] = 2
	delete(h.conns, c.ID())
	h.mu.Unlock()
	h.closed <- c.ID()
}

// conn returns an open connection, waiting for one to open.
func (h *lineHandler) conn(t *testing.T) engines.Conn {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		h.mu.Lock()
		for _, c := range h.conns {
			h.mu.Unlock()
			return c
		}
		h.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no connection opened")
	return nil
}

func (h *lineHandler) waitClosed(t *testing.T) uint64 {
	t.Helper()
	select {
	case id := <-h.closed:
		return id
	case <-time.After(10 * time.Second):
		t.Fatal("no OnClose")
		return 0
	}
}

func (h *lineHandler) reason(id uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.errs[id]
}

func start(t *testing.T, h engines.Handler, cfg engines.Config) engines.Engine {
	t.Helper()
	e, err := engines.New(Name, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e
}

func dial(t *testing.T, e engines.Engine) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestEchoPartialAndCoalesced(t *testing.T) {
	h := newLineHandler(t)
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	sc := h.conn(t)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if sc.RemoteAddr() != c.LocalAddr().String() {
		t.Fatalf("RemoteAddr %q, want %q", sc.RemoteAddr(), c.LocalAddr())
	}
	r := bufio.NewReader(c)
	// One byte at a time, and a line longer than netpoll's 1 KiB buffer.
	long := bytes.Repeat([]byte("x"), 3000)
	msg := append(append([]byte("ab"), long...), '\n')
	for i, b := range msg {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
		if i < 20 {
			time.Sleep(time.Millisecond) // make sure the first bytes arrive one per OnRequest
		}
	}
	got, err := r.ReadBytes('\n')
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("dribble: %d bytes %v", len(got), err)
	}
	// Many lines in one write.
	var many []byte
	for range 1000 {
		many = append(many, "line\n"...)
	}
	if _, err := c.Write(many); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(many))
	if _, err := io.ReadFull(r, buf); err != nil || !bytes.Equal(buf, many) {
		t.Fatalf("coalesced: %v", err)
	}
}

// TestPendingBufferReleased: the partial-frame buffer exists only while a partial line is
// pending (checked from inside OnData, which runs under the same lock as the engine's reads).
func TestPendingBufferReleased(t *testing.T) {
	var sawPending, sawReleased atomic.Bool
	h := &probeHandler{onData: func(c engines.Conn, in []byte) (int, error) {
		nc := c.(*conn)
		if nc.pending != nil {
			sawPending.Store(true)
		}
		i := bytes.LastIndexByte(in, '\n')
		if i < 0 {
			return 0, nil
		}
		if err := c.Write(append([]byte(nil), in[:i+1]...)); err != nil {
			return 0, err
		}
		return i + 1, nil
	}, onAfter: func(c engines.Conn) {}}
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	for _, part := range []string{"hel", "lo", "\n"} {
		if _, err := c.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if l, err := r.ReadString('\n'); err != nil || l != "hello\n" {
		t.Fatalf("echo %q %v", l, err)
	}
	// One more complete line: by now the pending buffer must be gone.
	h.onAfter = nil
	h.check.Store(func(c engines.Conn) {
		if c.(*conn).pending == nil {
			sawReleased.Store(true)
		}
	})
	if _, err := c.Write([]byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := r.ReadString('\n'); err != nil || l != "x\n" {
		t.Fatalf("echo %q %v", l, err)
	}
	if !sawPending.Load() || !sawReleased.Load() {
		t.Fatalf("pending seen %v, released %v", sawPending.Load(), sawReleased.Load())
	}
}

// probeHandler runs a function as OnData.
type probeHandler struct {
	onData  func(c engines.Conn, in []byte) (int, error)
	onAfter func(c engines.Conn)
	check   atomic.Value // func(engines.Conn), run before onData
}

func (p *probeHandler) OnOpen(engines.Conn) {}
func (p *probeHandler) OnData(c engines.Conn, in []byte) (int, error) {
	if f, ok := p.check.Load().(func(engines.Conn)); ok {
		f(c)
	}
	return p.onData(c, in)
}
func (p *probeHandler) OnClose(engines.Conn, error) {}

func TestWritesFromOtherGoroutinesInOrder(t *testing.T) {
	h := newLineHandler(t)
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	sc := h.conn(t)
	const writers, each = 8, 500
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				b := []byte{byte('a' + w), byte(i), '\n'}
				if err := sc.Write(b); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	buf := make([]byte, writers*each*3)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	for i := 0; i < len(buf); i += 3 {
		w := int(buf[i] - 'a')
		if w < 0 || w >= writers || int(buf[i+1]) != next[w]%256 || buf[i+2] != '\n' {
			t.Fatalf("frame %d interleaved or out of order: %v", i/3, buf[i:i+3])
		}
		next[w]++
	}
}

func TestCloseEitherSideOnce(t *testing.T) {
	h := newLineHandler(t)
	e := start(t, h, engines.Config{})

	// Peer closes.
	c := dial(t, e)
	sc := h.conn(t)
	c.Close()
	if id := h.waitClosed(t); id != sc.ID() {
		t.Fatalf("closed %d want %d", id, sc.ID())
	}
	if err := h.reason(sc.ID()); !errors.Is(err, io.EOF) {
		t.Fatalf("peer close reason %v, want EOF", err)
	}
	if err := sc.Write([]byte("late\n")); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	_ = sc.Close()

	// Local close flushes what was queued, then the peer sees EOF.
	c2 := dial(t, e)
	sc2 := h.conn(t)
	if err := sc2.Write([]byte("bye\n")); err != nil {
		t.Fatal(err)
	}
	_ = sc2.Close()
	_ = sc2.Close()
	if err := sc2.Write([]byte("late\n")); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("write after local close: %v", err)
	}
	h.waitClosed(t)
	if err := h.reason(sc2.ID()); err != nil {
		t.Fatalf("local close reason %v, want nil", err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c2)
	if err != nil || string(got) != "bye\n" {
		t.Fatalf("after local close read %q, %v", got, err)
	}

	// Handler error closes, after the echo of what came before it.
	c3 := dial(t, e)
	sc3 := h.conn(t)
	c3.Write([]byte("one\nquit\n"))
	h.waitClosed(t)
	if err := h.reason(sc3.ID()); err == nil || err.Error() != "quit" {
		t.Fatalf("handler error reason %v", err)
	}

	// Both at once, many times: a local Close racing the peer's close.
	const races = 50
	for range races {
		c := dial(t, e)
		sc := h.conn(t)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = sc.Write([]byte("x\n")); _ = sc.Close() }()
		go func() { defer wg.Done(); c.Close() }()
		wg.Wait()
		h.waitClosed(t)
	}
	time.Sleep(50 * time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, n := range h.closes {
		if n != 1 {
			t.Fatalf("conn %d: OnClose %d times", id, n)
		}
	}
	if len(h.closes) != 3+races {
		t.Fatalf("%d closes, want %d", len(h.closes), 3+races)
	}
}

func TestFrameTooLarge(t *testing.T) {
	h := newLineHandler(t)
	e := start(t, h, engines.Config{MaxFrame: 4096})
	c := dial(t, e)
	sc := h.conn(t)
	// Exactly MaxFrame bytes, newline last, passes.
	ok := append(bytes.Repeat([]byte("a"), 4095), '\n')
	if _, err := c.Write(ok); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(ok))
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	// A line that never ends does not.
	chunk := bytes.Repeat([]byte("b"), 1000)
	for range 10 {
		if _, err := c.Write(chunk); err != nil {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	h.waitClosed(t)
	if err := h.reason(sc.ID()); !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("reason %v, want ErrFrameTooLarge", err)
	}
	if m := h.maxIn.Load(); m > 4096 {
		t.Fatalf("handler was offered %d bytes with MaxFrame 4096", m)
	}
}

func TestSlowReaderBounded(t *testing.T) {
	h := newLineHandler(t)
	e := start(t, h, engines.Config{MaxWriteQueue: 64 << 10, WriteTimeout: 500 * time.Millisecond})
	c := dial(t, e)
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	sc := h.conn(t)
	chunk := bytes.Repeat([]byte("y"), 4096)
	// Push like the core does: keep writing while the kernel's socket buffers fill; a full queue
	// is reported (never blocks) and the write timeout then closes the connection.
	var full bool
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		t0 := time.Now()
		err := sc.Write(chunk)
		if d := time.Since(t0); d > 100*time.Millisecond {
			t.Fatalf("Write blocked for %v", d)
		}
		if errors.Is(err, engines.ErrClosed) {
			break
		}
		if errors.Is(err, engines.ErrQueueFull) {
			full = true
			time.Sleep(time.Millisecond)
			continue
		}
		if err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if !full {
		t.Fatal("a peer that never reads never filled the write queue")
	}
	id := h.waitClosed(t)
	if err := h.reason(id); !errors.Is(err, engines.ErrWriteTimeout) {
		t.Fatalf("OnClose reason %v, want %v", err, engines.ErrWriteTimeout)
	}
}

// TestSlowPeerDoesNotStallWorker: with one worker, a peer that never reads blocks its flush, and
// another connection on the same worker still gets its echo long before the write timeout.
func TestSlowPeerDoesNotStallWorker(t *testing.T) {
	h := newLineHandler(t)
	e := start(t, h, engines.Config{Workers: 1, MaxWriteQueue: 1 << 20, WriteTimeout: 3 * time.Second})
	slow := dial(t, e)
	_ = slow.(*net.TCPConn).SetReadBuffer(4096)
	ss := h.conn(t)
	// Fill the kernel's buffers and then the queue: once Write reports a full queue, the
	// worker's flush for this peer is blocked.
	big := bytes.Repeat([]byte("z"), 64<<10)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ss.Write(big)
		if errors.Is(err, engines.ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("queue never filled")
		}
		time.Sleep(time.Millisecond)
	}
	blockedAt := time.Now()

	fast := dial(t, e)
	r := bufio.NewReader(fast)
	for i := range 20 {
		t0 := time.Now()
		if _, err := fast.Write([]byte("ping\n")); err != nil {
			t.Fatal(err)
		}
		_ = fast.SetReadDeadline(time.Now().Add(2 * time.Second))
		if l, err := r.ReadString('\n'); err != nil || l != "ping\n" {
			t.Fatalf("echo %d: %q %v (after %v)", i, l, err, time.Since(t0))
		}
		if d := time.Since(t0); d > 500*time.Millisecond {
			t.Fatalf("echo %d took %v behind a slow peer", i, d)
		}
	}
	if time.Since(blockedAt) > 3*time.Second {
		t.Fatal("test too slow to be meaningful")
	}
	// The slow one is closed by the write timeout.
	timeout := time.After(10 * time.Second)
	for {
		select {
		case id := <-h.closed:
			if id != ss.ID() {
				continue
			}
			if err := h.reason(id); !errors.Is(err, engines.ErrWriteTimeout) {
				t.Fatalf("slow peer closed with %v", err)
			}
			return
		case <-timeout:
			t.Fatal("slow peer not closed")
		}
	}
}

func TestShutdownWithOpenConnections(t *testing.T) {
	h := newLineHandler(t)
	e, err := engines.New(Name, engines.Config{}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	var clients []net.Conn
	for range 50 {
		c, err := net.Dial("tcp", e.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	for h.opens.Load() < 50 {
		time.Sleep(time.Millisecond)
	}
	// Something queued on each is flushed before the close.
	h.mu.Lock()
	for _, c := range h.conns {
		_ = c.Write([]byte("bye\n"))
	}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if err != nil || string(got) != "bye\n" {
			t.Fatalf("client read %q, %v; want the queued bye then EOF", got, err)
		}
		c.Close()
	}
	if c, err := net.DialTimeout("tcp", e.Addr().String(), time.Second); err == nil {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, rerr := c.Read(make([]byte, 1)); rerr == nil {
			t.Fatal("accepted and served after shutdown")
		}
		c.Close()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.closes) != 50 {
		t.Fatalf("%d OnClose after shutdown, want 50", len(h.closes))
	}
}

// TestShutdownDeadline: a peer that never reads holds its flush; Shutdown with a short deadline
// closes it anyway and reports the deadline.
func TestShutdownDeadline(t *testing.T) {
	h := newLineHandler(t)
	e, err := engines.New(Name, engines.Config{MaxWriteQueue: 4 << 20, WriteTimeout: 5 * time.Second}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := h.conn(t)
	if err := sc.Write(bytes.Repeat([]byte("q"), 4<<20)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if err := e.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("shutdown: %v, want deadline exceeded", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closes[sc.ID()] != 1 {
		t.Fatal("no OnClose")
	}
}

func TestStartShutdownAtOnce(t *testing.T) {
	for range 20 {
		e, err := New(engines.Config{}, newLineHandler(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(); err != nil {
			t.Fatal(err)
		}
		if err := e.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		opts map[string]string
		ok   bool
	}{
		{map[string]string{OptBufferSize: "4096", OptPollers: "2", OptHandoff: "1ms"}, true},
		{map[string]string{"writer": "pool"}, true}, // another engine's key: ignored
		{map[string]string{OptBufferSize: "1"}, false},
		{map[string]string{OptBufferSize: "x"}, false},
		{map[string]string{OptPollers: "0"}, false},
		{map[string]string{OptHandoff: "1h"}, false},
	} {
		_, err := New(engines.Config{Options: tc.opts}, newLineHandler(t))
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v", tc.opts, err)
		}
	}
	if _, err := New(engines.Config{}, nil); err == nil {
		t.Error("nil handler accepted")
	}
}

// badHandler returns a consumed count out of range.
type badHandler struct{ closed chan error }

func (b *badHandler) OnOpen(engines.Conn)                           {}
func (b *badHandler) OnData(_ engines.Conn, in []byte) (int, error) { return len(in) + 1, nil }
func (b *badHandler) OnClose(_ engines.Conn, err error)             { b.closed <- err }

func TestBadConsumeClosesWithoutPanic(t *testing.T) {
	h := &badHandler{closed: make(chan error, 1)}
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.closed:
		if !errors.Is(err, ErrBadConsume) {
			t.Fatalf("reason %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("not closed")
	}
}

// TestMixedFrameSizes: batches of a few frames (linked without copying), long batches of small
// frames (copied), and frames over 4 KiB, one after another on one connection, arrive intact and
// in order.
func TestMixedFrameSizes(t *testing.T) {
	h := newLineHandler(t)
	e := start(t, h, engines.Config{MaxWriteQueue: 8 << 20})
	c := dial(t, e)
	sc := h.conn(t)
	sizes := []int{1, 7, 100, 4096, 4097, 5000, 70000, 3, 2}
	var rounds [][][]byte
	var want []byte
	for round := range 60 {
		n := 1 + round%3
		if round%5 == 0 {
			n = 200 // a long batch
		}
		var frames [][]byte
		for i := range n {
			b := bytes.Repeat([]byte{byte('a' + (round+i)%26)}, sizes[(round+i)%len(sizes)])
			frames = append(frames, b)
			want = append(want, b...)
		}
		rounds = append(rounds, frames)
	}
	got := make([]byte, len(want))
	done := make(chan error, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, err := io.ReadFull(c, got)
		done <- err
	}()
	for round, frames := range rounds {
		for _, b := range frames {
			for {
				err := sc.Write(b)
				if errors.Is(err, engines.ErrQueueFull) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				break
			}
		}
		if round%7 == 0 {
			time.Sleep(2 * time.Millisecond)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && got[i] == want[i] {
			i++
		}
		t.Fatalf("stream differs at byte %d of %d", i, len(want))
	}
}

// TestPeerClosesDuringFlush: peers that close while the engine is flushing a large queue to them
// get exactly one OnClose each, and nothing panics.
func TestPeerClosesDuringFlush(t *testing.T) {
	h := newLineHandler(t)
	e := start(t, h, engines.Config{MaxWriteQueue: 4 << 20})
	chunk := bytes.Repeat([]byte("p"), 16<<10)
	const n = 20
	for i := range n {
		c := dial(t, e)
		sc := h.conn(t)
		for range 64 {
			_ = sc.Write(chunk)
		}
		if i%2 == 0 {
			_, _ = io.ReadFull(c, make([]byte, 100<<10))
		}
		c.Close()
		h.waitClosed(t)
		_ = sc.Write(chunk) // after OnClose: ErrClosed, no panic
	}
	time.Sleep(50 * time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.closes) != n {
		t.Fatalf("%d closes, want %d", len(h.closes), n)
	}
	for id, k := range h.closes {
		if k != 1 {
			t.Fatalf("conn %d: OnClose %d times", id, k)
		}
	}
}

// panicHandler panics in OnData.
type panicHandler struct{ closed chan error }

func (p *panicHandler) OnOpen(engines.Conn)                      {}
func (p *panicHandler) OnData(engines.Conn, []byte) (int, error) { panic("boom") }
func (p *panicHandler) OnClose(_ engines.Conn, err error)        { p.closed <- err }

// TestHandlerPanicClosesConn documents what netpoll does with a handler panic: its goroutine
// pool recovers it and netpoll closes the connection; OnClose is still called once.
func TestHandlerPanicClosesConn(t *testing.T) {
	h := &panicHandler{closed: make(chan error, 2)}
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-h.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("not closed after a handler panic")
	}
	select {
	case err := <-h.closed:
		t.Fatalf("second OnClose: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
}
