package timewheel_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/timewheel"
)

// The benchmarks run a live wheel (1 ms ticks) and add items due a few ticks ahead, so items keep
// firing and the slots' slices are reused, as under a steady load of connections. Deadlines come
// from the wheel's coarse clock, as the gateway's do.

func BenchmarkAdd(b *testing.B) {
	var fired atomic.Int64
	w := timewheel.New(time.Millisecond, 16, func(time.Time, int) { fired.Add(1) })
	w.Start()
	defer w.Stop()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		w.Add(w.Now().Add(5*time.Millisecond), i)
		i++
	}
}

// BenchmarkAddParallel adds from every P at once: to one slot (every connection's login timeout
// in a tick lands in the same slot), and spread over 64 slots.
func BenchmarkAddParallel(b *testing.B) {
	for _, bc := range []struct {
		name   string
		spread int
	}{
		{"same slot", 1},
		{"64 slots", 64},
	} {
		b.Run(bc.name, func(b *testing.B) {
			w := timewheel.New(time.Millisecond, 128, func(time.Time, int) {})
			w.Start()
			defer w.Stop()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					w.Add(w.Now().Add(time.Duration(5+i%bc.spread)*time.Millisecond), i)
					i++
				}
			})
		})
	}
}

// BenchmarkNow is the coarse clock, for comparison with time.Now.
func BenchmarkNow(b *testing.B) {
	w := timewheel.New(time.Millisecond, 8, func(time.Time, int) {})
	b.ReportAllocs()
	for b.Loop() {
		_ = w.Now()
	}
}
