package conformance

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
)

// TestMaxConns: with Config.MaxConns 5, five connections open; a sixth gets
// Config.RefuseMessage and then EOF, and the handler never sees it; the five keep echoing; the
// engine counts the refusal (engines.Counter); once one of the five closes, a new connection is
// accepted and served.
//
// The engine refuses before any layer runs, so the refusal must be what the transport's client
// understands (refuseFor): the GOAWAY frame's bytes on tcp; on ws an HTTP 503 answer, which a
// WebSocket client takes as a refused upgrade; on tls and wss nothing (raw bytes are not a TLS
// record: the client sees its handshake end). On every stream transport a raw TCP peer reads
// exactly those bytes and then EOF, and the transport's own client fails to connect.
func TestMaxConns(t *testing.T) {
	const maxConns = 5
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "reason", "instance at its connection cap")
	meta = frame.AppendMetaString(meta, "retry_ms", "1000")
	refuse := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypeGoaway, Code: frame.CodeOverloaded}, Meta: meta})
	forEachEngine(t, func(t *testing.T, tg target) {
		h := newHandler(frame.Limits{}, true)
		refuse := refuseFor(tg.transport, refuse)
		s := tg.start(t, engines.Config{MaxConns: maxConns, RefuseMessage: bytes.Clone(refuse)}, h)
		counter, ok := s.Engine.(engines.Counter)
		if !ok {
			t.Fatalf("%s does not implement engines.Counter", tg.name)
		}
		clients := dialAll(t, s, h, maxConns)
		echo := func(c *client, seq uint32) {
			t.Helper()
			f := mkFrame(10, seq, 0, 40)
			if _, err := c.Write(f); err != nil {
				t.Fatal(err)
			}
			if _, got := c.mustNext(t, 5*time.Second); !bytes.Equal(got, f) {
				t.Fatalf("echo of frame %d mismatch", seq)
			}
		}

		for i := range 2 { // refused twice: it is not a one-off
			refused(t, s, i, refuse)
		}
		waitFor(t, 5*time.Second, "2 refusals counted", func() bool { return counter.Refused() >= 2 })
		if n := h.opens.Load(); n != maxConns {
			t.Fatalf("%d OnOpen, want %d: a connection over the cap reached the handler", n, maxConns)
		}
		for i, c := range clients {
			echo(c, uint32(i))
		}

		// A slot frees when one closes.
		var first engines.Conn
		for _, sc := range h.conns() {
			if sc.RemoteAddr() == clients[0].local {
				first = sc
			}
		}
		if first == nil {
			t.Fatal("no server side found for the first client")
		}
		_ = clients[0].Close()
		_ = h.waitClosed(t, first, 5*time.Second)
		next := dial(t, s)
		h.waitOpens(t, maxConns+1)
		echo(next, 100)
		for i, c := range clients[1:] {
			echo(c, uint32(200+i))
		}
	})
}

// TestSharedTail: one tail shared by many connections, each frame with its own head (its own
// sequence number), written through engines.FrameWriter in bursts of small and large tails: every
// peer receives head+tail intact and in order, and neither the tail's backing array (beyond its
// length too) nor any head is modified.
func TestSharedTail(t *testing.T) {
	const (
		conns  = 300
		frames = 12
	)
	// Two tails, meta and body of a PUSH: a small one and one over netpoll's 4 KiB in-place
	// threshold and gnet's 16 KiB ring, each in an array with spare capacity.
	mkTail := func(metaLen, bodyLen int) (tail, backing []byte, encMeta int) {
		var f frame.Frame
		f.Meta = frame.AppendMeta(nil, "k", bytes.Repeat([]byte{'m'}, metaLen))
		f.Body = make([]byte, bodyLen)
		for i := range f.Body {
			f.Body[i] = byte(i * 7)
		}
		backing = make([]byte, 0, len(f.Meta)+len(f.Body)+64)
		backing = append(append(backing, f.Meta...), f.Body...)
		for i := len(backing); i < cap(backing); i++ {
			backing = append(backing, 0xA5)
		}
		return backing[:len(f.Meta)+len(f.Body)], backing, len(f.Meta)
	}
	small, smallBacking, smallMeta := mkTail(12, 100)
	large, largeBacking, largeMeta := mkTail(40, 20000)
	smallWant, largeWant := bytes.Clone(smallBacking), bytes.Clone(largeBacking)
	tailFor := func(k int) ([]byte, int) {
		if k%2 == 0 {
			return small, smallMeta
		}
		return large, largeMeta
	}
	headFor := func(conn, k int) []byte {
		tail, ml := tailFor(k)
		return frame.AppendHeader(nil, frame.Header{Type: frame.TypePush, Biz: 11, Seq: uint32(conn*frames + k),
			MetaLen: uint16(ml), BodyLen: uint32(len(tail) - ml)})
	}

	forEachEngine(t, func(t *testing.T, tg target) {
		conns := cellConns(tg, conns)
		h := newHandler(frame.Limits{}, false)
		s := tg.start(t, engines.Config{}, h)
		clients := dialAll(t, s, h, conns)
		scs := h.conns()
		heads := make([][][]byte, conns)
		for i := range heads {
			for k := range frames {
				heads[i] = append(heads[i], headFor(i, k))
			}
		}
		headsWant := make([][][]byte, conns)
		for i := range heads {
			for _, hd := range heads[i] {
				headsWant[i] = append(headsWant[i], bytes.Clone(hd))
			}
		}
		// The server conn of client i: match by remote address.
		byRemote := map[string]engines.Conn{}
		for _, sc := range scs {
			byRemote[sc.RemoteAddr()] = sc
		}
		var wg sync.WaitGroup
		wg.Go(func() {
			for k := range frames {
				for i, c := range clients {
					fw, ok := byRemote[c.local].(engines.FrameWriter)
					if !ok {
						t.Errorf("%s: no FrameWriter for client %d", tg.name, i)
						return
					}
					tail, _ := tailFor(k)
					if err := fw.WriteFrame(heads[i][k], tail); err != nil {
						t.Errorf("client %d frame %d: %v", i, k, err)
						return
					}
				}
			}
		})
		const readers = 16
		for r := range readers {
			wg.Go(func() {
				for i := r; i < conns; i += readers {
					for k := range frames {
						_, raw, err := clients[i].next(30 * time.Second)
						if err != nil {
							t.Errorf("client %d frame %d: %v", i, k, err)
							return
						}
						tail, _ := tailFor(k)
						want := append(bytes.Clone(headsWant[i][k]), tail...)
						if !bytes.Equal(raw, want) {
							t.Errorf("client %d frame %d: %d bytes, not head+tail intact", i, k, len(raw))
							return
						}
					}
				}
			})
		}
		wg.Wait()
		if !bytes.Equal(smallBacking[:cap(smallBacking)], smallWant) || !bytes.Equal(largeBacking[:cap(largeBacking)], largeWant) {
			t.Error("a shared tail's backing array was modified")
		}
		for i := range heads {
			for k := range heads[i] {
				if !bytes.Equal(heads[i][k], headsWant[i][k]) {
					t.Fatalf("head %d/%d modified", i, k)
				}
			}
		}
		if err := scs[0].(engines.FrameWriter).WriteFrame(heads[0][0], small); err != nil && !errors.Is(err, engines.ErrQueueFull) {
			t.Errorf("WriteFrame on an open connection: %v", err)
		}
	})
}

// refused dials one connection over the cap of s and checks it is refused with refuse: a raw
// TCP peer reads exactly refuse and then EOF; where the transport has a handshake, its client
// fails to connect.
func refused(t *testing.T, s *server, i int, refuse []byte) {
	t.Helper()
	if s.tg.transport == engines.TransportQUIC {
		refusedQUIC(t, s, i, refuse)
		return
	}
	over, err := net.DialTimeout("tcp", s.addr, 5*time.Second)
	if err != nil {
		t.Fatalf("refused connection %d: dial: %v", i, err)
	}
	defer func() { _ = over.Close() }()
	_ = over.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(over)
	if err != nil {
		t.Fatalf("refused connection %d: read %d bytes, then %v; want the refuse message and EOF", i, len(got), err)
	}
	if !bytes.Equal(got, refuse) {
		t.Fatalf("refused connection %d got % x, want the refuse message % x", i, got, refuse)
	}
	if s.tg.transport == engines.TransportTCP {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialTransport(ctx, s.tg.transport, s.addr)
	if err == nil {
		_ = c.Close()
		t.Fatalf("refused connection %d: the %s client connected over the cap", i, s.tg.transport)
	}
	t.Logf("refused %s connection %d: the client says: %v", s.tg.transport, i, err)
}
