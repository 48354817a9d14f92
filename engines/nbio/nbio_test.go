package nbioengine

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

// lineHandler consumes whole lines only (like the core consumes whole frames) and echoes them.
type lineHandler struct {
	mu     sync.Mutex
	conns  map[uint64]engines.Conn
	opens  atomic.Int64
	closes map[uint64]int
	errs   map[uint64]error
	closed chan uint64
}

func newLineHandler() *lineHandler {
	return &lineHandler{conns: map[uint64]engines.Conn{}, closes: map[uint64]int{}, errs: map[uint64]error{}, closed: make(chan uint64, 100)}
}

func (h *lineHandler) OnOpen(c engines.Conn) {
	h.opens.Add(1)
	h.mu.Lock()
	h.conns[c.ID()] = c
	h.mu.Unlock()
}

func (h *lineHandler) OnData(c engines.Conn, in []byte) (int, error) {
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
	h.mu.Lock()
	h.closes[c.ID()]++
	h.errs[c.ID()] = err
	delete(h.conns, c.ID())
	h.mu.Unlock()
	h.closed <- c.ID()
}

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

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestEchoPartialAndCoalesced(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{ReadBufferSize: 16})
	c := dial(t, e)
	r := bufio.NewReader(c)
	// One byte at a time, and a line longer than the read buffer.
	long := bytes.Repeat([]byte("x"), 100)
	msg := append(append([]byte("ab"), long...), '\n')
	for _, b := range msg {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := r.ReadBytes('\n')
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("dribble: %q %v", got, err)
	}
	// Many lines in one write.
	var many []byte
	for range 100 {
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

func TestWritesFromOtherGoroutinesInOrder(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	sc := h.conn(t)
	const writers, each = 8, 200
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
	h := newLineHandler()
	e := start(t, h, engines.Config{})

	// Peer closes.
	c := dial(t, e)
	sc := h.conn(t)
	c.Close()
	id := <-h.closed
	if id != sc.ID() {
		t.Fatalf("closed %d want %d", id, sc.ID())
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
	<-h.closed
	got, err := io.ReadAll(c2)
	if err != nil || string(got) != "bye\n" {
		t.Fatalf("after local close read %q, %v", got, err)
	}

	// Handler error closes.
	c3 := dial(t, e)
	h.conn(t)
	c3.Write([]byte("quit\n"))
	<-h.closed
	time.Sleep(50 * time.Millisecond)
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, n := range h.closes {
		if n != 1 {
			t.Fatalf("conn %d: OnClose %d times", id, n)
		}
	}
	if len(h.closes) != 3 {
		t.Fatalf("%d closes", len(h.closes))
	}
}

func TestSlowReaderBounded(t *testing.T) {
	h := newLineHandler()
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
		err := sc.Write(chunk)
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
	select {
	case <-h.closed:
	case <-time.After(10 * time.Second):
		t.Fatal("slow consumer not closed")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, err := range h.errs {
		if !errors.Is(err, engines.ErrWriteTimeout) {
			t.Fatalf("OnClose reason %v, want %v", err, engines.ErrWriteTimeout)
		}
	}
}

func TestShutdownWithOpenConnections(t *testing.T) {
	h := newLineHandler()
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("connection still open after shutdown")
		}
		c.Close()
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.closes) != 50 {
		t.Fatalf("%d OnClose after shutdown, want 50", len(h.closes))
	}
}

// TestFlushQueuedThenClose: Close with bytes queued behind a peer that is not reading yet sends
// all of them, in order, once the peer reads, and only then the end (EOF, not a reset).
func TestFlushQueuedThenClose(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{MaxWriteQueue: 64 << 10, WriteTimeout: 5 * time.Second})
	c := dial(t, e)
	sc := h.conn(t)
	const size = 4096
	accepted := 0
	for i := 0; ; i++ {
		err := sc.Write(bytes.Repeat([]byte{byte(accepted / size)}, size))
		if errors.Is(err, engines.ErrQueueFull) {
			break
		}
		if err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		accepted += size
		if accepted > 512<<20 {
			t.Fatal("queue never filled")
		}
	}
	if q := sc.(*conn).queued.Load(); q <= 0 || q > 64<<10 {
		t.Fatalf("queued %d after ErrQueueFull, want in (0, 64 KiB]", q)
	}
	_ = sc.Close()
	if err := sc.Write([]byte("x")); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read after close: %v after %d bytes", err, len(got))
	}
	if len(got) != accepted {
		t.Fatalf("read %d bytes, want %d", len(got), accepted)
	}
	for i := 0; i < len(got); i += size {
		if got[i] != byte(i/size) || got[i+size-1] != byte(i/size) {
			t.Fatalf("chunk %d out of order", i/size)
		}
	}
	<-h.closed
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, err := range h.errs {
		if err != nil {
			t.Fatalf("OnClose reason %v, want nil", err)
		}
	}
}

// TestWriteOverQueueBound: a single Write larger than the queue bound is refused with
// ErrQueueFull and the connection stays usable (nbio's own overflow would close it).
func TestWriteOverQueueBound(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{MaxWriteQueue: 1024})
	c := dial(t, e)
	sc := h.conn(t)
	if err := sc.Write(make([]byte, 1025)); !errors.Is(err, engines.ErrQueueFull) {
		t.Fatalf("oversized write: %v", err)
	}
	if err := sc.Write([]byte("ok\n")); err != nil {
		t.Fatalf("write after ErrQueueFull: %v", err)
	}
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ok\n" {
		t.Fatalf("read %q %v", buf, err)
	}
}

// TestFrameTooLarge: unconsumed input reaching MaxFrame closes with ErrFrameTooLarge; a line just
// under it passes, and the pending buffer is given back once consumed.
func TestFrameTooLarge(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{MaxFrame: 64, ReadBufferSize: 16})
	c := dial(t, e)
	r := bufio.NewReader(c)
	sc := h.conn(t).(*conn)
	line := append(bytes.Repeat([]byte("a"), 62), '\n') // 63 bytes, pending up to 62
	for _, b := range line {
		if _, err := c.Write([]byte{b}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := r.ReadBytes('\n')
	if err != nil || !bytes.Equal(got, line) {
		t.Fatalf("echo %q %v", got, err)
	}
	sc.hmu.Lock()
	pending := sc.in
	sc.hmu.Unlock()
	if pending != nil {
		t.Fatalf("pending buffer kept after the frame was consumed (%d bytes)", len(*pending))
	}
	if _, err := c.Write(bytes.Repeat([]byte("b"), 200)); err != nil {
		t.Fatal(err)
	}
	<-h.closed
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.errs[sc.ID()]; !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("OnClose reason %v, want %v", err, engines.ErrFrameTooLarge)
	}
}

// badHandler claims to consume more than it was offered.
type badHandler struct {
	*lineHandler
}

func (h badHandler) OnData(c engines.Conn, in []byte) (int, error) { return len(in) + 1, nil }

func TestHandlerOverConsumes(t *testing.T) {
	h := badHandler{newLineHandler()}
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	sc := h.conn(t)
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	<-h.closed
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.errs[sc.ID()]; err == nil {
		t.Fatal("OnClose reason nil, want the handler's bad count")
	}
}

// openHandler writes and closes from OnOpen.
type openHandler struct {
	*lineHandler
}

func (h openHandler) OnOpen(c engines.Conn) {
	h.lineHandler.OnOpen(c)
	_ = c.Write([]byte("hi\n"))
	_ = c.Close()
}

func TestWriteAndCloseInOnOpen(t *testing.T) {
	h := openHandler{newLineHandler()}
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hi\n" {
		t.Fatalf("read %q %v", got, err)
	}
	id := <-h.closed
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.errs[id]; err != nil || h.closes[id] != 1 {
		t.Fatalf("OnClose %d times, reason %v; want once, nil", h.closes[id], err)
	}
}

func TestOptionsAndLifecycle(t *testing.T) {
	h := newLineHandler()
	for _, opts := range []map[string]string{
		{"sweep": "soon"}, {"sweep": "-1s"}, {"read_times": "x"}, {"read_times": "0"},
		{"lock_poller": "maybe"}, {"nbio_log": "loud"},
	} {
		if _, err := engines.New(Name, engines.Config{Options: opts}, h); err == nil {
			t.Errorf("options %v accepted", opts)
		}
	}
	e, err := engines.New(Name, engines.Config{Options: map[string]string{
		"sweep": "50ms", "read_times": "8", "lock_poller": "false", "unknown": "ignored",
	}}, h)
	if err != nil {
		t.Fatal(err)
	}
	if e.Addr() != nil {
		t.Fatal("Addr before Start")
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown before Start: %v", err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	if a, ok := e.Addr().(*net.TCPAddr); !ok || a.Port == 0 {
		t.Fatalf("Addr after Start: %v", e.Addr())
	}
	if err := e.Start(); err == nil {
		t.Fatal("second Start accepted")
	}
	// The port is taken: a second engine on it fails to start, without leaking.
	e2, err := engines.New(Name, engines.Config{Addr: e.Addr().String()}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Start(); err == nil {
		t.Fatal("second engine on a bound port started")
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", e.Addr().String(), time.Second); err == nil {
		t.Fatal("listener still accepting after Shutdown")
	}
}

// TestShutdownDeadline: a peer that never reads keeps a connection from flushing; Shutdown
// returns the context's error at its deadline, resets the connection and leaves nothing behind.
func TestShutdownDeadline(t *testing.T) {
	h := newLineHandler()
	e, err := engines.New(Name, engines.Config{MaxWriteQueue: 64 << 10, WriteTimeout: time.Minute}, h)
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
	for {
		if err := sc.Write(make([]byte, 4096)); err != nil {
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	if err := e.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want %v", err, context.DeadlineExceeded)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("Shutdown took %v", d)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.closes) != 1 {
		t.Fatalf("%d OnClose, want 1", len(h.closes))
	}
}

// TestWriteFrameFromGoroutines: WriteFrame from 8 goroutines, head and tail never split or
// interleaved, each writer's frames in order; a shared tail is not modified.
func TestWriteFrameFromGoroutines(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	sc := h.conn(t).(engines.FrameWriter)
	tail := append(bytes.Repeat([]byte("t"), 100), '\n')
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := sc.WriteFrame([]byte{byte('a' + w), byte(i)}, tail); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	const size = 2 + 101
	buf := make([]byte, writers*each*size)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	for i := 0; i < len(buf); i += size {
		w := int(buf[i] - 'a')
		if w < 0 || w >= writers || int(buf[i+1]) != next[w]%256 || !bytes.Equal(buf[i+2:i+size], tail) {
			t.Fatalf("frame %d split, interleaved or out of order", i/size)
		}
		next[w]++
	}
	// Large frames take the unpooled path.
	big := bytes.Repeat([]byte("b"), maxPooledFrame)
	if err := sc.WriteFrame([]byte("H"), big); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 1+len(big))
	if _, err := io.ReadFull(c, got); err != nil || got[0] != 'H' || !bytes.Equal(got[1:], big) {
		t.Fatalf("large frame: %v", err)
	}
}
