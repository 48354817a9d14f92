package conformance

import (
	"flag"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
)

// benchConns is how many connections each benchmark cell holds (the clients in a helper
// process, so the heap measured is the server's alone).
var benchConns = flag.Int("conformance.conns", 2000, "connections per cell in BenchmarkIdleHeap and BenchmarkFanOut")

// forEachBench runs bench as BenchmarkX/<engine>/<transport> for every target with a stack in
// this build.
func forEachBench(b *testing.B, bench func(b *testing.B, tg target)) {
	ts := targets()
	for i := 0; i < len(ts); {
		label := ts[i].label
		j := i
		for j < len(ts) && ts[j].label == label {
			j++
		}
		cells := ts[i:j]
		i = j
		b.Run(label, func(b *testing.B) {
			for _, tg := range cells {
				b.Run(tg.transport, func(b *testing.B) {
					if _, ok := stacks[tg.transport]; !ok {
						b.Skipf("%s: no %s stack in this build", tg.name, tg.transport)
					}
					bench(b, tg)
				})
			}
		})
	}
}

// BenchmarkIdleHeap opens -conformance.conns connections (default 2,000) per engine × transport
// from a helper process, has each echo one frame (so every engine and layer has read and written
// once), and reports the server process's heap in use per connection after a GC: the engine's,
// the layers' and the suite handler's objects (the handler's are the same in every cell: compare
// cells, not absolutes). Kernel memory is not in it. Run it without -race, which inflates every
// figure:
//
//	go test -run=none -bench=IdleHeap -benchtime=1x ./engines/conformance/
func BenchmarkIdleHeap(b *testing.B) {
	n := *benchConns
	forEachBench(b, func(b *testing.B, tg target) {
		h := newHandler(frame.Limits{}, true)
		s := tg.start(b, engines.Config{}, h)
		var perConn float64
		for b.Loop() {
			c0 := h.closes.Load()
			runtime.GC()
			m0 := heapInuse()
			p := startClients(b, s, n, 5*time.Minute)
			p.send("echo")
			if got := p.expect("echoed"); got != n {
				p.stop()
				b.Fatalf("%d of %d connections echoed", got, n)
			}
			time.Sleep(100 * time.Millisecond) // let the engine's transient read and write buffers go
			runtime.GC()
			perConn = float64(int64(heapInuse())-int64(m0)) / float64(n)
			p.send("close")
			p.expect("closed")
			waitFor(b, time.Minute, fmt.Sprintf("%d OnClose", n), func() bool { return h.closes.Load() >= c0+int64(n) })
			if err := p.wait(); err != nil {
				b.Fatalf("helper: %v\n%s", err, p.output())
			}
		}
		b.ReportMetric(perConn, "heap-B/conn")
	})
}

// BenchmarkFanOut pushes one frame to -conformance.conns idle connections (default 2,000) per
// engine × transport, as the core fans out a group or broadcast message: from one goroutine, through
// engines.FrameWriter, the header and the tail (meta and body) shared by every connection, so a
// layer's per-connection work (a WebSocket header, a TLS record) is what differs. One op is one
// fan-out, timed until the last client (in a helper process, 16 reading goroutines) has read
// the frame; deliveries/s is connections × ops / time. Allocations are the server process's.
//
//	go test -run=none -bench=FanOut -benchtime=20x ./engines/conformance/
func BenchmarkFanOut(b *testing.B) {
	n := *benchConns
	forEachBench(b, func(b *testing.B, tg target) {
		h := newHandler(frame.Limits{}, false)
		s := tg.start(b, engines.Config{}, h)
		p := startClients(b, s, n, 10*time.Minute)
		defer p.stop()
		scs := h.conns()
		fws := make([]engines.FrameWriter, len(scs))
		for i, sc := range scs {
			fw, ok := sc.(engines.FrameWriter)
			if !ok {
				b.Fatalf("%s: Conn does not implement engines.FrameWriter", tg.name)
			}
			fws[i] = fw
		}
		seq := uint32(0)
		b.ReportAllocs()
		for b.Loop() {
			seq++
			f := pushFrame(seq)
			head, tail := f[:frame.HeaderLen], f[frame.HeaderLen:]
			for i, fw := range fws {
				if err := fw.WriteFrame(head, tail); err != nil {
					b.Fatalf("fan-out %d to conn %d: %v", seq, scs[i].ID(), err)
				}
			}
			p.send(fmt.Sprintf("read %d", seq))
			if got := p.expect("received"); got != n {
				b.Fatalf("fan-out %d: %d of %d clients read it whole", seq, got, n)
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "deliveries/s")
		p.send("close")
		p.expect("closed")
		if err := p.wait(); err != nil {
			b.Fatalf("helper: %v\n%s", err, p.output())
		}
	})
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}
