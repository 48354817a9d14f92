package floor

import (
	"io"
	"strconv"
	"sync"
	"testing"
)

// BenchmarkFanout measures the fan-out write path: one PUSH encoded once and written to every
// target with its own seq, to real loopback clients that drain their sockets.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run("conns="+strconv.Itoa(n), func(b *testing.B) {
			ts := startServer(b, nil)
			var wg sync.WaitGroup
			for i := range n {
				c := dial(b, ts.addr)
				c.login("b" + strconv.Itoa(i))
				wg.Go(func() { _, _ = io.Copy(io.Discard, c.nc) })
			}
			ts.s.reg.mu.RLock()
			targets := append([]*conn(nil), ts.s.reg.apps[testApp].all.list...)
			ts.s.reg.mu.RUnlock()
			if len(targets) != n {
				b.Fatalf("%d targets, want %d", len(targets), n)
			}
			payload := []byte("pwlg:123456:1700000000000000000:1700000000000000000")
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				msg := encodePush(1, "fl1-1", "", payload)
				if d, _, _ := ts.s.deliver(msg, targets); d != n {
					b.Fatalf("delivered %d of %d", d, n)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
			_ = ts.s.Close() // ends the clients' copies
			wg.Wait()
		})
	}
}
