package ws_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/ws"
	"github.com/pushwire/pushwire/internal/wsproto"
)

func TestConfigErrorsNameTheField(t *testing.T) {
	for _, c := range []struct {
		cfg   ws.Config
		field string
	}{
		{ws.Config{Path: "ws"}, "Path"},
		{ws.Config{Path: "/ws?x"}, "Path"},
		{ws.Config{MaxMessage: -1}, "MaxMessage"},
		{ws.Config{MaxMessage: ws.MaxMaxMessage + 1}, "MaxMessage"},
		{ws.Config{MaxHeader: 10}, "MaxHeader"},
		{ws.Config{Origins: []string{"a", ""}}, "Origins[1]"},
		{ws.Config{Origins: []string{"a b"}}, "Origins[0]"},
	} {
		_, err := ws.Wrap(newEcho(), c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("%+v: error %v, want one naming %s", c.cfg, err, c.field)
		}
	}
	if got := (ws.Config{}).EngineMaxFrame(); got < ws.DefaultMaxMessage+wsproto.MaxHeaderLen {
		t.Errorf("EngineMaxFrame %d", got)
	}
}

func TestUpgradeAndEcho(t *testing.T) {
	forEachEngine(t, ws.Config{}, func(t *testing.T, addr string, e *echo) {
		c := dialClient(t, addr, wsproto.ClientOptions{})
		for _, body := range []string{"", "a", strings.Repeat("x", 200), strings.Repeat("y", 60000)} {
			roundTrip(t, c, body)
		}
	})
}

func TestRefusals(t *testing.T) {
	cfg := ws.Config{Origins: []string{"https://ok.example"}, MaxHeader: 2048}
	forEachEngine(t, cfg, func(t *testing.T, addr string, e *echo) {
		for _, c := range []struct {
			name   string
			req    string
			status int
		}{
			{"missing key", strings.Replace(upgradeRequest("/ws"), "Sec-WebSocket-Key: "+testKey+"\r\n", "", 1), 400},
			{"no Upgrade header", strings.Replace(upgradeRequest("/ws"), "Upgrade: websocket\r\n", "", 1), 400},
			{"wrong version", strings.Replace(upgradeRequest("/ws"), "Version: 13", "Version: 8", 1), 426},
			{"wrong path", upgradeRequest("/other"), 404},
			{"bad origin", upgradeRequest("/ws", "Origin: https://evil.example\r\n"), 403},
			{"no origin", upgradeRequest("/ws"), 403},
			{"oversized", upgradeRequest("/ws", "X-Pad: "+strings.Repeat("p", 3000)+"\r\n"), 431},
			{"POST", strings.Replace(upgradeRequest("/ws"), "GET", "POST", 1), 405},
		} {
			r := dialRaw(t, addr)
			r.send([]byte(c.req))
			code, hdr := r.status()
			if code != c.status {
				t.Errorf("%s: status %d, want %d", c.name, code, c.status)
			}
			if !strings.Contains(hdr, "Connection: close") {
				t.Errorf("%s: headers %q", c.name, hdr)
			}
			if c.status == 426 && !strings.Contains(hdr, "Sec-WebSocket-Version: 13") {
				t.Errorf("%s: headers %q", c.name, hdr)
			}
			r.eof()
		}
		// The right origin (any case) is let in.
		r := dialRaw(t, addr)
		r.send([]byte(upgradeRequest("/ws", "Origin: HTTPS://OK.example\r\n")))
		if code, _ := r.status(); code != 101 {
			t.Fatalf("allowed origin: %d", code)
		}
	})
}

func TestByteByByte(t *testing.T) {
	forEachEngine(t, ws.Config{}, func(t *testing.T, addr string, e *echo) {
		r := dialRaw(t, addr)
		req := []byte(upgradeRequest("/ws"))
		for i := range req {
			r.send(req[i : i+1])
		}
		if code, _ := r.status(); code != 101 {
			t.Fatalf("status %d", code)
		}
		msg := pwFrame("byte by byte")
		b := clientFrame(true, wsproto.OpBinary, msg)
		for i := range b {
			r.send(b[i : i+1])
		}
		h, p := r.next()
		if h.Op != wsproto.OpBinary || !h.Fin || !bytes.Equal(p, msg) {
			t.Fatalf("echo %+v %q", h, p)
		}
	})
}

func TestFragmentsWithPing(t *testing.T) {
	forEachEngine(t, ws.Config{}, func(t *testing.T, addr string, e *echo) {
		r := dialRaw(t, addr)
		r.upgrade()
		// Two protocol frames in one message, fragmented at odd places, a ping in between.
		msg := append(pwFrame("first"), pwFrame("second")...)
		var b []byte
		b = append(b, clientFrame(false, wsproto.OpBinary, msg[:5])...)
		b = append(b, clientFrame(true, wsproto.OpPing, []byte("hello"))...)
		b = append(b, clientFrame(false, wsproto.OpContinuation, msg[5:30])...)
		b = append(b, clientFrame(true, wsproto.OpContinuation, msg[30:])...)
		r.send(b)
		h, p := r.next()
		if h.Op != wsproto.OpPong || string(p) != "hello" {
			t.Fatalf("want the pong first, got %+v %q", h, p)
		}
		for _, want := range [][]byte{pwFrame("first"), pwFrame("second")} {
			h, p := r.next()
			if h.Op != wsproto.OpBinary || !bytes.Equal(p, want) {
				t.Fatalf("echo %+v %q, want %q", h, p, want)
			}
		}
		// A pong is ignored; the connection goes on.
		r.send(clientFrame(true, wsproto.OpPong, nil))
		r.send(clientFrame(true, wsproto.OpBinary, pwFrame("after")))
		if _, p := r.next(); !bytes.Equal(p, pwFrame("after")) {
			t.Fatalf("after pong: %q", p)
		}
	})
}

// errorFrame decodes a message as a protocol ERROR frame and returns its code.
func errorCode(t *testing.T, msg []byte) frame.Code {
	t.Helper()
	f, n, err := frame.Decode(msg, frame.Limits{})
	if err != nil || n != len(msg) || f.Type != frame.TypeError || f.Seq != 0 {
		t.Fatalf("not an ERROR frame: %+v n=%d err=%v", f.Header, n, err)
	}
	return f.Code
}

func TestBadInput(t *testing.T) {
	const maxMsg = 1000
	big := make([]byte, 600)
	cases := []struct {
		name   string
		frames [][]byte
		status uint16
		bad    bool // an ERROR BAD_FRAME precedes the close
	}{
		{"unmasked", [][]byte{wsproto.AppendFrame(nil, wsproto.OpBinary, pwFrame("x"))}, wsproto.CloseProtocolError, false},
		{"rsv bit", [][]byte{func() []byte { b := clientFrame(true, wsproto.OpBinary, pwFrame("x")); b[0] |= 0x40; return b }()}, wsproto.CloseProtocolError, false},
		{"reserved opcode", [][]byte{clientFrame(true, 0x3, nil)}, wsproto.CloseProtocolError, false},
		{"reserved control opcode", [][]byte{clientFrame(true, 0xB, nil)}, wsproto.CloseProtocolError, false},
		{"big ping", [][]byte{clientFrame(true, wsproto.OpPing, make([]byte, 126))}, wsproto.CloseProtocolError, false},
		{"fragmented ping", [][]byte{clientFrame(false, wsproto.OpPing, nil)}, wsproto.CloseProtocolError, false},
		{"lone continuation", [][]byte{clientFrame(true, wsproto.OpContinuation, []byte("x"))}, wsproto.CloseProtocolError, false},
		{"data inside fragments", [][]byte{clientFrame(false, wsproto.OpBinary, []byte("x")), clientFrame(true, wsproto.OpBinary, []byte("y"))}, wsproto.CloseProtocolError, false},
		{"header over max (payload never sent)", [][]byte{wsproto.AppendHeader(nil, wsproto.Header{Fin: true, Op: wsproto.OpBinary, Masked: true, Length: 1 << 30})}, wsproto.CloseTooBig, false},
		{"fragments over max", [][]byte{clientFrame(false, wsproto.OpBinary, big), clientFrame(false, wsproto.OpContinuation, big)}, wsproto.CloseTooBig, false},
		{"text", [][]byte{clientFrame(true, wsproto.OpText, []byte("hello"))}, wsproto.CloseUnsupportedData, true},
		{"partial protocol frame", [][]byte{clientFrame(true, wsproto.OpBinary, pwFrame("whole")[:20])}, wsproto.CloseProtocolError, true},
		{"bad protocol frame", [][]byte{clientFrame(true, wsproto.OpBinary, []byte("GARBAGE GARBAGE GARBAGE"))}, wsproto.CloseProtocolError, false},
		{"close with a 1-byte payload", [][]byte{clientFrame(true, wsproto.OpClose, []byte{3})}, wsproto.CloseProtocolError, false},
		{"close with a bad code", [][]byte{clientFrame(true, wsproto.OpClose, wsproto.AppendClosePayload(nil, 1005, ""))}, wsproto.CloseProtocolError, false},
		{"non-minimal length", [][]byte{{0x82, 0x80 | 126, 0, 5, 1, 2, 3, 4}}, wsproto.CloseProtocolError, false},
		// The peer's close: answered with its code (1000 when none).
		{"close 1000", [][]byte{clientFrame(true, wsproto.OpClose, wsproto.AppendClosePayload(nil, 1000, "bye"))}, wsproto.CloseNormal, false},
		{"close 4001", [][]byte{clientFrame(true, wsproto.OpClose, wsproto.AppendClosePayload(nil, 4001, ""))}, 4001, false},
		{"close without code", [][]byte{clientFrame(true, wsproto.OpClose, nil)}, wsproto.CloseNormal, false},
	}
	forEachEngine(t, ws.Config{MaxMessage: maxMsg}, func(t *testing.T, addr string, e *echo) {
		// A healthy connection beside every bad one keeps working.
		good := dialClient(t, addr, wsproto.ClientOptions{})
		roundTrip(t, good, "before")
		for _, c := range cases {
			r := dialRaw(t, addr)
			r.upgrade()
			// A whole frame first, to show the connection worked.
			r.send(clientFrame(true, wsproto.OpBinary, pwFrame("ok")))
			if _, p := r.next(); !bytes.Equal(p, pwFrame("ok")) {
				t.Fatalf("%s: first echo %q", c.name, p)
			}
			for _, f := range c.frames {
				r.send(f)
			}
			msgs, code := r.closeStatus()
			if code != c.status {
				t.Errorf("%s: close status %d, want %d", c.name, code, c.status)
			}
			if c.bad {
				if len(msgs) != 1 || errorCode(t, msgs[0]) != frame.CodeBadFrame {
					t.Errorf("%s: messages before the close %q, want one ERROR BAD_FRAME", c.name, msgs)
				}
			} else if len(msgs) != 0 {
				t.Errorf("%s: messages before the close %q", c.name, msgs)
			}
			roundTrip(t, good, c.name)
		}
	})
}

func TestWritePathSharedTail(t *testing.T) {
	forEachEngine(t, ws.Config{}, func(t *testing.T, addr string, e *echo) {
		const n = 20
		clients := make([]*wsproto.Conn, n)
		for i := range clients {
			clients[i] = dialClient(t, addr, wsproto.ClientOptions{})
			roundTrip(t, clients[i], "hello") // logged in: the server side is open
		}
		e.mu.Lock()
		var conns []engines.Conn
		for _, c := range e.conns {
			conns = append(conns, c)
		}
		e.mu.Unlock()
		if len(conns) != n {
			t.Fatalf("%d server connections, want %d", len(conns), n)
		}
		// One tail shared by every connection, each with its own head; then a plain Write, small
		// and large.
		body := bytes.Repeat([]byte("shared"), 30)
		full := pwFrame(string(body))
		head, tail := full[:frame.HeaderLen], full[frame.HeaderLen:]
		small, large := pwFrame("s"), pwFrame(strings.Repeat("L", 100000))
		for _, c := range conns {
			fw, ok := c.(engines.FrameWriter)
			if !ok {
				t.Fatal("the layer's Conn is not a FrameWriter")
			}
			if err := fw.WriteFrame(bytes.Clone(head), tail); err != nil {
				t.Fatal(err)
			}
			if err := c.Write(small); err != nil {
				t.Fatal(err)
			}
			if err := c.Write(large); err != nil {
				t.Fatal(err)
			}
		}
		for _, cl := range clients {
			for _, want := range [][]byte{full, small, large} {
				got := make([]byte, len(want))
				if _, err := io.ReadFull(cl, got); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Fatal("message differs")
				}
			}
		}
	})
}

func TestServerClose(t *testing.T) {
	forEachEngine(t, ws.Config{}, func(t *testing.T, addr string, e *echo) {
		r := dialRaw(t, addr)
		r.upgrade()
		c := <-e.opened
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		r.expectClose(wsproto.CloseNormal)
		<-e.closed
		if err := c.Write(pwFrame("late")); !errors.Is(err, engines.ErrClosed) {
			t.Fatalf("write after close: %v", err)
		}
	})
}

func TestCloseBeforeUpgrade(t *testing.T) {
	forEachEngine(t, ws.Config{}, func(t *testing.T, addr string, e *echo) {
		// A draining core writes (GOAWAY) and closes before the upgrade: the write is dropped and
		// the layer answers 503.
		r := dialRaw(t, addr)
		c := <-e.opened
		if err := c.Write(pwFrame("early")); err != nil {
			t.Fatalf("write before the upgrade: %v", err)
		}
		_ = c.Close()
		if code, _ := r.status(); code != 503 {
			t.Fatalf("close after a write before the upgrade: HTTP %d, want 503", code)
		}
		r.eof()
		<-e.closed

		// A slowloris upgrade closed by the core (its login timeout): 408 once the layer has seen
		// part of the request, or a plain close if the core was first.
		r = dialRaw(t, addr)
		c = <-e.opened
		r.send([]byte("GET /ws HTTP/1.1\r\nHost: x\r\n"))
		_ = c.Close()
		b, err := io.ReadAll(r.br)
		if err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatal(err)
		}
		if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 408 ")) {
			t.Fatalf("slowloris closed: %q", b)
		}
		<-e.closed
	})
}
