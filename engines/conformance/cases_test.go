package conformance

import (
	"bytes"
	"context"
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/internal/wsproto"
)

// TestPartialAndCoalesced: a frame dribbled one byte per write, 100 frames in one write, and the
// same frames split at odd offsets each arrive whole and in order (checked on the echo).
//
// On tcp, tls and quic the pushwire frames themselves are cut (over tls each piece is a TLS
// record of its own, over quic a stream write). A WebSocket message carries whole frames, so on
// ws and wss the cuts fall in the WebSocket bytes instead: the client writes masked WebSocket
// frames itself over the connection under its codec, cut at every byte, 100 messages in one
// write, cut at odd offsets; and a frame fragmented over three WebSocket frames (binary and two
// continuations), dribbled too. That is what the layer's incremental parser must survive.
func TestPartialAndCoalesced(t *testing.T) {
	forEachEngine(t, func(t *testing.T, tg target) {
		h := newHandler(frame.Limits{}, true)
		s := tg.start(t, engines.Config{}, h)
		c, raw := dialRaw(t, s)
		dribble := func(b []byte) {
			t.Helper()
			for i := range b {
				if _, err := raw.Write(b[i : i+1]); err != nil {
					t.Fatalf("dribble byte %d: %v", i, err)
				}
			}
		}

		one := mkFrame(1, 7, 32, 300)
		dribble(raw.wrap(one, 1))
		if _, got := c.mustNext(t, 5*time.Second); !bytes.Equal(got, one) {
			t.Fatalf("dribbled frame echoed as % x", got[:min(len(got), 32)])
		}
		wantFrames := int64(201)
		if raw.message {
			dribble(raw.wrap(one, 3))
			if _, got := c.mustNext(t, 5*time.Second); !bytes.Equal(got, one) {
				t.Fatalf("fragmented frame echoed as % x", got[:min(len(got), 32)])
			}
			wantFrames++
		}

		var many []byte
		var want [][]byte
		for i := range 100 {
			f := mkFrame(2, uint32(i), 0, i*7)
			want = append(want, f)
			many = append(many, raw.wrap(f, 1)...)
		}
		if _, err := raw.Write(many); err != nil {
			t.Fatal(err)
		}
		for i, w := range want {
			if _, got := c.mustNext(t, 5*time.Second); !bytes.Equal(got, w) {
				t.Fatalf("coalesced frame %d: got seq/len mismatch (%d bytes, want %d)", i, len(got), len(w))
			}
		}

		// The same stream cut at offsets that fall inside headers, meta and bodies.
		many = many[:0]
		for _, f := range want {
			many = append(many, raw.wrap(f, 1)...) // new masks: the same bytes twice are not needed
		}
		for off, step := 0, 1; off < len(many); step = step%97 + 13 {
			end := min(off+step, len(many))
			if _, err := raw.Write(many[off:end]); err != nil {
				t.Fatal(err)
			}
			off = end
		}
		for i, w := range want {
			if _, got := c.mustNext(t, 5*time.Second); !bytes.Equal(got, w) {
				t.Fatalf("split frame %d mismatch", i)
			}
		}
		if n := h.frames.Load(); n != wantFrames {
			t.Fatalf("handler decoded %d frames, want %d", n, wantFrames)
		}
	})
}

// TestLargestFrame: the largest frame a Limits allows passes with Config.MaxFrame set to it; one
// byte more closes that connection (by the handler's limit, or by the engine's MaxFrame with
// ErrFrameTooLarge) and the engine keeps serving the others.
func TestLargestFrame(t *testing.T) {
	lim := frame.Limits{MaxBody: 32 << 10}
	maxFrame := lim.MaxFrame()
	largest := mkFrame(3, 1, frame.MaxMetaLen, lim.MaxBody)
	over := mkFrame(3, 2, frame.MaxMetaLen, lim.MaxBody+1)
	if len(largest) != maxFrame || len(over) != maxFrame+1 {
		t.Fatalf("test frames are %d and %d bytes, want %d and %d", len(largest), len(over), maxFrame, maxFrame+1)
	}
	// sendOver sends the oversized frame on a fresh connection and checks it gets closed while a
	// bystander connection keeps working. It returns the OnClose reason.
	sendOver := func(t *testing.T, s *server, bystander *client) error {
		t.Helper()
		c := dial(t, s)
		sc := s.h.waitOpens(t, 2)
		_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write(over) // the server may close before taking it all
		if _, err := c.expectEnd(t, 5*time.Second); err == nil {
			t.Fatal("no error at end")
		}
		reason := s.h.waitClosed(t, sc, 5*time.Second)
		if code, ok := wsCloseStatus(c); ok {
			// Over ws and wss the layer's MaxMessage (the handler's largest frame) stops the
			// message before the handler or the engine sees it, with close status 1009, and
			// OnClose gets a *ws.CloseError wrapping engines.ErrFrameTooLarge.
			if code != wsproto.CloseTooBig {
				t.Fatalf("oversized message: close status %d, want %d", code, wsproto.CloseTooBig)
			}
			if !errors.Is(reason, engines.ErrFrameTooLarge) {
				t.Fatalf("oversized message: OnClose reason %v, want %v", reason, engines.ErrFrameTooLarge)
			}
		} else if reason == nil {
			t.Fatal("oversized frame: OnClose reason nil, want an error")
		}
		// The engine serves the bystander and new connections.
		for _, cl := range []*client{bystander, dial(t, s)} {
			if _, err := cl.Write(largest); err != nil {
				t.Fatal(err)
			}
			if _, got := cl.mustNext(t, 5*time.Second); !bytes.Equal(got, largest) {
				t.Fatal("largest frame after an oversized one: echo mismatch")
			}
		}
		return reason
	}
	forEachEngine(t, func(t *testing.T, tg target) {
		t.Run("handler-limit", func(t *testing.T) {
			h := newHandler(lim, true)
			s := tg.start(t, engines.Config{MaxFrame: maxFrame}, h)
			by := dial(t, s)
			h.waitOpens(t, 1)
			if _, err := by.Write(largest); err != nil {
				t.Fatal(err)
			}
			if _, got := by.mustNext(t, 5*time.Second); !bytes.Equal(got, largest) {
				t.Fatal("largest frame: echo mismatch")
			}
			if reason := sendOver(t, s, by); !errors.Is(reason, frame.ErrBodyTooLarge) && !errors.Is(reason, engines.ErrFrameTooLarge) {
				t.Errorf("OnClose reason %v, want the handler's %v (or %v)", reason, frame.ErrBodyTooLarge, engines.ErrFrameTooLarge)
			}
		})
		t.Run("engine-MaxFrame", func(t *testing.T) {
			// The handler would accept the bigger frame: only Config.MaxFrame stops it.
			h := newHandler(frame.Limits{MaxBody: 2 * lim.MaxBody}, true)
			s := tg.start(t, engines.Config{MaxFrame: maxFrame}, h)
			by := dial(t, s)
			h.waitOpens(t, 1)
			if reason := sendOver(t, s, by); !errors.Is(reason, engines.ErrFrameTooLarge) {
				t.Errorf("OnClose reason %v, want %v", reason, engines.ErrFrameTooLarge)
			}
		})
	})
}

// TestPushFanOut: 8 goroutines each push their own sequence of frames to every one of 2,000 idle
// connections through Conn.Write; every client receives every frame whole, and each writer's
// frames in order.
func TestPushFanOut(t *testing.T) {
	forEachEngine(t, func(t *testing.T, tg target) {
		fanOut(t, tg, cellConns(tg, 2000), 4, false, func(sc engines.Conn, whole, _, _ []byte) error { return sc.Write(whole) })
	})
}

// TestWriteFrame: the same fan-out through engines.FrameWriter (every engine shipped implements
// it), with a head of its own for every write and a tail shared by all, delivers every frame whole
// and per writer in order; WriteFrame after Close returns ErrClosed.
func TestWriteFrame(t *testing.T) {
	forEachEngine(t, func(t *testing.T, tg target) {
		fanOut(t, tg, cellConns(tg, 200), 16, true, func(sc engines.Conn, _, head, tail []byte) error {
			return sc.(engines.FrameWriter).WriteFrame(append([]byte(nil), head...), tail)
		})
	})
}

// fanOut starts tg, opens conns idle connections, and has 8 goroutines each write its own
// sequence of each frames to every connection with write (given the whole frame, and the same
// split into its 18-byte header and the shared rest). Every client must receive every frame
// whole, and each writer's in order. Then write after Close must return ErrClosed. With
// frameWriter, the engine's Conn must implement engines.FrameWriter.
func fanOut(t *testing.T, tg target, conns, each int, frameWriter bool, write func(sc engines.Conn, whole, head, tail []byte) error) {
	const writers = 8
	h := newHandler(frame.Limits{}, false)
	s := tg.start(t, engines.Config{}, h)
	clients := dialAll(t, s, h, conns)
	scs := h.conns()
	if _, ok := scs[0].(engines.FrameWriter); frameWriter && !ok {
		t.Fatalf("%s: Conn does not implement engines.FrameWriter (every engine shipped does)", tg.name)
	}

	// One encoded buffer per (writer, seq), shared by every connection, as the core does.
	frames := make([][][]byte, writers)
	for w := range frames {
		for i := range each {
			frames[w] = append(frames[w], mkFrame(uint16(w+1), uint32(i), 8, 24))
		}
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				f := frames[w][i]
				for _, sc := range scs {
					if err := write(sc, f, f[:frame.HeaderLen], f[frame.HeaderLen:]); err != nil {
						t.Errorf("writer %d seq %d conn %d: %v", w, i, sc.ID(), err)
						return
					}
				}
			}
		})
	}
	// Read on a few goroutines, one connection after another: everything fits in the kernel
	// buffers, so nothing waits on the order of reading.
	const readers = 16
	for r := range readers {
		wg.Go(func() {
			for ci := r; ci < conns; ci += readers {
				c := clients[ci]
				next := make([]uint32, writers)
				for k := range writers * each {
					f, raw, err := c.next(30 * time.Second)
					if err != nil {
						t.Errorf("client %d frame %d: %v", ci, k, err)
						return
					}
					w := int(f.Biz) - 1
					if w < 0 || w >= writers || f.Seq != next[w] || !bytes.Equal(raw, frames[w][f.Seq]) {
						t.Errorf("client %d frame %d: biz %d seq %d, want seq %d of that writer, whole", ci, k, f.Biz, f.Seq, next[max(w, 0)])
						return
					}
					next[w]++
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d frames to %d connections from %d writers delivered in %v", writers*each, conns, writers, time.Since(start))

	_ = scs[0].Close()
	f := frames[0][0]
	if err := write(scs[0], f, f[:frame.HeaderLen], f[frame.HeaderLen:]); !errors.Is(err, engines.ErrClosed) {
		t.Errorf("write after Close: %v, want %v", err, engines.ErrClosed)
	}
}

// TestClose: a close from the client and a Close from another goroutine on the server each get
// exactly one OnClose; what was queued before the server's Close reaches the client before EOF;
// a handler error closes the connection.
func TestClose(t *testing.T) {
	forEachEngine(t, func(t *testing.T, tg target) {
		h := newHandler(frame.Limits{}, true)
		s := tg.start(t, engines.Config{}, h)

		t.Run("client", func(t *testing.T) {
			c := dial(t, s)
			sc := h.waitOpens(t, 1)
			_ = c.Close()
			_ = h.waitClosed(t, sc, 5*time.Second)
		})

		t.Run("server", func(t *testing.T) {
			c := dial(t, s)
			sc := h.waitOpens(t, 2)
			const queued = 50
			var want [][]byte
			for i := range queued {
				want = append(want, mkFrame(4, uint32(i), 0, 1000))
			}
			done := make(chan error, 1)
			go func() {
				for _, f := range want {
					if err := sc.Write(f); err != nil {
						done <- err
						return
					}
				}
				_ = sc.Close()
				done <- sc.Close() // a second Close is harmless
			}()
			if err := <-done; err != nil {
				t.Fatalf("server side: %v", err)
			}
			for i, w := range want {
				if _, got := c.mustNext(t, 5*time.Second); !bytes.Equal(got, w) {
					t.Fatalf("queued frame %d: mismatch", i)
				}
			}
			if n, err := c.expectEnd(t, 5*time.Second); !errors.Is(err, io.EOF) || n != 0 {
				t.Fatalf("after the queued frames: %d more bytes and %v, want EOF", n, err)
			}
			if reason := h.waitClosed(t, sc, 5*time.Second); reason != nil {
				t.Errorf("OnClose reason %v after a local Close, want nil", reason)
			}
		})

		t.Run("handler-error", func(t *testing.T) {
			c := dial(t, s)
			sc := h.waitOpens(t, 3)
			if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil { // bad magic
				t.Fatal(err)
			}
			if _, err := c.expectEnd(t, 5*time.Second); err == nil {
				t.Fatal("no error at end")
			}
			reason := h.waitClosed(t, sc, 5*time.Second)
			if code, ok := wsCloseStatus(c); ok {
				// Over ws and wss the layer closes with 1002 and gives OnClose a *ws.CloseError
				// wrapping the handler's error.
				if code != wsproto.CloseProtocolError {
					t.Errorf("close status %d after the handler's error, want %d", code, wsproto.CloseProtocolError)
				}
				if reason == nil {
					t.Error("OnClose reason nil after the handler's error")
				}
			} else if reason == nil {
				t.Error("OnClose reason nil after the handler's error")
			}
		})

		time.Sleep(50 * time.Millisecond) // room for a duplicate OnClose to show
		for _, sc := range h.conns() {
			if n := h.closeCountOf(sc); n != 1 {
				t.Errorf("conn %d: OnClose %d times", sc.ID(), n)
			}
		}
	})
}

// TestWriteAfterClose: Write after a local Close, after the peer closed, and after Shutdown
// returns engines.ErrClosed and never panics; Close stays harmless.
func TestWriteAfterClose(t *testing.T) {
	forEachEngine(t, func(t *testing.T, tg target) {
		h := newHandler(frame.Limits{}, true)
		s := tg.start(t, engines.Config{}, h)
		f := mkFrame(5, 1, 0, 10)

		dial(t, s)
		local := h.waitOpens(t, 1)
		_ = local.Close()
		if err := local.Write(f); !errors.Is(err, engines.ErrClosed) {
			t.Errorf("Write after Close: %v, want %v", err, engines.ErrClosed)
		}
		_ = h.waitClosed(t, local, 5*time.Second)
		if err := local.Write(f); !errors.Is(err, engines.ErrClosed) {
			t.Errorf("Write after OnClose: %v, want %v", err, engines.ErrClosed)
		}

		c := dial(t, s)
		peer := h.waitOpens(t, 2)
		_ = c.Close()
		_ = h.waitClosed(t, peer, 5*time.Second)
		if err := peer.Write(f); !errors.Is(err, engines.ErrClosed) {
			t.Errorf("Write after the peer closed: %v, want %v", err, engines.ErrClosed)
		}
		_ = peer.Close()
		_ = peer.Close()

		third := dial(t, s)
		open := h.waitOpens(t, 3)
		go func() { _, _ = io.Copy(io.Discard, third) }() // reads to the end, as a client does
		if err := s.shutdown(10 * time.Second); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if err := open.Write(f); !errors.Is(err, engines.ErrClosed) {
			t.Errorf("Write after Shutdown: %v, want %v", err, engines.ErrClosed)
		}
		_ = open.Close()
	})
}

// TestSlowReader: a client that never reads. The engine must report ErrQueueFull rather than
// block the writer (no single Write may take a second) and keep memory bounded, and the
// connection must end:
//   - policy-close: the server keeps pushing as the core does (on ErrQueueFull it backs off
//     briefly and retries) while hundreds of MB of writes are attempted, then applies the
//     slow-consumer policy (Close) unless the engine's WriteTimeout closed it first;
//   - write-timeout: the server only retries now and then and never closes: the engine must
//     close the connection itself after Config.WriteTimeout, with OnClose(ErrWriteTimeout).
//
// Over tls and wss the TLS layer closes the connection at its first ErrQueueFull (a sealed
// record refused by the queue cannot be dropped: the next one's sequence number follows it), with
// OnClose(tlslayer.ErrRecordLost): sooner than either policy, and accepted as such
// (queueFullCloses).
func TestSlowReader(t *testing.T) {
	forEachEngine(t, func(t *testing.T, tg target) {
		t.Run("policy-close", func(t *testing.T) { slowReader(t, tg, 2*time.Second, true) })
		t.Run("write-timeout", func(t *testing.T) { slowReader(t, tg, 500*time.Millisecond, false) })
	})
}

func slowReader(t *testing.T, tg target, writeTimeout time.Duration, policy bool) {
	const (
		maxQueue  = 256 << 10
		frameLen  = 64 << 10
		budget    = 512 << 20 // bytes of Write attempts (policy-close)
		heapSlack = 8 << 20
	)
	// grace is how long the server keeps retrying after the first ErrQueueFull (policy-close):
	// 3 s on tcp, 1 s over the layers, which sit above the same engine code (and under the race
	// detector every second of retries is dear).
	grace := 3 * time.Second
	if tg.transport != engines.TransportTCP {
		grace = time.Second
	}
	h := newHandler(frame.Limits{}, false)
	s := tg.start(t, engines.Config{MaxWriteQueue: maxQueue, WriteTimeout: writeTimeout}, h)
	// The client never reads until the end. Its receive buffer is left to the kernel: one
	// locked small (SO_RCVBUF 4 KB) under loopback's 64 KB MSS stalls the final drain of an
	// orphaned socket in FIN-WAIT-1 (silly-window avoidance), whatever the engine.
	c := dial(t, s)
	sc := h.waitOpens(t, 1)
	push := mkFrame(6, 1, 0, frameLen-frame.HeaderLen) // one buffer, shared by every attempt

	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	base := heap()
	var peak uint64
	var attempted, accepted, fulls int
	var firstFull time.Time
	closedByEngine := false
	deadline := time.Now().Add(20 * time.Second)
loop:
	for time.Now().Before(deadline) {
		if policy && attempted >= budget {
			break
		}
		t0 := time.Now()
		err := sc.Write(push)
		if d := time.Since(t0); d > time.Second {
			t.Fatalf("one Write blocked for %v", d)
		}
		attempted += len(push)
		switch {
		case err == nil:
			accepted += len(push)
		case errors.Is(err, engines.ErrQueueFull):
			if fulls++; fulls == 1 {
				firstFull = time.Now()
			}
			switch {
			case !policy:
				if time.Since(firstFull) > writeTimeout+5*time.Second {
					t.Fatalf("connection not closed %v after the first ErrQueueFull (WriteTimeout %v)", time.Since(firstFull), writeTimeout)
				}
				time.Sleep(10 * time.Millisecond)
			case time.Since(firstFull) > grace:
				break loop
			case fulls%8 == 0:
				time.Sleep(50 * time.Microsecond) // back off briefly, then retry
			default:
				runtime.Gosched()
			}
		case errors.Is(err, engines.ErrClosed):
			closedByEngine = true
			break loop
		default:
			t.Fatalf("Write: %v", err)
		}
		if attempted%(64<<20) == 0 {
			peak = max(peak, heap())
		}
	}
	peak = max(peak, heap())
	if fulls == 0 {
		t.Fatalf("no ErrQueueFull after %d MB attempted (%d MB accepted) to a peer that never reads", attempted>>20, accepted>>20)
	}
	if !closedByEngine {
		if !policy {
			t.Fatal("the engine never closed the slow connection")
		}
		_ = sc.Close() // the core's slow-consumer policy
		if err := sc.Write(push); !errors.Is(err, engines.ErrClosed) {
			t.Errorf("Write after Close: %v", err)
		}
	}
	reason := h.waitClosed(t, sc, writeTimeout+5*time.Second)
	slow := errors.Is(reason, engines.ErrWriteTimeout)
	if lost := queueFullCloses[tg.transport]; lost != nil && errors.Is(reason, lost) {
		slow = true // the layer closes at its first ErrQueueFull, by design
	}
	if closedByEngine && !slow {
		t.Errorf("the engine closed the connection with reason %v, want %v", reason, engines.ErrWriteTimeout)
	}
	if !closedByEngine && reason != nil && !slow {
		t.Errorf("OnClose reason %v, want nil or %v", reason, engines.ErrWriteTimeout)
	}
	if grown := int64(peak) - int64(base); grown > heapSlack {
		t.Errorf("heap in use grew by %d KB (limit %d KB)", grown>>10, heapSlack>>10)
	}
	t.Logf("attempted %d MB, accepted %d KB, %d ErrQueueFull, closed by engine %v (%v), heap grew %d KB",
		attempted>>20, accepted>>10, fulls, closedByEngine, reason, (int64(peak)-int64(base))>>10)
	// The client, reading at last, gets what was in flight and then the end.
	if _, err := c.expectEnd(t, writeTimeout+10*time.Second); err == nil {
		t.Error("no error at the end")
	}
}

// TestShutdown: Shutdown with connections open (some with frames queued) returns within a bound,
// every OnClose runs exactly once, every client sees what was queued and then EOF, and the
// listener is gone. The clients read all along, as real clients do: a QUIC client must, since
// stream data not yet read when the connection closes is lost with it.
func TestShutdown(t *testing.T) {
	forEachEngine(t, func(t *testing.T, tg target) {
		conns := cellConns(tg, 200)
		h := newHandler(frame.Limits{}, true)
		s := tg.start(t, engines.Config{}, h)
		clients := dialAll(t, s, h, conns)
		var got atomic.Int64
		var readers sync.WaitGroup
		for _, c := range clients {
			readers.Go(func() {
				for {
					_, _, err := c.next(15 * time.Second)
					if err == nil {
						got.Add(1)
						continue
					}
					if !errors.Is(err, io.EOF) {
						t.Errorf("client: %v, want EOF", err)
					}
					return
				}
			})
		}
		f := mkFrame(8, 1, 0, 100)
		for i, sc := range h.conns() {
			if i%2 == 0 {
				if err := sc.Write(f); err != nil {
					t.Fatal(err)
				}
			}
		}
		t0 := time.Now()
		if err := s.shutdown(10 * time.Second); err != nil {
			t.Fatalf("shutdown: %v", err)
		}
		if d := time.Since(t0); d > 5*time.Second {
			t.Errorf("shutdown took %v", d)
		}
		if n := h.closes.Load(); n != int64(conns) {
			t.Errorf("%d OnClose after Shutdown returned, want %d", n, conns)
		}
		readers.Wait()
		if got.Load() != int64((conns+1)/2) {
			t.Errorf("clients received %d queued frames, want %d", got.Load(), (conns+1)/2)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if c, err := dialTransport(ctx, tg.transport, s.addr); err == nil {
			_ = c.Close()
			t.Error("dial after Shutdown succeeded")
		}
	})
}
