package ws

import (
	"bytes"
	"errors"
	"sync"
	"testing"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/internal/kit"
	"github.com/pushwire/pushwire/internal/wsproto"
)

// fakeConn is the engine's side of one connection, in process: it records what the layer writes
// and whether it closed the socket.
type fakeConn struct {
	kit.Slot
	mu     sync.Mutex
	out    [][]byte
	closed bool
}

func (f *fakeConn) ID() uint64         { return 1 }
func (f *fakeConn) RemoteAddr() string { return "127.0.0.1:1" }
func (f *fakeConn) Write(b []byte) error {
	return f.WriteFrame(b, nil)
}
func (f *fakeConn) WriteFrame(head, tail []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return engines.ErrClosed
	}
	f.out = append(f.out, head, tail)
	return nil
}
func (f *fakeConn) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

// frameEcho consumes whole protocol frames and echoes them (the core's stand-in).
type frameEcho struct{}

func (frameEcho) OnOpen(engines.Conn)         {}
func (frameEcho) OnClose(engines.Conn, error) {}
func (frameEcho) OnData(c engines.Conn, in []byte) (int, error) {
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

// feed drives the layer as an engine does (engines/internal/kit's rules): data arrives in
// chunks, what the handler leaves is kept and offered again with the next chunk, never more than
// maxFrame bytes pending. It reports a broken rule.
func feed(t *testing.T, h engines.Handler, raw engines.Conn, data []byte, chunk, maxFrame int) {
	var pending []byte
	for len(data) > 0 {
		n := min(chunk, len(data))
		pending = append(pending, data[:n]...)
		data = data[n:]
		for len(pending) > 0 {
			win := pending[:min(len(pending), maxFrame)]
			c, err := h.OnData(raw, win)
			if err != nil {
				return // the engine closes the connection
			}
			if c < 0 || c > len(win) {
				t.Fatalf("consumed %d of %d", c, len(win))
			}
			if c == 0 {
				if len(win) >= maxFrame {
					return // over MaxFrame: the engine closes it
				}
				break
			}
			pending = pending[c:]
		}
	}
}

// checkOutput checks that nothing but a close frame's end follows a close frame.
func checkOutput(t *testing.T, out [][]byte) {
	var all []byte
	for _, b := range out {
		all = append(all, b...)
	}
	if bytes.HasPrefix(all, []byte("HTTP/1.1 ")) {
		i := bytes.Index(all, []byte("\r\n\r\n"))
		if i < 0 {
			t.Fatalf("HTTP answer without its end: %q", all)
		}
		if !bytes.HasPrefix(all, []byte("HTTP/1.1 101 ")) {
			return // a refusal and its body
		}
		all = all[i+4:]
	}
	for len(all) > 0 {
		h, n, err := wsproto.ParseHeader(all)
		if err != nil || n == 0 || h.Masked || int64(len(all)-n) < h.Length {
			t.Fatalf("server output is not whole unmasked frames: %v %d %+v", err, n, h)
		}
		all = all[n+int(h.Length):]
		if h.Op == wsproto.OpClose && len(all) > 0 {
			t.Fatalf("%d bytes after the close frame", len(all))
		}
	}
}

const fuzzUpgrade = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"

func masked(fin bool, op byte, p []byte) []byte {
	key := [4]byte{9, 8, 7, 6}
	b := wsproto.AppendHeader(nil, wsproto.Header{Fin: fin, Op: op, Masked: true, Mask: key, Length: int64(len(p))})
	s := len(b)
	b = append(b, p...)
	wsproto.MaskBytes(key, 0, b[s:])
	return b
}

// FuzzDecoder feeds arbitrary bytes after a valid upgrade to the layer, in chunks of every size:
// it must never panic, always consume within bounds, and write only whole frames, nothing after
// a close frame.
func FuzzDecoder(f *testing.F) {
	ping := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePing}})
	f.Add(masked(true, wsproto.OpBinary, ping), uint8(1))
	f.Add(append(masked(false, wsproto.OpBinary, ping[:5]), masked(true, wsproto.OpContinuation, ping[5:])...), uint8(3))
	f.Add(masked(true, wsproto.OpPing, []byte("x")), uint8(200))
	f.Add(masked(true, wsproto.OpClose, []byte{3, 232}), uint8(7))
	f.Add(masked(true, wsproto.OpText, []byte("hi")), uint8(2))
	f.Add([]byte{0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4}, uint8(5))
	f.Add(append(masked(false, wsproto.OpBinary, ping), masked(false, wsproto.OpContinuation, ping)...), uint8(64))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		cfg := Config{MaxMessage: 256, MaxHeader: MinMaxHeader}
		h, err := Wrap(frameEcho{}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		raw := &fakeConn{}
		h.OnOpen(raw)
		in := append([]byte(fuzzUpgrade), data...)
		feed(t, h, raw, in, int(chunk)+1, cfg.EngineMaxFrame())
		h.OnClose(raw, nil)
		checkOutput(t, raw.out)
	})
}

// FuzzUpgradeBytes feeds arbitrary bytes from the start (the upgrade request included).
func FuzzUpgradeBytes(f *testing.F) {
	f.Add([]byte(fuzzUpgrade), uint8(1))
	f.Add([]byte("GET /x HTTP/1.1\r\n\r\n"), uint8(9))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		cfg := Config{MaxMessage: 256, MaxHeader: MinMaxHeader, Origins: []string{"https://a"}}
		h, err := Wrap(frameEcho{}, cfg)
		if err != nil {
			t.Fatal(err)
		}
		raw := &fakeConn{}
		h.OnOpen(raw)
		feed(t, h, raw, data, int(chunk)+1, cfg.EngineMaxFrame())
		h.OnClose(raw, nil)
		checkOutput(t, raw.out)
	})
}

// BenchmarkWrite measures the layer's write path over an engine Conn that keeps nothing:
// allocations per Write and per WriteFrame.
func BenchmarkWrite(b *testing.B) {
	h, err := Wrap(frameEcho{}, Config{})
	if err != nil {
		b.Fatal(err)
	}
	raw := &nullConn{}
	h.OnOpen(raw)
	if n, _ := h.OnData(raw, []byte(fuzzUpgrade)); n != len(fuzzUpgrade) {
		b.Fatalf("upgrade consumed %d", n)
	}
	c := raw.Context().(*conn)
	small := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePush}, Body: make([]byte, 64)})
	large := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePush}, Body: make([]byte, 1000)})
	b.Run("Write/small", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = c.Write(small)
		}
	})
	b.Run("Write/1KiB", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = c.Write(large)
		}
	})
	b.Run("WriteFrame/shared-tail", func(b *testing.B) {
		head, tail := large[:frame.HeaderLen], large[frame.HeaderLen:]
		b.ReportAllocs()
		for b.Loop() {
			_ = c.WriteFrame(head, tail)
		}
	})
}

// nullConn is an engine Conn that drops what is written.
type nullConn struct{ kit.Slot }

func (*nullConn) ID() uint64                   { return 1 }
func (*nullConn) RemoteAddr() string           { return "127.0.0.1:1" }
func (*nullConn) Write([]byte) error           { return nil }
func (*nullConn) WriteFrame(_, _ []byte) error { return nil }
func (*nullConn) Close() error                 { return nil }

func TestWriteAllocs(t *testing.T) {
	h, err := Wrap(frameEcho{}, Config{})
	if err != nil {
		t.Fatal(err)
	}
	raw := &nullConn{}
	h.OnOpen(raw)
	if n, _ := h.OnData(raw, []byte(fuzzUpgrade)); n != len(fuzzUpgrade) {
		t.Fatalf("upgrade consumed %d", n)
	}
	c := raw.Context().(*conn)
	small := make([]byte, 100)
	if a := testing.AllocsPerRun(100, func() { _ = c.Write(small) }); a != 0 {
		t.Errorf("Write of %d bytes: %.1f allocations, want 0", len(small), a)
	}
	if a := testing.AllocsPerRun(100, func() { _ = c.WriteFrame(small[:18], small) }); a > 1 {
		t.Errorf("WriteFrame: %.1f allocations, want at most 1 (the head with its WebSocket header)", a)
	}
}
