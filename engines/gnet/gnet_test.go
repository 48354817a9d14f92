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
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/enginetest"
)

// The cases every engine must pass (partial and coalesced input, Write and WriteFrame from many
// goroutines, close from either side, write after close, a slow reader, shutdown with
// connections open, the largest frame) run in engines/conformance. This file keeps what is
// gnet's own: options, EMFILE recovery, MaxFrame in gnet's buffer and in the spill
// buffer, draining gnet's outbound buffer at Close, handler errors.

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// gnet starts a global ants worker pool at package init; its janitors are not ours.
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreAnyFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

func TestAddrAndStartErrors(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{}, h)
	addr, ok := e.Addr().(*net.TCPAddr)
	if !ok || addr.Port == 0 || !addr.IP.IsLoopback() {
		t.Fatalf("Addr() = %v, want the bound loopback address", e.Addr())
	}
	if err := e.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
	// The port is taken: Start fails and leaves nothing running.
	e2, err := engines.New(Name, engines.Config{Addr: addr.String()}, enginetest.NewHandler(t))
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
		"load_balancing": "least_connections", "lock_os_thread": "false"}
	if _, err := engines.New(Name, engines.Config{Options: good}, enginetest.NewHandler(t)); err != nil {
		t.Fatalf("good options: %v", err)
	}
	for k, v := range map[string]string{"write_buffer_cap": "0", "tcp_keepalive": "x", "tick": "-1s",
		"load_balancing": "random", "lock_os_thread": "maybe", "max_conns": "100", "nope": "1"} {
		if _, err := engines.New(Name, engines.Config{Options: map[string]string{k: v}}, enginetest.NewHandler(t)); err == nil {
			t.Errorf("option %s=%s accepted", k, v)
		}
	}
	if _, err := engines.New(Name, engines.Config{}, nil); err == nil {
		t.Error("nil handler accepted")
	}
}

func TestMaxFrame(t *testing.T) {
	h := enginetest.NewHandler(t)
	const maxFrame = 1024
	e := enginetest.Start(t, Name, engines.Config{MaxFrame: maxFrame, ReadBufferSize: 4096}, h)
	// A line of exactly MaxFrame bytes is fine.
	c := enginetest.Dial(t, e)
	line := append(bytes.Repeat([]byte("z"), maxFrame-1), '\n')
	if _, err := c.Write(line); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, line) {
		t.Fatalf("largest line: %v", err)
	}
	// One byte more, arriving in one piece, closes with ErrFrameTooLarge.
	c2 := enginetest.Dial(t, e)
	sc2 := h.Conn(t, c2)
	if _, err := c2.Write(bytes.Repeat([]byte("z"), maxFrame+1)); err != nil {
		t.Fatal(err)
	}
	if id := h.WaitClosed(t); id != sc2.ID() {
		t.Fatalf("closed %d want %d", id, sc2.ID())
	}
	if err := h.Reason(sc2.ID()); !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("OnClose reason %v, want %v", err, engines.ErrFrameTooLarge)
	}
	if err := sc2.Write([]byte("x")); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
}

// errHandler answers "quit" with a goodbye and an error, and "bad" with an impossible count.
type errHandler struct{ *enginetest.Handler }

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
	return h.Handler.OnData(c, in)
}

func TestHandlerErrorFlushesQueued(t *testing.T) {
	h := errHandler{enginetest.NewHandler(t)}
	e := enginetest.Start(t, Name, engines.Config{}, h)
	c := enginetest.Dial(t, e)
	if _, err := c.Write([]byte("quit\nmore\n")); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "bye\n" {
		t.Fatalf("read %q, %v; want the goodbye then EOF", got, err)
	}
	h.WaitClosed(t)
	// A handler consuming more than it was offered is an error, not a panic.
	c2 := enginetest.Dial(t, e)
	if _, err := c2.Write([]byte("bad\n")); err != nil {
		t.Fatal(err)
	}
	h.WaitClosed(t)
	for id, err := range h.Reasons() {
		if err == nil {
			t.Errorf("conn %d: OnClose reason nil, want the handler's error", id)
		}
	}
}

func TestCloseWithQueueFlushes(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{MaxWriteQueue: 32 << 20}, h)
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c)
	// Queue more than the kernel buffers take, then Close: the peer still gets all of it.
	chunk := bytes.Repeat([]byte("q"), 64<<10)
	const n = 128 // 8 MiB
	for range n {
		if err := sc.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	// Wait until the event loop has flushed into gnet's outbound buffer, so Close meets a backlog.
	for deadline := time.Now().Add(5 * time.Second); sc.(*conn).outbound.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
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
	h.WaitClosed(t)
	if err := h.Reason(sc.ID()); err != nil {
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
		_ = c.Close()
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
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{}, h)
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
		for _, err := range h.Reasons() {
			stopped = stopped || errors.Is(err, ErrStopped)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = stdin.Close()
	_ = cmd.Wait()
	restore()
	if !stopped {
		t.Fatal("no OnClose with ErrStopped: gnet did not stop at the open-files limit")
	}
	opens, closes := h.Opens(), len(h.Closes())
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
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("again\n")); err != nil {
		t.Fatal(err)
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || got != "again\n" {
		t.Fatalf("echo after restart: %q, %v", got, err)
	}
}

// TestLargePartialFrames covers partial frames past spillAt, which the engine keeps in its own
// buffer: whole lines echoed, a partial line carried over, MaxFrame still enforced.
func TestLargePartialFrames(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{MaxFrame: 256 << 10, ReadBufferSize: 4096}, h)
	c := enginetest.Dial(t, e)
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
	sc := h.Conn(t, c)
	big := bytes.Repeat([]byte("o"), 300<<10)
	for i := 0; i < len(big); i += 32 << 10 {
		if _, err := c.Write(big[i:min(i+32<<10, len(big))]); err != nil {
			break // the engine may have closed it already
		}
	}
	if id := h.WaitClosed(t); id != sc.ID() {
		t.Fatalf("closed %d want %d", id, sc.ID())
	}
	if err := h.Reason(sc.ID()); !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("OnClose reason %v, want %v", err, engines.ErrFrameTooLarge)
	}
}

// TestWriteFrameEmpty: an empty WriteFrame is accepted and sends nothing (the fan-out through
// WriteFrame is conformance's TestWriteFrame).
func TestWriteFrameEmpty(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{}, h)
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c).(engines.FrameWriter)
	if err := sc.WriteFrame(nil, nil); err != nil {
		t.Fatalf("empty frame: %v", err)
	}
	if err := sc.WriteFrame([]byte("he"), []byte("ad\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := bufio.NewReader(c).ReadString('\n'); err != nil || got != "head\n" {
		t.Fatalf("after an empty frame read %q, %v; want %q", got, err, "head\n")
	}
}
