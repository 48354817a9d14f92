package ws_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
	_ "github.com/pushwire/pushwire/engines/gnet"
	_ "github.com/pushwire/pushwire/engines/nbio"
	_ "github.com/pushwire/pushwire/engines/netpoll"
	_ "github.com/pushwire/pushwire/engines/std"
	"github.com/pushwire/pushwire/engines/ws"
	"github.com/pushwire/pushwire/internal/wsproto"
)

const wait = 10 * time.Second

// echo is the core's stand-in: it consumes whole protocol frames (core/frame) and writes each
// back; a malformed frame is an error. It keeps the open connections for server-side writes.
type echo struct {
	mu     sync.Mutex
	conns  map[uint64]engines.Conn
	opened chan engines.Conn
	closed chan engines.Conn
}

func newEcho() *echo {
	return &echo{conns: map[uint64]engines.Conn{}, opened: make(chan engines.Conn, 1000), closed: make(chan engines.Conn, 1000)}
}

func (e *echo) OnOpen(c engines.Conn) {
	e.mu.Lock()
	e.conns[c.ID()] = c
	e.mu.Unlock()
	e.opened <- c
}

func (e *echo) OnData(c engines.Conn, in []byte) (int, error) {
	off := 0
	for {
		_, n, err := frame.Decode(in[off:], frame.Limits{})
		if errors.Is(err, frame.ErrShort) {
			return off, nil
		}
		if err != nil {
			return off, err
		}
		if err := c.Write(bytes.Clone(in[off : off+n])); err != nil {
			return off, err
		}
		off += n
	}
}

func (e *echo) OnClose(c engines.Conn, _ error) {
	e.mu.Lock()
	delete(e.conns, c.ID())
	e.mu.Unlock()
	e.closed <- c
}

// wsEngines are the registered engines that carry WebSocket.
func wsEngines(t *testing.T) []string {
	var names []string
	for _, n := range engines.Names() {
		if engines.Carries(n, engines.TransportWS) {
			names = append(names, n)
		}
	}
	if len(names) < 4 {
		t.Fatalf("engines carrying ws: %v, want the four stream engines", names)
	}
	return names
}

// forEachEngine runs fn in a subtest per engine, with the layer over it.
func forEachEngine(t *testing.T, cfg ws.Config, fn func(t *testing.T, addr string, e *echo)) {
	for _, name := range wsEngines(t) {
		t.Run(name, func(t *testing.T) {
			addr, e := start(t, name, cfg)
			fn(t, addr, e)
		})
	}
}

func start(t *testing.T, name string, cfg ws.Config) (string, *echo) {
	t.Helper()
	e := newEcho()
	h, err := ws.Wrap(e, cfg)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engines.New(name, engines.Config{MaxFrame: cfg.EngineMaxFrame(), ReadBufferSize: 1024}, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := eng.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return eng.Addr().String(), e
}

// pwFrame is a protocol frame (PING) with body b.
func pwFrame(body string) []byte {
	f := frame.Frame{Header: frame.Header{Type: frame.TypePing, Seq: 7}, Body: []byte(body)}
	return frame.Append(nil, &f)
}

// dialClient connects with wsproto.Client.
func dialClient(t *testing.T, addr string, o wsproto.ClientOptions) *wsproto.Conn {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := wsproto.Client(ctx, nc, o)
	if err != nil {
		_ = nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	_ = c.SetDeadline(time.Now().Add(wait))
	return c.(*wsproto.Conn)
}

// roundTrip writes one frame through c and reads it back.
func roundTrip(t *testing.T, c net.Conn, body string) {
	t.Helper()
	f := pwFrame(body)
	if _, err := c.Write(f); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(f))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("echo of %d bytes: %v", len(body), err)
	}
	if !bytes.Equal(got, f) {
		t.Fatalf("echo of %d bytes differs", len(body))
	}
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

func upgradeRequest(path string, extra ...string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: " + testKey + "\r\nSec-WebSocket-Version: 13\r\n" + strings.Join(extra, "") + "\r\n"
}

// raw is a hand-driven client: the upgrade and frames as bytes.
type raw struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(wait))
	return &raw{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func (r *raw) send(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// status reads an HTTP answer's status line and headers, and returns the status code and the
// headers as one string.
func (r *raw) status() (int, string) {
	r.t.Helper()
	line, err := r.br.ReadString('\n')
	if err != nil {
		r.t.Fatalf("status line: %v", err)
	}
	var code int
	if _, err := fmt.Sscanf(line, "HTTP/1.1 %d", &code); err != nil {
		r.t.Fatalf("status line %q: %v", line, err)
	}
	var hdr strings.Builder
	for {
		l, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("headers: %v", err)
		}
		if l == "\r\n" {
			return code, hdr.String()
		}
		hdr.WriteString(l)
	}
}

// upgrade sends the upgrade request and expects 101.
func (r *raw) upgrade() {
	r.t.Helper()
	r.send([]byte(upgradeRequest("/ws")))
	if code, hdr := r.status(); code != 101 || !strings.Contains(hdr, wsproto.AcceptKey(testKey)) {
		r.t.Fatalf("upgrade: %d %q", code, hdr)
	}
}

// eof expects the server to close the socket.
func (r *raw) eof() {
	r.t.Helper()
	// A reset is a close too: the server may close with bytes of ours unread.
	if _, err := io.Copy(io.Discard, r.br); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		r.t.Fatalf("waiting for the close: %v", err)
	}
}

var key = [4]byte{0x11, 0x22, 0x33, 0x44}

// frame encodes a masked client frame.
func clientFrame(fin bool, op byte, payload []byte) []byte {
	b := wsproto.AppendHeader(nil, wsproto.Header{Fin: fin, Op: op, Masked: true, Mask: key, Length: int64(len(payload))})
	start := len(b)
	b = append(b, payload...)
	wsproto.MaskBytes(key, 0, b[start:])
	return b
}

// next reads one server frame.
func (r *raw) next() (wsproto.Header, []byte) {
	r.t.Helper()
	var hb []byte
	for {
		c, err := r.br.ReadByte()
		if err != nil {
			r.t.Fatalf("frame header: %v", err)
		}
		hb = append(hb, c)
		h, n, err := wsproto.ParseHeader(hb)
		if err != nil {
			r.t.Fatal(err)
		}
		if n > 0 {
			if h.Masked {
				r.t.Fatal("server frame masked")
			}
			p := make([]byte, h.Length)
			if _, err := io.ReadFull(r.br, p); err != nil {
				r.t.Fatal(err)
			}
			return h, p
		}
	}
}

// closeStatus reads frames up to the close frame, returns the messages before it and its code,
// and expects the socket closed after it.
func (r *raw) closeStatus() (msgs [][]byte, code uint16) {
	r.t.Helper()
	for {
		h, p := r.next()
		if h.Op == wsproto.OpClose {
			if len(p) < 2 {
				r.t.Fatalf("close frame without a status: %x", p)
			}
			r.eof()
			return msgs, binary.BigEndian.Uint16(p)
		}
		msgs = append(msgs, p)
	}
}

// expectClose checks that the connection ends with a close frame of code.
func (r *raw) expectClose(want uint16) [][]byte {
	r.t.Helper()
	msgs, code := r.closeStatus()
	if code != want {
		r.t.Fatalf("close status %d, want %d", code, want)
	}
	return msgs
}
