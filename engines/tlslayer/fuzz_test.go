package tlslayer

import (
	"sync"
	"testing"

	"github.com/pushwire/pushwire/engines"
)

// FuzzHandshakeInput drives the layer's input path in process with arbitrary bytes as what a
// client sends first, cut in two reads at every place the fuzzer picks: it must never panic, never
// reach the wrapped handler's OnData before a handshake, and leave no goroutine behind after
// OnClose (OnClose waits for a handshake in progress).
func FuzzHandshakeInput(f *testing.F) {
	p := newPKI(f)
	f.Add(clientHello(f, p.client()), 7)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), 3)
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00}, 5)
	f.Add([]byte{0x16, 0x03, 0x01, 0xff, 0xff}, 2)
	r := newRecorder(f)
	h, err := Wrap(r, Config{TLS: p.certs.ServerConfig(), RequireALPN: ALPN, MaxFrame: 4096})
	if err != nil {
		f.Fatal(err)
	}
	var ids uint64
	f.Fuzz(func(t *testing.T, in []byte, cut int) {
		ids++
		raw := &memConn{id: ids}
		h.OnOpen(raw)
		<-r.opened
		if cut < 0 || cut > len(in) {
			cut = len(in) / 2
		}
		var held []byte // what the layer left unconsumed, offered again as an engine does
		for _, part := range [][]byte{in[:cut], in[cut:]} {
			data := append(held, part...)
			n, err := h.OnData(raw, data)
			if err != nil {
				break
			}
			if n < 0 || n > len(data) {
				t.Fatalf("consumed %d of %d", n, len(data))
			}
			held = append([]byte(nil), data[n:]...)
		}
		h.OnClose(raw, nil)
		<-r.closed
		if n := r.dataCalls(raw.id); n != 0 {
			t.Fatalf("%d OnData calls without a client finishing a handshake", n)
		}
	})
}

// memConn is the engine side of a connection held in memory for the fuzzer: what the layer writes
// is dropped.
type memConn struct {
	id  uint64
	mu  sync.Mutex
	ctx any
}

func (c *memConn) ID() uint64         { return c.id }
func (c *memConn) Write([]byte) error { return nil }
func (c *memConn) Close() error       { return nil }
func (c *memConn) RemoteAddr() string { return "127.0.0.1:1" }
func (c *memConn) Context() any       { c.mu.Lock(); defer c.mu.Unlock(); return c.ctx }
func (c *memConn) SetContext(v any)   { c.mu.Lock(); c.ctx = v; c.mu.Unlock() }

var _ engines.Conn = (*memConn)(nil)
