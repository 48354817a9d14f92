package stdengine

import (
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/enginetest"
)

// benchHandler keeps every connection and discards input.
type benchHandler struct {
	mu     sync.Mutex
	conns  []engines.Conn
	opens  atomic.Int64
	closes atomic.Int64
}

func (h *benchHandler) OnOpen(c engines.Conn) {
	h.mu.Lock()
	h.conns = append(h.conns, c)
	h.mu.Unlock()
	h.opens.Add(1)
}
func (h *benchHandler) OnData(_ engines.Conn, in []byte) (int, error) { return len(in), nil }
func (h *benchHandler) OnClose(engines.Conn, error)                   { h.closes.Add(1) }

// benchEngine starts a std engine with the given writer; cleanup shuts it down.
func benchEngine(b *testing.B, writer string, h engines.Handler) engines.Engine {
	b.Helper()
	return enginetest.Start(b, Name, engines.Config{Options: map[string]string{OptWriter: writer}}, h)
}

// dialN opens n connections to addr, pacing under the accept backlog.
func dialN(b *testing.B, addr string, n int) []net.Conn {
	b.Helper()
	cs := make([]net.Conn, n)
	for i := range cs {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatalf("dial %d: %v", i, err)
		}
		cs[i] = c
	}
	return cs
}

func waitCount(b *testing.B, v *atomic.Int64, n int64) {
	b.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for v.Load() < n {
		if time.Now().After(deadline) {
			b.Fatalf("timed out: %d of %d", v.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkPush pushes one small PUSH frame (one buffer shared by every connection, as the core
// does) to each of N idle loopback connections per op and waits until every client has read it:
// the cost of a fan-out to N, delivery included. Clients run in the same process, so cpu-ns/op
// (the process's CPU time per op) includes their reads too, the same for both writers.
func BenchmarkPush(b *testing.B) {
	push := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePush, Biz: 1, Seq: 1}, Body: []byte("hello, pushwire")})
	for _, writer := range writers {
		for _, n := range []int{1, 100, 1000} {
			b.Run(fmt.Sprintf("%s=%s/conns=%d", OptWriter, writer, n), func(b *testing.B) {
				h := &benchHandler{}
				e := benchEngine(b, writer, h)
				clients := dialN(b, e.Addr().String(), n)
				waitCount(b, &h.opens, int64(n))
				var got atomic.Int64
				done := make(chan struct{}, 1)
				var wg sync.WaitGroup
				for _, c := range clients {
					wg.Go(func() {
						buf := make([]byte, len(push))
						for {
							if _, err := io.ReadFull(c, buf); err != nil {
								return
							}
							if got.Add(1)%int64(n) == 0 {
								done <- struct{}{}
							}
						}
					})
				}
				b.Cleanup(func() {
					for _, c := range clients {
						_ = c.Close()
					}
					wg.Wait()
				})
				conns := h.conns
				b.ReportAllocs()
				cpu0 := cpuTime()
				for b.Loop() {
					for _, c := range conns {
						if err := c.Write(push); err != nil {
							b.Fatal(err)
						}
					}
					<-done
				}
				// CPU time is steadier than wall time on a machine shared with other work.
				cpu := float64(cpuTime()-cpu0) / float64(b.N)
				b.ReportMetric(cpu, "cpu-ns/op")
				b.ReportMetric(cpu/float64(n), "cpu-ns/conn")
			})
		}
	}
}

// BenchmarkIdle opens 2,000 idle connections per op and reports, per connection, the goroutines,
// heap in use and goroutine stack in use they add to the process (after a GC), then closes them.
// "raw" is the floor: the same sockets accepted by a bare net.Listener with no goroutine and no
// buffer per connection (both ends' net.Conn objects are in every figure, the clients' included).
// Run it without -race: the race detector inflates every figure.
func BenchmarkIdle(b *testing.B) {
	const n = 2000
	for _, writer := range append([]string{"raw"}, writers...) {
		b.Run(OptWriter+"="+writer, func(b *testing.B) {
			var addr string
			var opens, closes *atomic.Int64
			var raw []net.Conn
			var rawMu sync.Mutex
			if writer == "raw" {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				var accepted, dropped atomic.Int64
				var wg sync.WaitGroup
				wg.Go(func() {
					for {
						c, err := ln.Accept()
						if err != nil {
							return
						}
						rawMu.Lock()
						raw = append(raw, c)
						rawMu.Unlock()
						accepted.Add(1)
					}
				})
				b.Cleanup(func() { _ = ln.Close(); wg.Wait() })
				addr, opens, closes = ln.Addr().String(), &accepted, &dropped
			} else {
				h := &benchHandler{}
				addr, opens, closes = benchEngine(b, writer, h).Addr().String(), &h.opens, &h.closes
			}
			var goroutines, heap, stack float64
			b.ReportAllocs()
			for b.Loop() {
				o0, c0 := opens.Load(), closes.Load()
				runtime.GC()
				g0, m0 := runtime.NumGoroutine(), memStats()
				clients := dialN(b, addr, n)
				waitCount(b, opens, o0+n)
				time.Sleep(100 * time.Millisecond) // let every reader park in its first Read
				runtime.GC()
				g1, m1 := runtime.NumGoroutine(), memStats()
				goroutines = float64(g1-g0) / n
				heap = float64(int64(m1.HeapInuse)-int64(m0.HeapInuse)) / n
				stack = float64(int64(m1.StackInuse)-int64(m0.StackInuse)) / n
				for _, c := range clients {
					_ = c.Close()
				}
				if writer == "raw" {
					rawMu.Lock()
					for _, c := range raw {
						_ = c.Close()
						closes.Add(1)
					}
					raw = raw[:0]
					rawMu.Unlock()
				}
				waitCount(b, closes, c0+n)
			}
			b.ReportMetric(goroutines, "goroutines/conn")
			b.ReportMetric(heap, "heap-B/conn")
			b.ReportMetric(stack, "stack-B/conn")
		})
	}
}

// cpuTime is the process's user plus system CPU time so far, in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func memStats() runtime.MemStats {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms
}
