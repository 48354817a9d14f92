package client

// A WebSocket listener for the fake gateway: Accept answers the upgrade (internal/wsproto) and
// returns the connection as a byte stream — Read gives the client messages' payloads, Write
// sends one unmasked binary message.

import (
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/pushwire/pushwire/internal/wsproto"
)

type wsListener struct {
	net.Listener
	path string
}

func (l *wsListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		wc, err := l.upgrade(c)
		if err != nil {
			_ = c.Close()
			continue
		}
		return wc, nil
	}
}

func (l *wsListener) upgrade(c net.Conn) (net.Conn, error) {
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		req, n, err := wsproto.ParseRequest(buf, 8<<10)
		if he, ok := err.(*wsproto.HandshakeError); ok {
			_, _ = c.Write(wsproto.AppendRefusal(nil, he))
			return nil, err
		} else if err != nil {
			return nil, err
		}
		if n > 0 {
			if req.Path != l.path {
				he := &wsproto.HandshakeError{Status: 404, Reason: "no such path"}
				_, _ = c.Write(wsproto.AppendRefusal(nil, he))
				return nil, he
			}
			if _, err := c.Write(wsproto.AppendAccept(nil, req.Key)); err != nil {
				return nil, err
			}
			return &wsServerConn{Conn: c, in: buf[n:]}, nil
		}
		m, err := c.Read(tmp)
		if err != nil {
			return nil, err
		}
		buf = append(buf, tmp[:m]...)
	}
}

// wsServerConn is the server's side of an upgraded connection.
type wsServerConn struct {
	net.Conn
	in   []byte // bytes read but not parsed
	data []byte // payload bytes parsed but not returned
	wmu  sync.Mutex
}

var errClientClosed = errors.New("websocket close from the client")

func (c *wsServerConn) Read(p []byte) (int, error) {
	tmp := make([]byte, 32<<10)
	for len(c.data) == 0 {
		h, n, err := wsproto.ParseHeader(c.in)
		if err != nil {
			return 0, err
		}
		if n > 0 && int64(len(c.in)-n) >= h.Length {
			payload := c.in[n : n+int(h.Length)]
			if !h.Masked {
				return 0, errors.New("unmasked client frame")
			}
			wsproto.MaskBytes(h.Mask, 0, payload)
			c.in = c.in[n+int(h.Length):]
			switch h.Op {
			case wsproto.OpBinary, wsproto.OpContinuation:
				c.data = append(c.data, payload...)
			case wsproto.OpClose:
				return 0, errClientClosed
			}
			continue
		}
		m, err := c.Conn.Read(tmp)
		if m == 0 && err != nil {
			return 0, err
		}
		c.in = append(c.in, tmp[:m]...)
	}
	n := copy(p, c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *wsServerConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := wsproto.AppendHeader(nil, wsproto.Header{Fin: true, Op: wsproto.OpBinary, Length: int64(len(p))})
	if _, err := c.Conn.Write(append(b, p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

// newWSGateway is a fake gateway over ws (or wss with tlsCfg) on path.
func newWSGateway(t *testing.T, handle func(*gwConn)) *fakeGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newGatewayOn(t, "ws", &wsListener{Listener: ln, path: "/ws"}, handle)
}

func newWSSGateway(t *testing.T, handle func(*gwConn)) *fakeGateway {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS("http/1.1"))
	if err != nil {
		t.Fatal(err)
	}
	return newGatewayOn(t, "wss", &wsListener{Listener: ln, path: "/ws"}, handle)
}
