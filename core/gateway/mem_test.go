package gateway

import (
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/route/memory"
)

// memConn is an engines.Conn that keeps nothing: what a session costs is the core's own.
type memConn struct {
	id  uint64
	ctx any
}

func (c *memConn) ID() uint64                   { return c.id }
func (c *memConn) Write([]byte) error           { return nil }
func (c *memConn) Close() error                 { return nil }
func (c *memConn) RemoteAddr() string           { return "127.0.0.1:1" }
func (c *memConn) Context() any                 { return c.ctx }
func (c *memConn) SetContext(v any)             { c.ctx = v }
func (c *memConn) WriteFrame(_, _ []byte) error { return nil }

// idVerifier accepts a token that is the device ID, as a real verifier's claims would say.
type idVerifier struct{}

func (idVerifier) Verify(tok string, _ time.Time) (Identity, error) {
	return Identity{App: "app", Device: tok, User: "u" + tok}, nil
}

// BenchmarkSessionMemory reports the Go heap one logged-in idle session costs the core (Client,
// table indexes, timing wheel entry, identity strings), apart from any engine's own: standalone,
// and with the in-memory route store of a single instance (the node and the store's records of
// each device together).
func BenchmarkSessionMemory(b *testing.B) {
	b.Run("standalone", func(b *testing.B) { benchSessionMemory(b, false) })
	b.Run("memory-store", func(b *testing.B) { benchSessionMemory(b, true) })
}

func benchSessionMemory(b *testing.B, withStore bool) {
	const n = 10_000
	b.ReportAllocs()
	for b.Loop() {
		var st RouteStore
		if withStore {
			ms := memory.New()
			defer func() { _ = ms.Close() }()
			st = ms
		}
		node, err := New(Config{Node: "mem", WheelTick: time.Second, Logger: quiet, Route: st}, idVerifier{}, oneApp{})
		if err != nil {
			b.Fatal(err)
		}
		if st != nil {
			if err := node.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
		}
		logins := make([][]byte, n)
		for i := range logins {
			dev := "lg-device-" + strconv.Itoa(i)
			f := frame.Frame{Header: frame.Header{Type: frame.TypeLogin, Seq: 1},
				Meta: frame.AppendMetaString(frame.AppendMetaString(nil, "token", dev), "device", dev)}
			logins[i] = frame.Append(nil, &f)
		}
		conns := make([]*memConn, n)
		for i := range conns {
			conns[i] = &memConn{id: uint64(i + 1)}
		}
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for i, c := range conns {
			node.OnOpen(c)
			if _, err := node.OnData(c, logins[i]); err != nil {
				b.Fatal(err)
			}
		}
		if st != nil {
			for !node.cl.w.idle() {
				runtime.Gosched()
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if node.table.Len() != n {
			b.Fatalf("%d sessions", node.table.Len())
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "heap-B/session")
		runtime.KeepAlive(conns)
		runtime.KeepAlive(logins)
		_ = node.Stop(b.Context())
	}
}
