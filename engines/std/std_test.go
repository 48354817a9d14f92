package stdengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
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

// writers are the values of the "writer" option; every test runs with each.
var writers = []string{WriterPool, WriterConn}

// eachWriter runs test as a subtest "writer=<w>" for every write path.
func eachWriter(t *testing.T, test func(t *testing.T, writer string)) {
	for _, w := range writers {
		t.Run(OptWriter+"="+w, func(t *testing.T) { test(t, w) })
	}
}

// withWriter returns cfg with the "writer" option set.
func withWriter(writer string, cfg engines.Config) engines.Config {
	cfg.Options = map[string]string{OptWriter: writer}
	return cfg
}

func TestWriterOption(t *testing.T) {
	for _, v := range []string{"", WriterPool, WriterConn} {
		e, err := New(engines.Config{Options: map[string]string{OptWriter: v}}, newLineHandler())
		if err != nil || e == nil {
			t.Fatalf("writer=%q: %v", v, err)
		}
	}
	_, err := New(engines.Config{Options: map[string]string{OptWriter: "goroutine"}}, newLineHandler())
	if err == nil || !strings.Contains(err.Error(), `writer="goroutine"`) {
		t.Fatalf("writer=goroutine: err %v, want one naming the option", err)
	}
}

func TestEchoPartialAndCoalesced(t *testing.T) { eachWriter(t, testEchoPartialAndCoalesced) }

func testEchoPartialAndCoalesced(t *testing.T, writer string) {
	h := newLineHandler()
	e := start(t, h, withWriter(writer, engines.Config{ReadBufferSize: 16}))
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
	eachWriter(t, testWritesFromOtherGoroutinesInOrder)
}

func testWritesFromOtherGoroutinesInOrder(t *testing.T, writer string) {
	h := newLineHandler()
	e := start(t, h, withWriter(writer, engines.Config{}))
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

func TestCloseEitherSideOnce(t *testing.T) { eachWriter(t, testCloseEitherSideOnce) }

func testCloseEitherSideOnce(t *testing.T, writer string) {
	h := newLineHandler()
	e := start(t, h, withWriter(writer, engines.Config{}))

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

func TestSlowReaderBounded(t *testing.T) { eachWriter(t, testSlowReaderBounded) }

func testSlowReaderBounded(t *testing.T, writer string) {
	h := newLineHandler()
	e := start(t, h, withWriter(writer, engines.Config{MaxWriteQueue: 64 << 10, WriteTimeout: 500 * time.Millisecond}))
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

func TestShutdownWithOpenConnections(t *testing.T) { eachWriter(t, testShutdownWithOpenConnections) }

func testShutdownWithOpenConnections(t *testing.T, writer string) {
	h := newLineHandler()
	e, err := engines.New(Name, withWriter(writer, engines.Config{}), h)
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
