package conformance

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/internal/wsproto"
)

// wsRefusal is the RefuseMessage of an engine under the WebSocket layer: an HTTP 503 answer,
// which a WebSocket client reads as a refused upgrade.
func wsRefusal() []byte {
	return wsproto.AppendRefusal(nil, &wsproto.HandshakeError{Status: 503, Reason: "instance at its connection cap"})
}

// wsMessage encodes f as one binary message from a client: parts masked WebSocket frames (a
// binary frame, then continuations, the last with FIN), each with a mask of its own.
func wsMessage(f []byte, parts int) []byte {
	var out []byte
	for i := range parts {
		piece := f[len(f)*i/parts : len(f)*(i+1)/parts]
		h := wsproto.Header{Fin: i == parts-1, Op: wsproto.OpContinuation, Masked: true, Length: int64(len(piece))}
		if i == 0 {
			h.Op = wsproto.OpBinary
		}
		_, _ = rand.Read(h.Mask[:])
		out = wsproto.AppendHeader(out, h)
		start := len(out)
		out = append(out, piece...)
		wsproto.MaskBytes(h.Mask, 0, out[start:])
	}
	return out
}

// dialRawWS connects to s (ws or wss) with the WebSocket codec over a connection it dials
// itself, so that the test can also write WebSocket frames of its own on that connection.
func dialRawWS(t testing.TB, s *server) (*client, *rawConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := net.Dialer{Timeout: 10 * time.Second}
	var nc net.Conn
	var err error
	if s.tg.transport == engines.TransportWSS {
		cfg, cerr := clientTLS()
		if cerr != nil {
			t.Fatal(cerr)
		}
		cfg.NextProtos = []string{"http/1.1"}
		nc, err = (&tls.Dialer{NetDialer: &d, Config: cfg}).DialContext(ctx, "tcp", s.addr)
	} else {
		nc, err = d.DialContext(ctx, "tcp", s.addr)
	}
	if err != nil {
		t.Fatalf("dial %s: %v", s.tg.transport, err)
	}
	wc, err := wsproto.Client(ctx, nc, wsproto.ClientOptions{})
	if err != nil {
		_ = nc.Close()
		t.Fatalf("upgrade: %v", err)
	}
	t.Cleanup(func() { _ = wc.Close() })
	if _, err := wc.Write(hello); err != nil {
		t.Fatalf("hello over %s: %v", s.tg.transport, err)
	}
	return newClient(wc), &rawConn{Conn: nc, message: true, wrap: wsMessage}
}

// wsCloseStatus is the status of the close frame c's server sent, if c speaks WebSocket (false
// otherwise); 0 if none came.
func wsCloseStatus(c *client) (uint16, bool) {
	wc, ok := c.Conn.(*wsproto.Conn)
	if !ok {
		return 0, false
	}
	code, _ := wc.CloseStatus()
	return code, true
}
