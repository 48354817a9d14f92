package gnetengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
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

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gnet starts a global ants worker pool at package init; its janitors are not ours.
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

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

func TestAddrAndStartErrors(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{})
	addr, ok := e.Addr().(*net.TCPAddr)
	if !ok || addr.Port == 0 || !addr.IP.IsLoopback() {
		t.Fatalf("Addr() = %v, want the bound loopback address", e.Addr())
	}
	if err := e.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	// The port is taken: Start fails and leaves nothing running.
	e2, err := engines.New(Name, engines.Config{Addr: addr.String()}, newLineHandler())
	if err != nil {
		t.Fatal(err)
	}
	if err := e2.Start(); err == nil {
		t.Fatal("Start on a port in use succeeded")
	}
	if err := e2.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown after a failed start: %v", err)
	}
}

func TestOptions(t *testing.T) {
	good := map[string]string{"write_buffer_cap": "4096", "tcp_keepalive": "30s", "tick": "50ms",
		"load_balancing": "least_connections", "lock_os_thread": "false", "max_conns": "100"}
	if _, err := New(engines.Config{Options: good}, newLineHandler()); err != nil {
		t.Fatalf("good options: %v", err)
	}
	for k, v := range map[string]string{"write_buffer_cap": "0", "tcp_keepalive": "x", "tick": "-1s",
		"load_balancing": "random", "lock_os_thread": "maybe", "max_conns": "-1", "nope": "1"} {
		if _, err := New(engines.Config{Options: map[string]string{k: v}}, newLineHandler()); err == nil {
			t.Errorf("option %s=%s accepted", k, v)
		}
	}
	if _, err := New(engines.Config{}, nil); err == nil {
		t.Error("nil handler accepted")
	}
}

func TestMaxFrame(t *testing.T) {
	h := newLineHandler()
	const maxFrame = 1024
	e := start(t, h, engines.Config{MaxFrame: maxFrame, ReadBufferSize: 4096})
	// A line of exactly MaxFrame bytes is fine.
	c := dial(t, e)
	line := append(bytes.Repeat([]byte("z"), maxFrame-1), '\n')
	if _, err := c.Write(line); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, line) {
		t.Fatalf("largest line: %v", err)
	}
	// One byte more, arriving in one piece, closes with ErrFrameTooLarge.
	c2 := dial(t, e)
	var sc2 engines.Conn
	for sc2 == nil {
		h.mu.Lock()
		for _, sc := range h.conns {
			if sc.RemoteAddr() == c2.LocalAddr().String() {
				sc2 = sc
			}
		}
		h.mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	if _, err := c2.Write(bytes.Repeat([]byte("z"), maxFrame+1)); err != nil {
		t.Fatal(err)
	}
	if id := <-h.closed; id != sc2.ID() {
		t.Fatalf("closed %d want %d", id, sc2.ID())
	}
	h.mu.Lock()
	err := h.errs[sc2.ID()]
	h.mu.Unlock()
	if !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("OnClose reason %v, want %v", err, engines.ErrFrameTooLarge)
	}
	if err := sc2.Write([]byte("x")); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// errHandler answers "quit" with a goodbye and an error, and "bad" with an impossible count.
type errHandler struct{ *lineHandler }

func (h errHandler) OnData(c engines.Conn, in []byte) (int, error) {
	switch {
	case bytes.HasPrefix(in, []byte("quit\n")):
		if err := c.Write([]byte("bye\n")); err != nil {
			return 0, err
		}
		return 5, errors.New("quit")
	case bytes.HasPrefix(in, []byte("bad\n")):
		return len(in) + 1, nil
	}
	return h.lineHandler.OnData(c, in)
}

func TestHandlerErrorFlushesQueued(t *testing.T) {
	h := errHandler{newLineHandler()}
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	if _, err := c.Write([]byte("quit\nmore\n")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye\n" {
		t.Fatalf("read %q, %v; want the goodbye then EOF", got, err)
	}
	<-h.closed
	// A handler consuming more than it was offered is an error, not a panic.
	c2 := dial(t, e)
	if _, err := c2.Write([]byte("bad\n")); err != nil {
		t.Fatal(err)
	}
	<-h.closed
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, err := range h.errs {
		if err == nil {
			t.Errorf("conn %d: OnClose reason nil, want the handler's error", id)
		}
	}
}

func TestCloseWithQueueFlushes(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{MaxWriteQueue: 32 << 20})
	c := dial(t, e)
	sc := h.conn(t)
	// Queue more than the kernel buffers take, then Close: the peer still gets all of it.
	chunk := bytes.Repeat([]byte("q"), 64<<10)
	const n = 128 // 8 MiB
	for range n {
		if err := sc.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	if sc.(*conn).outbound.Load() == 0 {
		t.Log("gnet's outbound buffer was empty at Close: the drain path was not exercised")
	}
	_ = sc.Close()
	if err := sc.Write(chunk); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	got, err := io.ReadAll(c)
	if err != nil || len(got) != n*len(chunk) {
		t.Fatalf("read %d bytes, %v; want %d then EOF", len(got), err, n*len(chunk))
	}
	<-h.closed
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.errs[sc.ID()]; err != nil {
		t.Fatalf("local close reason %v, want nil", err)
	}
}

// TestHelperDialer is a child process for TestRestartAfterEMFILE: it dials GNET_DIAL_N connections
// to GNET_DIAL_ADDR (stopping at the first failure), says so, and holds them until stdin closes.
func TestHelperDialer(t *testing.T) {
	addr := os.Getenv("GNET_DIAL_ADDR")
	if addr == "" {
		t.Skip("helper process only")
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil {
		rl.Cur = rl.Max
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
	}
	n, _ := strconv.Atoi(os.Getenv("GNET_DIAL_N"))
	var conns []net.Conn
	for range n {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		conns = append(conns, c)
	}
	fmt.Println("dialed", len(conns))
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		c.Close()
	}
}

// TestRestartAfterEMFILE: at the open-files limit gnet's accept fails with EMFILE and gnet stops
// by itself; every connection gets OnClose with ErrStopped and the engine serves again on the same
// address once descriptors are free.
func TestRestartAfterEMFILE(t *testing.T) {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Skip(err)
	}
	h := newLineHandler()
	h.closed = make(chan uint64, 1000)
	e := start(t, h, engines.Config{})
	addr := e.Addr().String()

	low := old
	low.Cur = uint64(len(fds) + 40)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
		}
	}
	defer restore()

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperDialer$")
	cmd.Env = append(os.Environ(), "GNET_DIAL_ADDR="+addr, "GNET_DIAL_N=200")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	t.Logf("helper: %s", strings.TrimSpace(line))

	stopped := false
	for deadline := time.Now().Add(5 * time.Second); !stopped && time.Now().Before(deadline); {
		h.mu.Lock()
		for _, err := range h.errs {
			stopped = stopped || errors.Is(err, ErrStopped)
		}
		h.mu.Unlock()
		time.Sleep(5 * time.Millisecond)
	}
	stdin.Close()
	_ = cmd.Wait()
	restore()
	if !stopped {
		t.Fatal("no OnClose with ErrStopped: gnet did not stop at the open-files limit")
	}
	h.mu.Lock()
	opens, closes := h.opens.Load(), len(h.closes)
	h.mu.Unlock()
	if int64(closes) != opens {
		t.Fatalf("%d opened, %d closed after gnet stopped", opens, closes)
	}

	// Served again on the same address.
	var c net.Conn
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not serving again: %v", err)
		}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("again\n")); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "again\n" {
		t.Fatalf("echo after restart: %q, %v", got, err)
	}
}

func TestMaxConns(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{Options: map[string]string{"max_conns": "3"}})
	var clients []net.Conn
	for range 3 {
		clients = append(clients, dial(t, e))
	}
	for h.opens.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	// The fourth is closed before the handler sees it.
	extra := dial(t, e)
	_ = extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatal("connection over max_conns not closed")
	}
	if n := h.opens.Load(); n != 3 {
		t.Fatalf("%d OnOpen, want 3", n)
	}
	// A slot frees when one closes.
	clients[0].Close()
	<-h.closed
	c := dial(t, e)
	if _, err := c.Write([]byte("hi\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "hi\n" {
		t.Fatalf("after a slot freed: %q, %v", got, err)
	}
}

// TestLargePartialFrames covers partial frames past spillAt, which the engine keeps in its own
// buffer: whole lines echoed, a partial line carried over, MaxFrame still enforced.
func TestLargePartialFrames(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{MaxFrame: 256 << 10, ReadBufferSize: 4096})
	c := dial(t, e)
	r := bufio.NewReader(c)
	line := func(b byte, n int) []byte { return append(bytes.Repeat([]byte{b}, n-1), '\n') }
	a, b, d := line('a', 200<<10), line('b', 100<<10), line('d', 3)
	// a in small pieces, then the head of b with a, the rest of b with d.
	stream := append(append(append([]byte(nil), a...), b...), d...)
	cuts := []int{1000, 50 << 10, 150 << 10, len(a) - 1, len(a) + 10, len(a) + 60<<10, len(stream)}
	prev := 0
	for _, cut := range cuts {
		if _, err := c.Write(stream[prev:cut]); err != nil {
			t.Fatal(err)
		}
		prev = cut
		time.Sleep(5 * time.Millisecond)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, want := range [][]byte{a, b, d} {
		got, err := r.ReadBytes('\n')
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("got %d bytes (%q...), %v; want %d bytes of %q", len(got), got[:min(len(got), 4)], err, len(want), want[:1])
		}
	}
	// Over MaxFrame while spilled: closed with ErrFrameTooLarge.
	sc := h.conn(t)
	big := bytes.Repeat([]byte("o"), 300<<10)
	for i := 0; i < len(big); i += 32 << 10 {
		if _, err := c.Write(big[i:min(i+32<<10, len(big))]); err != nil {
			break // the engine may have closed it already
		}
	}
	if id := <-h.closed; id != sc.ID() {
		t.Fatalf("closed %d want %d", id, sc.ID())
	}
	h.mu.Lock()
	err := h.errs[sc.ID()]
	h.mu.Unlock()
	if !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("OnClose reason %v, want %v", err, engines.ErrFrameTooLarge)
	}
}

func TestWriteFrameFromOtherGoroutinesInOrder(t *testing.T) {
	h := newLineHandler()
	e := start(t, h, engines.Config{})
	c := dial(t, e)
	sc := h.conn(t).(engines.FrameWriter)
	const writers, each = 8, 200
	tail := []byte("-shared-tail\n") // one buffer shared by every frame
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				if err := sc.WriteFrame([]byte{byte('a' + w), byte(i)}, tail); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	size := 2 + len(tail)
	buf := make([]byte, writers*each*size)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	for i := 0; i < len(buf); i += size {
		w := int(buf[i] - 'a')
		if w < 0 || w >= writers || int(buf[i+1]) != next[w]%256 || !bytes.Equal(buf[i+2:i+size], tail) {
			t.Fatalf("frame %d interleaved or out of order: %q", i/size, buf[i:i+size])
		}
		next[w]++
	}
	if err := sc.WriteFrame(nil, nil); err != nil {
		t.Fatalf("empty frame: %v", err)
	}
}
