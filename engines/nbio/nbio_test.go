package nbioengine

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/enginetest"
)

// The cases every engine must pass (partial and coalesced input, the largest frame, writes from
// many goroutines through Write and WriteFrame, close from either side, write after close, a slow
// reader, shutdown with connections open) run in engines/conformance. This file keeps what is
// nbio's own: a Close flushing a full write queue, a Write over the queue bound, MaxFrame with a
// small read buffer and the pending buffer's release, a handler's bad byte count, Write and Close
// inside OnOpen, options, Start/Shutdown edge cases and WriteFrame's unpooled path.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestFlushQueuedThenClose: Close with bytes queued behind a peer that is not reading yet sends
// all of them, in order, once the peer reads, and only then the end (EOF, not a reset).
func TestFlushQueuedThenClose(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{MaxWriteQueue: 64 << 10, WriteTimeout: 5 * time.Second}, h)
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c)
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
	if id := h.WaitClosed(t); id != sc.ID() {
		t.Fatalf("closed %d want %d", id, sc.ID())
	}
	if err := h.Reason(sc.ID()); err != nil {
		t.Fatalf("OnClose reason %v, want nil", err)
	}
}

// TestWriteOverQueueBound: a single Write larger than the queue bound is refused with
// ErrQueueFull and the connection stays usable (nbio's own overflow would close it).
func TestWriteOverQueueBound(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{MaxWriteQueue: 1024}, h)
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c)
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
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{MaxFrame: 64, ReadBufferSize: 16}, h)
	c := enginetest.Dial(t, e)
	r := bufio.NewReader(c)
	sc := h.Conn(t, c).(*conn)
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
	pending := sc.in.Pending()
	sc.hmu.Unlock()
	if pending != 0 {
		t.Fatalf("pending buffer kept after the frame was consumed (%d bytes)", pending)
	}
	if _, err := c.Write(bytes.Repeat([]byte("b"), 200)); err != nil {
		t.Fatal(err)
	}
	h.WaitClosed(t)
	if err := h.Reason(sc.ID()); !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("OnClose reason %v, want %v", err, engines.ErrFrameTooLarge)
	}
}

// badHandler claims to consume more than it was offered.
type badHandler struct {
	*enginetest.Handler
}

func (h badHandler) OnData(c engines.Conn, in []byte) (int, error) { return len(in) + 1, nil }

func TestHandlerOverConsumes(t *testing.T) {
	h := badHandler{enginetest.NewHandler(t)}
	e := enginetest.Start(t, Name, engines.Config{}, h)
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c)
	if _, err := c.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	h.WaitClosed(t)
	if err := h.Reason(sc.ID()); err == nil {
		t.Fatal("OnClose reason nil, want the handler's bad count")
	}
}

// openHandler writes and closes from OnOpen.
type openHandler struct {
	*enginetest.Handler
}

func (h openHandler) OnOpen(c engines.Conn) {
	h.Handler.OnOpen(c)
	_ = c.Write([]byte("hi\n"))
	_ = c.Close()
}

func TestWriteAndCloseInOnOpen(t *testing.T) {
	h := openHandler{enginetest.NewHandler(t)}
	e := enginetest.Start(t, Name, engines.Config{}, h)
	c := enginetest.Dial(t, e)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hi\n" {
		t.Fatalf("read %q %v", got, err)
	}
	id := h.WaitClosed(t)
	if err, n := h.Reason(id), h.Closes()[id]; err != nil || n != 1 {
		t.Fatalf("OnClose %d times, reason %v; want once, nil", n, err)
	}
}

func TestOptionsAndLifecycle(t *testing.T) {
	h := enginetest.NewHandler(t)
	for _, opts := range []map[string]string{
		{"sweep": "soon"}, {"sweep": "-1s"}, {"read_times": "x"}, {"read_times": "0"},
		{"lock_poller": "maybe"}, {"nbio_log": "loud"}, {"unknown": "x"},
	} {
		if _, err := engines.New(Name, engines.Config{Options: opts}, h); err == nil {
			t.Errorf("options %v accepted", opts)
		}
	}
	e, err := engines.New(Name, engines.Config{Options: map[string]string{
		"sweep": "50ms", "read_times": "8", "lock_poller": "false",
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
	h := enginetest.NewHandler(t)
	e, err := engines.New(Name, engines.Config{MaxWriteQueue: 64 << 10, WriteTimeout: time.Minute}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c)
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
	if n := len(h.Closes()); n != 1 {
		t.Fatalf("%d OnClose, want 1", n)
	}
}

// TestWriteFrameLarge: a frame larger than maxPooledFrame takes WriteFrame's unpooled path and
// arrives whole. (WriteFrame from many goroutines is conformance's TestWriteFrame, whose frames
// all take the pooled path.)
func TestWriteFrameLarge(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := enginetest.Start(t, Name, engines.Config{}, h)
	c := enginetest.Dial(t, e)
	sc := h.Conn(t, c).(engines.FrameWriter)
	big := bytes.Repeat([]byte("b"), maxPooledFrame)
	if err := sc.WriteFrame([]byte("H"), big); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got := make([]byte, 1+len(big))
	if _, err := io.ReadFull(c, got); err != nil || got[0] != 'H' || !bytes.Equal(got[1:], big) {
		t.Fatalf("large frame: %v", err)
	}
}
