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
	"github.com/pushwire/pushwire/engines/enginetest"
)

// The cases every engine must pass (partial and coalesced input, writes from many goroutines,
// close from either side, write after close, a slow reader, shutdown with connections open) run
// in engines/conformance. This file keeps what is netpoll's own: the partial-frame buffer, the
// slow-peer hand-off, MaxFrame, write batching, close races, handler panics and bad consumes,
// options, and Start/Shutdown edge cases.

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

// TestPendingBufferReleased: the partial-frame buffer exists only while a partial line is
// pending (checked from inside OnData, which runs under the same lock as the engine's reads).
func TestPendingBufferReleased(t *testing.T) {
	var sawPending, sawReleased atomic.Bool
	h := &probeHandler{Handler: enginetest.NewHandler(t)}
	h.check.Store(func(c *conn) {
		if c.in.Pending() > 0 {
			sawPending.Store(true)
		}
	})
	e := enginetest.Start(t, Name, engines.Config{}, h)
	c := enginetest.Dial(t, e)
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	r := bufio.NewReader(c)
	for _, part := range []string{"hel", "lo", "\n"} {
		if _, err := c.Write([]byte(part)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // each part its own read: the partial line is what is tested
	}
	if l, err := r.ReadString('\n'); err != nil || l != "hello\n" {
		t.Fatalf("echo %q %v", l, err)
	}
	// One more complete line: by now the pending buffer must be gone.
	h.check.Store(func(c *conn) {
		if c.in.Pending() == 0 {
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

// probeHandler is the line-echo handler that first runs a check on the engine's conn in OnData.
type probeHandler struct {
	*enginetest.Handler
	check atomic.Value // func(*conn)
}

func (p *probeHandler) OnData(c engines.Conn, in []byte) (int, error) {
	if f, ok := p.check.Load().(func(*conn)); ok {
		f(c.(*conn))
	}
	return p.Handler.OnData(c, in)
}

// TestCloseReasonAndRaces: a peer close reaches OnClose as io.EOF, and a local Close racing the
// peer's close, many times, gives each connection exactly one OnClose. (Close from either side,
// its flush and handler errors are conformance's TestClose.)
func TestCloseReasonAndRaces(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{}, h)

	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c)
	_ = c.Close()
	if id := h.WaitClosed(t); id != sc.ID() {
		t.Fatalf("closed %d want %d", id, sc.ID())
	}
	if err := h.Reason(sc.ID()); !errors.Is(err, io.EOF) {
		t.Fatalf("peer close reason %v, want EOF", err)
	}

	const races = 50
	for range races {
		c := enginetest.Dial(t, e)
		sc := h.Conn(t, c)
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = sc.Write([]byte("x\n")); _ = sc.Close() }()
		go func() { defer wg.Done(); _ = c.Close() }()
		wg.Wait()
		h.WaitClosed(t)
	}
	time.Sleep(50 * time.Millisecond) // room for a duplicate OnClose to show: an absence has no event to wait on
	closes := h.Closes()
	for id, n := range closes {
		if n != 1 {
			t.Fatalf("conn %d: OnClose %d times", id, n)
		}
	}
	if len(closes) != 1+races {
		t.Fatalf("%d closes, want %d", len(closes), 1+races)
	}
}

// maxInHandler records the most bytes OnData was offered in one call.
type maxInHandler struct {
	*enginetest.Handler
	maxIn atomic.Int64
}

func (h *maxInHandler) OnData(c engines.Conn, in []byte) (int, error) {
	if n := int64(len(in)); n > h.maxIn.Load() {
		h.maxIn.Store(n)
	}
	return h.Handler.OnData(c, in)
}

func TestFrameTooLarge(t *testing.T) {
	h := &maxInHandler{Handler: enginetest.NewHandler(t)}
	e := enginetest.Start(t, Name, engines.Config{MaxFrame: 4096}, h)
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c)
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
	h.WaitClosed(t)
	if err := h.Reason(sc.ID()); !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("reason %v, want ErrFrameTooLarge", err)
	}
	if m := h.maxIn.Load(); m > 4096 {
		t.Fatalf("handler was offered %d bytes with MaxFrame 4096", m)
	}
}

// TestSlowPeerDoesNotStallWorker: with one worker, a peer that never reads blocks its flush, and
// another connection on the same worker still gets its echo long before the write timeout.
func TestSlowPeerDoesNotStallWorker(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{Workers: 1, MaxWriteQueue: 1 << 20, WriteTimeout: 3 * time.Second}, h)
	slow := enginetest.Dial(t, e)
	_ = slow.(*net.TCPConn).SetReadBuffer(4096)
	ss := h.Conn(t, slow)
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

	fast := enginetest.Dial(t, e)
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
	for h.WaitClosed(t) != ss.ID() {
		// another connection's close: keep waiting for the slow one
	}
	if err := h.Reason(ss.ID()); !errors.Is(err, engines.ErrWriteTimeout) {
		t.Fatalf("slow peer closed with %v", err)
	}
}

// TestShutdownDeadline: a peer that never reads holds its flush; Shutdown with a short deadline
// closes it anyway and reports the deadline.
func TestShutdownDeadline(t *testing.T) {
	h := enginetest.NewHandler(t)
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
	defer func() { _ = c.Close() }()
	sc := h.Conn(t, c)
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
	if n := h.Closes()[sc.ID()]; n != 1 {
		t.Fatalf("OnClose %d times, want 1", n)
	}
}

func TestStartShutdownAtOnce(t *testing.T) {
	for range 20 {
		e, err := engines.New(Name, engines.Config{}, enginetest.NewHandler(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.Start(); err != nil {
			t.Fatal(err)
		}
		if err := e.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := e.Shutdown(context.Background()); err != nil {
			t.Fatalf("second shutdown: %v", err)
		}
	}
}

func TestOptions(t *testing.T) {
	for _, tc := range []struct {
		opts map[string]string
		ok   bool
	}{
		{map[string]string{OptBufferSize: "4096", OptPollers: "2", OptHandoff: "1ms"}, true},
		{map[string]string{"writer": "pool"}, false}, // another engine's key
		{map[string]string{OptBufferSize: "1"}, false},
		{map[string]string{OptBufferSize: "x"}, false},
		{map[string]string{OptPollers: "0"}, true}, // netpoll's default
		{map[string]string{OptPollers: "-1"}, false},
		{map[string]string{OptHandoff: "1h"}, false},
	} {
		_, err := engines.New(Name, engines.Config{Options: tc.opts}, enginetest.NewHandler(t))
		if (err == nil) != tc.ok {
			t.Errorf("%v: err %v", tc.opts, err)
		}
	}
	if _, err := engines.New(Name, engines.Config{}, nil); err == nil {
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
	e := enginetest.Start(t, Name, engines.Config{}, h)
	c := enginetest.Dial(t, e)
	if _, err := c.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.closed:
		if !errors.Is(err, engines.ErrBadConsume) {
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
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{MaxWriteQueue: 8 << 20}, h)
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c)
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
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{MaxWriteQueue: 4 << 20}, h)
	chunk := bytes.Repeat([]byte("p"), 16<<10)
	const n = 20
	for i := range n {
		c := enginetest.Dial(t, e)
		sc := h.Conn(t, c)
		for range 64 {
			_ = sc.Write(chunk)
		}
		if i%2 == 0 {
			_, _ = io.ReadFull(c, make([]byte, 100<<10))
		}
		_ = c.Close()
		h.WaitClosed(t)
		_ = sc.Write(chunk) // after OnClose: ErrClosed, no panic
	}
	time.Sleep(50 * time.Millisecond) // room for a duplicate OnClose to show
	closes := h.Closes()
	if len(closes) != n {
		t.Fatalf("%d closes, want %d", len(closes), n)
	}
	for id, k := range closes {
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
	e := enginetest.Start(t, Name, engines.Config{}, h)
	c := enginetest.Dial(t, e)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-h.closed:
		t.Logf("closed after a handler panic: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("not closed after a handler panic")
	}
	select {
	case err := <-h.closed:
		t.Fatalf("second OnClose: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
}
