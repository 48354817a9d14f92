package conformance

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
)

// BenchmarkIdleHeap opens 2,000 connections per engine, has each echo one frame (so every
// engine has read and written once), and reports the heap in use per connection after a GC, the
// clients' own objects included (the same in every row: compare rows, not absolutes). Run it
// without -race, which inflates every figure:
//
//	go test -run=none -bench=IdleHeap -benchtime=1x ./engines/conformance/
func BenchmarkIdleHeap(b *testing.B) {
	const n = 2000
	for _, tg := range targets() {
		b.Run(tg.name, func(b *testing.B) {
			h := newHandler(frame.Limits{}, true)
			e, err := engines.New(tg.engine, engines.Config{Options: tg.opts}, h)
			if err != nil {
				b.Fatal(err)
			}
			if err := e.Start(); err != nil {
				b.Fatal(err)
			}
			s := &server{Engine: e, h: h, addr: e.Addr().String()}
			defer func() { _ = s.shutdown(10 * time.Second) }()
			f := mkFrame(1, 1, 0, 16)
			var perConn float64
			for b.Loop() {
				o0, c0 := h.opens.Load(), h.closes.Load()
				runtime.GC()
				m0 := heapInuse()
				clients := make([]net.Conn, n)
				for i := range clients {
					c, err := net.Dial("tcp", s.addr)
					if err != nil {
						b.Fatal(err)
					}
					clients[i] = c
				}
				for h.opens.Load() < o0+n {
					time.Sleep(time.Millisecond)
				}
				buf := make([]byte, len(f))
				for _, c := range clients {
					if _, err := c.Write(f); err != nil {
						b.Fatal(err)
					}
				}
				for _, c := range clients {
					_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(100 * time.Millisecond)
				runtime.GC()
				perConn = float64(int64(heapInuse())-int64(m0)) / n
				for _, c := range clients {
					_ = c.Close()
				}
				for h.closes.Load() < c0+n {
					time.Sleep(time.Millisecond)
				}
			}
			b.ReportMetric(perConn, "heap-B/conn")
		})
	}
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
