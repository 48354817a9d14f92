package loadgen

import (
	"context"
	"time"
)

// Pacer emits the intended times of events at a constant rate, open loop: when the consumer falls
// behind, the intended times stay where the schedule put them, so latency measured from them
// includes the time spent waiting (no coordinated omission).
type Pacer struct {
	Rate  float64 // events per second; must be > 0
	Count int     // events in all; 0: until ctx ends
}

// Run sends each event's intended time on a channel it closes when done or when ctx ends. The
// channel is buffered to Count (or 64k) so the pacer itself never waits for the consumer.
func (p Pacer) Run(ctx context.Context, start time.Time) <-chan time.Time {
	size := p.Count
	if size <= 0 || size > 1<<16 {
		size = 1 << 16
	}
	out := make(chan time.Time, size)
	interval := time.Duration(float64(time.Second) / p.Rate)
	go func() {
		defer close(out)
		for i := 0; p.Count <= 0 || i < p.Count; i++ {
			at := start.Add(time.Duration(i) * interval)
			if d := time.Until(at); d > 0 {
				t := time.NewTimer(d)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			} else if ctx.Err() != nil {
				return
			}
			select {
			case out <- at:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}
