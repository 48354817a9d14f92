package quicengine

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"
	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/enginetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestRegistered(t *testing.T) {
	if got, err := engines.Transports(Name); err != nil || len(got) != 1 || got[0] != engines.TransportQUIC {
		t.Fatalf("Transports(quic) = %v, %v", got, err)
	}
	if engines.Carries(Name, engines.TransportTCP) {
		t.Fatal("quic engine claims to carry tcp")
	}
}

// TestBadConfig: each bad setting is refused by New with an error naming it.
func TestBadConfig(t *testing.T) {
	h := enginetest.NewHandler(t)
	cases := []struct {
		cfg  engines.Config
		want string
	}{
		{engines.Config{}, "Config.TLS"},
		{engines.Config{TLS: &tls.Config{}}, "Config.TLS has no certificate"},
		{engines.Config{TLS: serverTLS(t), Addr: "127.0.0.1:notaport"}, "Config.Addr"},
		{engines.Config{TLS: serverTLS(t), Options: map[string]string{OptIdleTimeout: "0s"}}, OptIdleTimeout},
		{engines.Config{TLS: serverTLS(t), Options: map[string]string{OptReceiveWindow: "big"}}, OptReceiveWindow},
		{engines.Config{TLS: serverTLS(t), Options: map[string]string{"max_streams": "2"}}, "max_streams"},
	}
	for _, tc := range cases {
		_, err := engines.New(Name, tc.cfg, h)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v): err %v, want one naming %q", tc.cfg.Options, err, tc.want)
		}
	}
}

// TestEchoSplitAndCoalesced: partial lines wait for the rest; several lines in one write are all
// answered; the server sees the client's address.
func TestEchoSplitAndCoalesced(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := start(t, engines.Config{}, h)
	if e.Addr().Network() != "udp" {
		t.Fatalf("Addr %v is not UDP", e.Addr())
	}
	c := dial(t, e)
	for _, piece := range []string{"he", "l", "lo\nwo", "rld", "\n"} {
		c.write(t, piece)
	}
	if got := c.read(t, len("hello\nworld\n")); got != "hello\nworld\n" {
		t.Fatalf("split: echoed %q", got)
	}
	var all strings.Builder
	for i := range 100 {
		fmt.Fprintf(&all, "line %d\n", i)
	}
	c.write(t, all.String())
	if got := c.read(t, all.Len()); got != all.String() {
		t.Fatalf("coalesced: echoed %q", got)
	}
	sc := serverConn(t, h, c)
	if sc.RemoteAddr() != c.localAddr().String() {
		t.Fatalf("RemoteAddr %q, want %q", sc.RemoteAddr(), c.localAddr())
	}
}

// TestLargestFrame: a line of MaxFrame bytes is echoed; a partial one of MaxFrame bytes closes the
// connection with ErrFrameTooLarge, and another connection is unaffected.
func TestLargestFrame(t *testing.T) {
	const max = 4096
	h := enginetest.NewHandler(t)
	e := start(t, engines.Config{MaxFrame: max, ReadBufferSize: 1000}, h)
	c := dial(t, e)
	line := strings.Repeat("x", max-1) + "\n"
	c.write(t, line[:1500])
	c.write(t, line[1500:])
	if got := c.read(t, max); got != line {
		t.Fatalf("largest frame: echoed %d bytes", len(got))
	}
	other := dial(t, e)
	other.write(t, "still here\n")
	other.read(t, len("still here\n"))

	c.write(t, strings.Repeat("y", max+1))
	id := h.WaitClosed(t)
	if err := h.Reason(id); !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("OnClose reason %v, want ErrFrameTooLarge", err)
	}
	if _, err := c.readEnd(t); err == nil {
		t.Fatal("client still open")
	}
	other.write(t, "and here\n")
	if got := other.read(t, len("and here\n")); got != "and here\n" {
		t.Fatalf("other connection echoed %q", got)
	}
}

// TestPushFanOut: 8 goroutines write to 300 idle connections at once, through Write and
// WriteFrame (a shared tail); every client gets every line whole, each goroutine's in order.
func TestPushFanOut(t *testing.T) {
	const (
		conns   = 300
		writers = 8
		each    = 10
	)
	h := enginetest.NewHandler(t)
	e := start(t, engines.Config{}, h)
	t0 := time.Now()
	clients := make([]*client, conns)
	scs := make([]engines.Conn, conns)
	for i := range clients {
		clients[i] = dial(t, e)
		clients[i].write(t, "hi\n") // the stream reaches the server with its first bytes
		clients[i].read(t, 3)
		scs[i] = serverConn(t, h, clients[i])
	}
	t.Logf("dialled %d in %v", conns, time.Since(t0))
	tail := []byte("-shared-tail\n")
	var wg sync.WaitGroup
	var werr atomic.Value
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				for _, sc := range scs {
					var err error
					if n%2 == 0 {
						err = sc.Write(fmt.Appendf(nil, "w%d-%d\n", w, n))
					} else {
						err = sc.(engines.FrameWriter).WriteFrame(fmt.Appendf(nil, "w%d-%d", w, n), tail)
					}
					if err != nil {
						werr.Store(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := werr.Load(); err != nil {
		t.Fatalf("write: %v", err)
	}
	var rg sync.WaitGroup
	errs := make(chan error, conns)
	for _, c := range clients {
		rg.Add(1)
		go func() {
			defer rg.Done()
			_ = c.st.SetReadDeadline(time.Now().Add(3 * wait)) // 48,000 frames under -race
			br := bufio.NewReader(c.st)
			next := make([]int, writers)
			for range writers * each {
				l, err := br.ReadString('\n')
				if err != nil {
					errs <- fmt.Errorf("read: %v", err)
					return
				}
				var w, n int
				var rest string
				if k, _ := fmt.Sscanf(l, "w%d-%d%s", &w, &n, &rest); k < 2 || w >= writers || n != next[w] ||
					(n%2 == 1 && rest != "-shared-tail") || (n%2 == 0 && k != 2) {
					errs <- fmt.Errorf("line %q out of order or torn (want w%d-%d)", l, w, next[min(w, writers-1)])
					return
				}
				next[w]++
			}
		}()
	}
	rg.Wait()
	t.Logf("read in %v", time.Since(t0))
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if string(tail) != "-shared-tail\n" {
		t.Fatalf("shared tail modified: %q", tail)
	}
}

// TestSlowReader: a client that stops reading fills its write queue (ErrQueueFull, without the
// write blocking) and is closed after WriteTimeout as a slow consumer (CodeSlowConsumer at the
// client, ErrWriteTimeout at OnClose); another connection keeps echoing meanwhile.
func TestSlowReader(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := start(t, engines.Config{MaxWriteQueue: 64 << 10, WriteTimeout: time.Second}, h)
	small := &quic.Config{MaxIdleTimeout: time.Minute, InitialStreamReceiveWindow: 16 << 10, MaxStreamReceiveWindow: 16 << 10,
		InitialConnectionReceiveWindow: 16 << 10, MaxConnectionReceiveWindow: 16 << 10}
	slow := dialWith(t, e, dialOpts{config: small})
	slow.write(t, "x\n")
	slow.read(t, 2)
	sc := serverConn(t, h, slow)
	other := dial(t, e)
	other.write(t, "ok\n")
	other.read(t, 3)

	frame := []byte(strings.Repeat("z", 4095) + "\n")
	full := false
	for i := 0; i < 10000 && !full; i++ {
		switch err := sc.Write(frame); {
		case errors.Is(err, engines.ErrQueueFull):
			full = true
		case err != nil:
			t.Fatalf("write %d: %v", i, err)
		}
	}
	if !full {
		t.Fatal("no ErrQueueFull after 40 MB to a client that does not read")
	}
	other.write(t, "still\n")
	if got := other.read(t, 6); got != "still\n" {
		t.Fatalf("other connection echoed %q", got)
	}
	id := h.WaitClosed(t)
	if id != sc.ID() {
		t.Fatalf("closed conn %d, want the slow one %d", id, sc.ID())
	}
	if err := h.Reason(id); !errors.Is(err, engines.ErrWriteTimeout) {
		t.Fatalf("OnClose reason %v, want ErrWriteTimeout", err)
	}
	select {
	case <-slow.qc.Context().Done():
	case <-time.After(wait):
		t.Fatal("slow client's connection not closed")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(slow.qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != CodeSlowConsumer {
		t.Fatalf("slow client closed with %v, want application error %#x", err, CodeSlowConsumer)
	}
	if err := sc.Write(frame); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("write after close: %v, want ErrClosed", err)
	}
	other.write(t, "after\n")
	other.read(t, 6)
}

// TestClose: a local Close flushes what was queued, then the client reads the end of the stream
// and OnClose gets nil; the client ending its stream, closing its connection, resetting its
// stream, or going idle each give one OnClose with the matching reason.
func TestClose(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		h := enginetest.NewHandler(t)
		e := start(t, engines.Config{}, h)
		c := dial(t, e)
		c.write(t, "a\n")
		c.read(t, 2)
		sc := serverConn(t, h, c)
		big := strings.Repeat("q", 200<<10) + "\n"
		if err := sc.Write([]byte(big)); err != nil {
			t.Fatal(err)
		}
		if err := sc.Write([]byte("bye\n")); err != nil {
			t.Fatal(err)
		}
		_ = sc.Close()
		_ = sc.Close()
		got, err := c.readEnd(t)
		if got != big+"bye\n" || !errors.Is(err, io.EOF) {
			t.Fatalf("client read %d bytes, %v; want %d then EOF", len(got), err, len(big)+4)
		}
		c.close()
		if id := h.WaitClosed(t); h.Reason(id) != nil {
			t.Fatalf("OnClose reason %v, want nil", h.Reason(id))
		}
		if err := sc.Write([]byte("late\n")); !errors.Is(err, engines.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
	})
	remote := func(name string, end func(c *client), want func(error) bool) {
		t.Run(name, func(t *testing.T) {
			h := enginetest.NewHandler(t)
			e := start(t, engines.Config{}, h)
			c := dial(t, e)
			c.write(t, "a\n")
			c.read(t, 2)
			end(c)
			id := h.WaitClosed(t)
			if err := h.Reason(id); !want(err) {
				t.Fatalf("OnClose reason %v (%T)", err, err)
			}
			if n := h.Closes()[id]; n != 1 {
				t.Fatalf("OnClose ran %d times", n)
			}
		})
	}
	isEOF := func(err error) bool { return errors.Is(err, io.EOF) }
	remote("stream-end", func(c *client) { _ = c.st.Close() }, isEOF)
	remote("conn-close", func(c *client) { _ = c.qc.CloseWithError(0, "") }, isEOF)
	remote("stream-reset", func(c *client) { c.st.CancelWrite(7) }, func(err error) bool {
		var se *quic.StreamError
		return errors.As(err, &se) && se.ErrorCode == 7 && se.Remote
	})
	t.Run("idle-timeout", func(t *testing.T) {
		h := enginetest.NewHandler(t)
		e := start(t, engines.Config{Options: map[string]string{OptIdleTimeout: "1s"}}, h)
		c := dial(t, e)
		c.write(t, "a\n")
		c.read(t, 2)
		id := h.WaitClosed(t)
		var it *quic.IdleTimeoutError
		if err := h.Reason(id); !errors.As(err, &it) {
			t.Fatalf("OnClose reason %v, want an idle timeout", err)
		}
	})
}

// TestNoStream: OnOpen comes at accept, before the client opens a stream, so the core's login
// timeout covers a client that never does; Close then ends the QUIC connection.
func TestNoStream(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := start(t, engines.Config{}, h)
	c, err := dialConn(t, e, dialOpts{})
	if err != nil {
		t.Fatal(err)
	}
	sc := serverConn(t, h, c)
	if err := sc.Write([]byte("queued before the stream\n")); err != nil {
		t.Fatal(err)
	}
	_ = sc.Close()
	if id := h.WaitClosed(t); id != sc.ID() || h.Reason(id) != nil {
		t.Fatalf("OnClose %d, %v", id, h.Reason(id))
	}
	select {
	case <-c.qc.Context().Done():
	case <-time.After(wait):
		t.Fatal("client connection still open")
	}
}

// TestSecondStream: the client may open one bidirectional stream; a second is refused by the
// stream limit and never reaches the handler, and the first keeps working.
func TestSecondStream(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := start(t, engines.Config{}, h)
	c := dial(t, e)
	c.write(t, "one\n")
	c.read(t, 4)
	var sl *quic.StreamLimitReachedError
	if _, err := c.qc.OpenStream(); !errors.As(err, &sl) {
		t.Fatalf("second stream: %v, want the stream limit", err)
	}
	if _, err := c.qc.OpenUniStream(); err == nil {
		t.Fatal("a unidirectional stream was allowed")
	}
	c.write(t, "two\n")
	if got := c.read(t, 4); got != "two\n" {
		t.Fatalf("echoed %q", got)
	}
	if h.Opens() != 1 {
		t.Fatalf("%d opens", h.Opens())
	}
}

// TestWrongALPN: a client offering another protocol fails the handshake and is never opened.
func TestWrongALPN(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := start(t, engines.Config{}, h)
	for _, alpn := range [][]string{{"h3"}, {"pushwire/2", "http/1.1"}} {
		if _, err := dialConn(t, e, dialOpts{alpn: alpn}); err == nil || !strings.Contains(err.Error(), "no application protocol") {
			t.Fatalf("ALPN %v: dial err %v, want a handshake refusal", alpn, err)
		}
	}
	c := dial(t, e) // the right one still works
	c.write(t, "ok\n")
	c.read(t, 3)
	if h.Opens() != 1 {
		t.Fatalf("%d opens, want 1", h.Opens())
	}
}

// TestMaxConns: past the cap a connection gets RefuseMessage on its stream and the end of the
// stream, never reaches the handler, and is counted; without a message it is closed with
// CodeRefused; a slot frees when a connection closes.
func TestMaxConns(t *testing.T) {
	h := enginetest.NewHandler(t)
	e := start(t, engines.Config{MaxConns: 2, RefuseMessage: []byte("GOAWAY\n")}, h)
	a, b := dial(t, e), dial(t, e)
	for _, c := range []*client{a, b} {
		c.write(t, "in\n")
		c.read(t, 3)
	}
	x := dial(t, e)
	x.write(t, "LOGIN\n")
	got, _ := x.readEnd(t)
	if got != "GOAWAY\n" {
		t.Fatalf("refused client read %q", got)
	}
	x.close()
	if h.Opens() != 2 || e.(engines.Counter).Refused() != 1 {
		t.Fatalf("opens %d refused %d", h.Opens(), e.(engines.Counter).Refused())
	}
	a.close()
	h.WaitClosed(t)
	waitFor(t, "a freed slot", func() bool {
		c := dial(t, e)
		defer c.close()
		c.write(t, "again\n")
		return c.read(t, 6) == "again\n"
	})

	t.Run("no-message", func(t *testing.T) {
		h := enginetest.NewHandler(t)
		e := start(t, engines.Config{MaxConns: 1}, h)
		a := dial(t, e)
		a.write(t, "in\n")
		a.read(t, 3)
		x, err := dialConn(t, e, dialOpts{})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-x.qc.Context().Done():
		case <-time.After(wait):
			t.Fatal("refused connection not closed")
		}
		var ae *quic.ApplicationError
		if err := context.Cause(x.qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != CodeRefused {
			t.Fatalf("refused with %v, want application error %#x", err, CodeRefused)
		}
	})
}

// TestShutdown: Shutdown with connections open (some with writes queued) flushes them, gives each
// one OnClose, ends every client, and returns; the engine's goroutines are gone (TestMain).
func TestShutdown(t *testing.T) {
	h := enginetest.NewHandler(t)
	e, err := engines.New(Name, engines.Config{TLS: serverTLS(t)}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	const n = 20
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, e)
		clients[i].write(t, "x\n")
		clients[i].read(t, 2)
		if err := serverConn(t, h, clients[i]).Write([]byte("last words\n")); err != nil {
			t.Fatal(err)
		}
	}
	// Each client reads to the end and then closes, as a client does.
	var wg sync.WaitGroup
	got := make([]string, n)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], _ = c.readEnd(t)
			c.close()
		}()
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	wg.Wait()
	for i, s := range got {
		if s != "last words\n" {
			t.Errorf("client %d read %q before the end", i, s)
		}
	}
	for id, k := range h.Closes() {
		if k != 1 {
			t.Errorf("conn %d: %d OnClose", id, k)
		}
	}
	if len(h.Closes()) != n {
		t.Fatalf("%d OnClose, want %d", len(h.Closes()), n)
	}
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("second shutdown: %v", err)
	}
}

// TestShutdownUnreadClients: clients that read only after Shutdown returned still get what was
// queued for them and then the end of the stream (the engine drops its connections without a
// CONNECTION_CLOSE once what it sent is acknowledged, so the clients' stacks keep it).
func TestShutdownUnreadClients(t *testing.T) {
	h := enginetest.NewHandler(t)
	e, err := engines.New(Name, engines.Config{TLS: serverTLS(t)}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	const n = 20
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, e)
		clients[i].write(t, "x\n")
		clients[i].read(t, 2)
		if i%2 == 0 {
			if err := serverConn(t, h, clients[i]).Write([]byte("queued\n")); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if len(h.Closes()) != n {
		t.Fatalf("%d OnClose, want %d", len(h.Closes()), n)
	}
	for i, c := range clients {
		got, err := c.readEnd(t)
		want := ""
		if i%2 == 0 {
			want = "queued\n"
		}
		if got != want || !errors.Is(err, io.EOF) {
			t.Errorf("client %d read %q, %v; want %q then EOF", i, got, err, want)
		}
	}
}

// TestUDPBuffers: the engine raises its socket's buffers to udp_buffer at bind (as root past the
// system maximum; Linux reports twice the size set).
func TestUDPBuffers(t *testing.T) {
	const want = 4 << 20
	e := start(t, engines.Config{Options: map[string]string{OptUDPBuffer: strconv.Itoa(want)}}, enginetest.NewHandler(t))
	rc, err := e.(*engine).udp.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var rcv, snd int
	_ = rc.Control(func(fd uintptr) {
		rcv, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
		snd, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if os.Geteuid() != 0 {
		t.Logf("not root: rcvbuf %d, sndbuf %d (the engine logs a warning when short)", rcv, snd)
		return
	}
	if rcv < want || snd < want {
		t.Fatalf("rcvbuf %d, sndbuf %d; want at least %d", rcv, snd, want)
	}
}
