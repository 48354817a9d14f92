package transport

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/pushwire/pushwire/internal/wsproto"
)

// wsServer is a small WebSocket echo server: it answers the upgrade on path (404 elsewhere),
// then echoes each client message back as one unmasked binary message, and answers a close.
type wsServer struct {
	path string

	mu       sync.Mutex
	origins  []string // the Origin of each upgrade
	messages []int    // the size of each message received
	unmasked int      // client frames without a mask
}

func (s *wsServer) serve(c net.Conn) {
	var buf []byte
	tmp := make([]byte, 32<<10)
	fill := func() bool {
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		return err == nil || n > 0
	}
	for {
		req, n, err := wsproto.ParseRequest(buf, 8<<10)
		if err != nil {
			he, _ := err.(*wsproto.HandshakeError)
			if he == nil {
				he = &wsproto.HandshakeError{Status: 400, Reason: err.Error()}
			}
			_, _ = c.Write(wsproto.AppendRefusal(nil, he))
			return
		}
		if n > 0 {
			if req.Path != s.path {
				_, _ = c.Write(wsproto.AppendRefusal(nil, &wsproto.HandshakeError{Status: 404, Reason: "no such path"}))
				return
			}
			s.mu.Lock()
			s.origins = append(s.origins, req.Origin)
			s.mu.Unlock()
			if _, err := c.Write(wsproto.AppendAccept(nil, req.Key)); err != nil {
				return
			}
			buf = buf[n:]
			break
		}
		if !fill() {
			return
		}
	}
	var msg []byte // the message being assembled
	for {
		h, n, err := wsproto.ParseHeader(buf)
		if err != nil {
			return
		}
		if n == 0 || int64(len(buf)-n) < h.Length {
			if !fill() {
				return
			}
			continue
		}
		payload := buf[n : n+int(h.Length)]
		if h.Masked {
			wsproto.MaskBytes(h.Mask, 0, payload)
		} else {
			s.mu.Lock()
			s.unmasked++
			s.mu.Unlock()
		}
		switch h.Op {
		case wsproto.OpClose:
			out := wsproto.AppendHeader(nil, wsproto.Header{Fin: true, Op: wsproto.OpClose, Length: int64(len(payload))})
			_, _ = c.Write(append(out, payload...))
			return
		case wsproto.OpBinary, wsproto.OpContinuation:
			msg = append(msg, payload...)
		}
		buf = buf[n+int(h.Length):]
		if h.Fin && !wsproto.IsControl(h.Op) {
			s.mu.Lock()
			s.messages = append(s.messages, len(msg))
			s.mu.Unlock()
			out := wsproto.AppendHeader(nil, wsproto.Header{Fin: true, Op: wsproto.OpBinary, Length: int64(len(msg))})
			if _, err := c.Write(append(out, msg...)); err != nil {
				return
			}
			msg = msg[:0]
		}
	}
}

func TestDialWS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &wsServer{path: "/ws"}
	streamServer(t, ln, srv.serve)
	c, err := Dial(ctxT(t), WS, ln.Addr().String(), Options{Origin: "https://app.example"})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	// Each Write was one masked message; the Origin was sent.
	if len(srv.messages) != 2 || srv.messages[0] != len("PW hello") || srv.messages[1] != 70000 || srv.unmasked != 0 {
		t.Errorf("messages %v, unmasked frames %d", srv.messages, srv.unmasked)
	}
	if len(srv.origins) != 1 || srv.origins[0] != "https://app.example" {
		t.Errorf("origins %q", srv.origins)
	}
}

func TestDialWSPath(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, (&wsServer{path: "/push"}).serve)
	if c, err := Dial(ctxT(t), WS, ln.Addr().String(), Options{}); err == nil {
		_ = c.Close()
		t.Fatal("upgrade on /ws succeeded where only /push is served")
	} else if !strings.Contains(err.Error(), "/ws") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("error %q does not name the path and the 404", err)
	}
	c, err := Dial(ctxT(t), WS, ln.Addr().String(), Options{Path: "/push"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	roundTrip(t, c)
}

// A server that does not speak WebSocket (it closes at once) fails the upgrade.
func TestDialWSNotWebSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, func(c net.Conn) { _, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) })
	c, err := Dial(ctxT(t), WS, ln.Addr().String(), Options{})
	if err == nil {
		_ = c.Close()
		t.Fatal("upgrade answered by 200 succeeded")
	}
	var he *HandshakeError
	if !strings.Contains(err.Error(), "websocket upgrade") || !errors.As(err, &he) || he.Proto != WS {
		t.Fatalf("error %q is not a ws *HandshakeError", err)
	}
}

func TestDialWSS(t *testing.T) {
	var alpn sync.Map
	cfg := serverTLS("http/1.1")
	srv := &wsServer{path: "/ws"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, func(c net.Conn) {
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			return
		}
		alpn.Store(tc.ConnectionState().NegotiatedProtocol, true)
		srv.serve(c)
	})
	c, err := Dial(ctxT(t), WSS, ln.Addr().String(), clientOpts())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	_ = c.Close()
	if _, ok := alpn.Load("http/1.1"); !ok {
		t.Error("wss did not negotiate http/1.1")
	}

	// A wss server without ALPN is accepted (http/1.1 is implied)...
	plain, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS())
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, plain, (&wsServer{path: "/ws"}).serve)
	c, err = Dial(ctxT(t), WSS, plain.Addr().String(), clientOpts())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	_ = c.Close()

	// ... and an untrusted one is not.
	if c, err := Dial(ctxT(t), WSS, ln.Addr().String(), Options{}); err == nil {
		_ = c.Close()
		t.Fatal("wss trusting no root succeeded")
	}
}

// The server's data arrives as one byte stream across messages.
func TestDialWSStream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, (&wsServer{path: "/ws"}).serve)
	c, err := Dial(ctxT(t), WS, ln.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	for _, m := range []string{"ab", "cd", "ef"} {
		if _, err := c.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, 6)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, []byte("abcdef")) {
		t.Fatalf("read %q, %v", got, err)
	}
}
