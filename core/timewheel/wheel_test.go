package timewheel_test

import (
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/core/timewheel"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tick = 10 * time.Millisecond
	// slack bounds how late an item may fire on a loaded machine (with -race, on shared cores).
	// The tests never assert a tighter upper bound: what they assert is order and "not early".
	slack = 2 * time.Second
)

// event is one call of fire.
type event struct {
	v    int
	now  time.Time // the now fire was given: the tick's time
	real time.Time // time.Now() inside fire
}

// recorder collects fire calls.
type recorder struct {
	mu     sync.Mutex
	events []event
}

func (r *recorder) fire(now time.Time, v int) {
	r.mu.Lock()
	r.events = append(r.events, event{v: v, now: now, real: time.Now()})
	r.mu.Unlock()
}

func (r *recorder) snapshot() []event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// wait waits until n events were recorded, or fails the test after a generous time.
func (r *recorder) wait(t *testing.T, n int, within time.Duration) []event {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ev := r.snapshot()
		if len(ev) >= n {
			return ev
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d items fired after %v", len(ev), n, within)
		}
		time.Sleep(tick / 2)
	}
}

// newWheel starts a wheel of int that records what it fires, and stops it at the end of the test.
func newWheel(t *testing.T, slots int) (*timewheel.Wheel[int], *recorder) {
	rec := &recorder{}
	w := timewheel.New(tick, slots, rec.fire)
	w.Start()
	t.Cleanup(w.Stop)
	return w, rec
}

// lead is how far ahead the ordered tests place their first deadline, so that a stalled test
// goroutine does not add an item after its deadline has passed (which would move it to the next
// tick, correctly, but break the exact checks). If adding still took longer, they skip.
const lead = 20 * tick

// skipIfSlow skips the test if the items were added too late for the exact checks.
func skipIfSlow(t *testing.T, first time.Time) {
	t.Helper()
	if time.Now().After(first.Add(-tick)) {
		t.Skipf("adding took %v: the machine is too busy for this test", time.Since(first.Add(-lead)))
	}
}

// checkOnTime fails unless e fired no earlier than at, with now the first tick at or after at,
// and not absurdly late.
func checkOnTime(t *testing.T, e event, at time.Time) {
	t.Helper()
	if e.now.Before(at) {
		t.Errorf("item %d: fire got now %v, %v before its deadline", e.v, e.now, at.Sub(e.now))
	}
	if e.now.Sub(at) >= tick {
		t.Errorf("item %d: fire got now %v, %v after its deadline: not the first tick after it", e.v, e.now, e.now.Sub(at))
	}
	if e.real.Before(at) {
		t.Errorf("item %d fired at %v, %v before its deadline", e.v, e.real, at.Sub(e.real))
	}
	if e.real.Sub(at) > slack {
		t.Errorf("item %d fired %v after its deadline", e.v, e.real.Sub(at))
	}
}

func TestOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slots int
		ticks []int // deadlines, in ticks from now
	}{
		{"within a rotation", 64, []int{5, 1, 9, 3, 2, 8, 4, 7, 6, 10}},
		{"several rotations", 4, []int{13, 1, 4, 9, 2, 5, 17, 8, 3, 12, 21, 16}},
		{"one slot", 1, []int{3, 1, 2, 6, 4, 5}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, rec := newWheel(t, tc.slots)
			base := time.Now().Add(lead)
			at := map[int]time.Time{}
			for _, k := range tc.ticks {
				at[k] = base.Add(time.Duration(k)*tick + tick/3) // off the tick grid
				w.Add(at[k], k)
			}
			skipIfSlow(t, base)
			if w.Len() != len(tc.ticks) {
				t.Fatalf("Len = %d, want %d", w.Len(), len(tc.ticks))
			}
			ev := rec.wait(t, len(tc.ticks), slack+lead+time.Duration(slices.Max(tc.ticks))*tick)
			got := make([]int, len(ev))
			for i, e := range ev {
				got[i] = e.v
				checkOnTime(t, e, at[e.v])
			}
			if want := slices.Sorted(slices.Values(tc.ticks)); !slices.Equal(got, want) {
				t.Fatalf("fired %v, want %v", got, want)
			}
			if w.Len() != 0 {
				t.Fatalf("Len = %d after all fired", w.Len())
			}
		})
	}
}

// TestSameTick checks that items due at the same tick fire together, in the order added.
func TestSameTick(t *testing.T) {
	w, rec := newWheel(t, 8)
	at := time.Now().Add(lead)
	for i := range 100 {
		w.Add(at, i)
	}
	skipIfSlow(t, at)
	ev := rec.wait(t, 100, slack+lead)
	for i, e := range ev {
		if e.v != i {
			t.Fatalf("event %d is item %d", i, e.v)
		}
		if !e.now.Equal(ev[0].now) {
			t.Fatalf("item %d fired at tick %v, item 0 at %v", i, e.now, ev[0].now)
		}
		checkOnTime(t, e, at)
	}
}

func TestPastDeadline(t *testing.T) {
	w, rec := newWheel(t, 8)
	before := w.Now()
	w.Add(time.Time{}, 1)
	w.Add(time.Now().Add(-time.Hour), 2)
	w.Add(time.Now(), 3)
	ev := rec.wait(t, 3, slack)
	for i, e := range ev {
		if e.v != i+1 {
			t.Fatalf("fired %v, want 1, 2, 3 in order", ev)
		}
		if !e.now.After(before) {
			t.Fatalf("item %d fired at tick %v, not after the tick %v it was added in", e.v, e.now, before)
		}
	}
}

// TestFarDeadline checks deadlines several rotations away: each waits its rotations, and fires
// no earlier, although its slot is visited before.
func TestFarDeadline(t *testing.T) {
	const slots = 4
	w, rec := newWheel(t, slots)
	base := time.Now().Add(lead)
	// Same slot, rotations 0..4; and a neighbour slot.
	ticks := []int{2, 2 + slots, 2 + 2*slots, 2 + 3*slots, 2 + 4*slots, 3 + 3*slots}
	at := map[int]time.Time{}
	for _, k := range slices.Backward(ticks) {
		at[k] = base.Add(time.Duration(k) * tick)
		w.Add(at[k], k)
	}
	skipIfSlow(t, base)
	ev := rec.wait(t, len(ticks), slack+lead+time.Duration(slices.Max(ticks))*tick)
	got := make([]int, len(ev))
	for i, e := range ev {
		got[i] = e.v
		checkOnTime(t, e, at[e.v])
	}
	if want := slices.Sorted(slices.Values(ticks)); !slices.Equal(got, want) {
		t.Fatalf("fired %v, want %v", got, want)
	}

	// A deadline hours away waits (no early firing), and counts as pending.
	w.Add(time.Now().Add(3*time.Hour), -1)
	time.Sleep(3 * slots * tick)
	if n := len(rec.snapshot()); n != len(ticks) {
		t.Fatalf("an item due in 3h fired")
	}
	if w.Len() != 1 {
		t.Fatalf("Len = %d, want 1", w.Len())
	}
}

// TestAddFromFire re-adds items from inside fire: a chain of deadlines, and a past deadline,
// which must fire on a later tick than the one running.
func TestAddFromFire(t *testing.T) {
	var w *timewheel.Wheel[int]
	rec := &recorder{}
	w = timewheel.New(tick, 8, func(now time.Time, v int) {
		rec.fire(now, v)
		switch {
		case v < 5:
			w.Add(now.Add(2*tick), v+1) // the next link of the chain
		case v == 5:
			w.Add(now.Add(-time.Hour), 100) // past: the next tick
		}
	})
	w.Start()
	defer w.Stop()
	w.Add(time.Now().Add(tick), 0)
	ev := rec.wait(t, 7, slack)
	for i := range 6 {
		if ev[i].v != i {
			t.Fatalf("fired %v", ev)
		}
		if i > 0 && ev[i].now.Sub(ev[i-1].now) != 2*tick {
			t.Fatalf("link %d fired %v after link %d, want %v", i, ev[i].now.Sub(ev[i-1].now), i-1, 2*tick)
		}
	}
	if ev[6].v != 100 || ev[6].now.Sub(ev[5].now) != tick {
		t.Fatalf("past item fired %+v, %v after its adder; want the next tick", ev[6], ev[6].now.Sub(ev[5].now))
	}
}

// TestConcurrentAdd adds from many goroutines while the wheel runs (run with -race): every item
// fires exactly once, never early, and Len settles at 0.
func TestConcurrentAdd(t *testing.T) {
	const (
		adders = 8
		each   = 2000
	)
	var (
		count atomic.Int64
		seen  [adders * each]atomic.Int32
		early atomic.Int64 // items fired before their deadline (must stay 0)
		ats   [adders * each]time.Time
		added [adders * each]time.Time // just after Add returned
		nows  [adders * each]time.Time // the now fire got
	)
	w := timewheel.New(tick, 16, func(now time.Time, v int) {
		seen[v].Add(1)
		nows[v] = now
		if now.Before(ats[v]) {
			early.Add(1)
		}
		count.Add(1)
	})
	w.Start()
	defer w.Stop()

	var wg sync.WaitGroup
	for g := range adders {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := range each {
				v := g*each + i
				// Past, near, and several rotations ahead.
				ats[v] = time.Now().Add(time.Duration(r.IntN(60)-10) * tick)
				w.Add(ats[v], v)
				added[v] = time.Now()
				if i%200 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		})
	}
	wg.Wait()
	deadline := time.Now().Add(slack + 60*tick)
	for count.Load() < adders*each {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d fired; Len = %d", count.Load(), adders*each, w.Len())
		}
		time.Sleep(tick)
	}
	for v := range seen {
		if n := seen[v].Load(); n != 1 {
			t.Fatalf("item %d fired %d times", v, n)
		}
	}
	// Each item fired at the first tick after its deadline, or, for a deadline already past
	// (or in the tick running) when it was added, at the tick after the Add: an item slipped into
	// a slot just visited would wait a whole rotation.
	for v := range nows {
		if bound := later(ats[v], added[v]).Add(tick); !nows[v].Before(bound) {
			t.Fatalf("item %d fired at tick %v, %v after its deadline or Add", v, nows[v], nows[v].Sub(bound)+tick)
		}
	}
	if n := early.Load(); n != 0 {
		t.Fatalf("%d items fired before their deadline", n)
	}
	if w.Len() != 0 {
		t.Fatalf("Len = %d", w.Len())
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func TestStop(t *testing.T) {
	defer goleak.VerifyNone(t)

	t.Run("idempotent", func(t *testing.T) {
		rec := &recorder{}
		w := timewheel.New(tick, 8, rec.fire)
		w.Start()
		w.Start() // no second goroutine
		for i := range 10 {
			w.Add(time.Now().Add(time.Hour), i)
		}
		w.Stop()
		w.Stop()
		if w.Len() != 0 {
			t.Fatalf("Len = %d after Stop, want 0 (pending dropped)", w.Len())
		}
		w.Add(time.Now(), 99)
		if w.Len() != 0 {
			t.Fatalf("Len = %d after an Add after Stop", w.Len())
		}
		w.Start() // no restart
		time.Sleep(3 * tick)
		if ev := rec.snapshot(); len(ev) != 0 {
			t.Fatalf("fired after Stop: %v", ev)
		}
		goleak.VerifyNone(t)
	})

	t.Run("concurrent", func(t *testing.T) {
		w := timewheel.New(tick, 8, func(time.Time, int) {})
		w.Start()
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(w.Stop)
			wg.Go(func() { w.Add(time.Now(), 1) })
		}
		wg.Wait()
		if w.Len() != 0 {
			t.Fatalf("Len = %d", w.Len())
		}
		goleak.VerifyNone(t)
	})

	t.Run("never started", func(t *testing.T) {
		w := timewheel.New(tick, 8, func(time.Time, int) {})
		w.Add(time.Now(), 1)
		if w.Len() != 1 {
			t.Fatalf("Len = %d before Start, want 1", w.Len())
		}
		w.Stop()
		w.Stop()
		if w.Len() != 0 {
			t.Fatalf("Len = %d", w.Len())
		}
	})

	t.Run("while firing", func(t *testing.T) {
		// Stop waits for the tick being fired, and nothing fires after it returns.
		var fired, after atomic.Int64
		var stopped atomic.Bool
		w := timewheel.New(tick, 8, func(time.Time, int) {
			if stopped.Load() {
				after.Add(1)
			}
			fired.Add(1)
			time.Sleep(time.Millisecond)
		})
		for i := range 200 {
			w.Add(time.Now().Add(time.Duration(i%4)*tick), i)
		}
		w.Start()
		for fired.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		w.Stop()
		stopped.Store(true)
		time.Sleep(3 * tick)
		if after.Load() != 0 {
			t.Fatalf("%d items fired after Stop returned", after.Load())
		}
		if n := fired.Load(); n == 200 {
			t.Logf("all items fired before Stop") // possible on a fast machine; not an error
		}
		goleak.VerifyNone(t)
	})
}

func TestNow(t *testing.T) {
	created := time.Now()
	w := timewheel.New(tick, 8, func(time.Time, int) {})
	if d := w.Now().Sub(created); d < 0 || d > slack {
		t.Fatalf("Now before Start is %v after creation", d)
	}
	w.Start()
	defer w.Stop()
	prev := w.Now()
	for range 10 {
		time.Sleep(tick)
		now := w.Now()
		if now.Before(prev) {
			t.Fatalf("Now went back from %v to %v", prev, now)
		}
		if real := time.Now(); now.After(real) {
			t.Fatalf("Now %v is ahead of the real clock %v", now, real)
		}
		if d := now.Sub(prev); d%tick != 0 {
			t.Fatalf("Now moved by %v, not a whole number of ticks", d)
		}
		prev = now
	}
	if d := time.Since(w.Now()); d > slack {
		t.Fatalf("Now lags %v", d)
	}
	if !w.Now().After(created) {
		t.Fatal("Now never advanced")
	}
}

func TestNewPanics(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tick  time.Duration
		slots int
		fire  func(time.Time, int)
	}{
		{"zero tick", 0, 8, func(time.Time, int) {}},
		{"negative tick", -time.Second, 8, func(time.Time, int) {}},
		{"zero slots", time.Second, 0, func(time.Time, int) {}},
		{"nil fire", time.Second, 8, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			timewheel.New(tc.tick, tc.slots, tc.fire)
		})
	}
}

// TestNoRetention checks that fired values are not kept alive by the wheel's reused slices.
func TestNoRetention(t *testing.T) {
	type conn struct{ _ [1 << 10]byte } // large enough to be its own allocation
	var fired atomic.Int64
	w := timewheel.New(tick, 4, func(time.Time, *conn) { fired.Add(1) })
	w.Start()
	defer w.Stop()
	collected := make(chan struct{}, 1)
	func() {
		c := &conn{}
		runtime.AddCleanup(c, func(struct{}) { collected <- struct{}{} }, struct{}{})
		w.Add(time.Now(), c)
	}()
	for fired.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	deadline := time.Now().Add(slack)
	for {
		runtime.GC()
		select {
		case <-collected:
			return
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("a fired value is still reachable")
		}
		time.Sleep(tick)
	}
}

// manualClock is a clock the test moves.
type manualClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *manualClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *manualClock) add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	return c.now
}

// With a clock of its own, the wheel fires exactly when Advance passes a deadline, never before,
// and its coarse Now follows the clock: no real time passes in this test.
func TestManualClock(t *testing.T) {
	clock := &manualClock{now: time.Unix(1_000_000, 0)}
	rec := &recorder{}
	w := timewheel.New(time.Second, 4, rec.fire, timewheel.WithClock(clock.Now))
	defer w.Stop()
	start := clock.Now()
	w.Add(start.Add(1500*time.Millisecond), 1)
	w.Add(start.Add(10*time.Second), 2) // beyond one rotation of 4 slots
	w.Advance(clock.add(time.Second))
	if got := rec.snapshot(); len(got) != 0 {
		t.Fatalf("fired early: %v", got)
	}
	if !w.Now().Equal(start.Add(time.Second)) {
		t.Fatalf("Now %v, want start+1s", w.Now().Sub(start))
	}
	w.Advance(clock.add(time.Second))
	if got := rec.snapshot(); len(got) != 1 || got[0].v != 1 || !got[0].now.Equal(start.Add(2*time.Second)) {
		t.Fatalf("after 2s: %v", got)
	}
	w.Advance(clock.add(7 * time.Second))
	if got := rec.snapshot(); len(got) != 1 {
		t.Fatalf("after 9s: %v", got)
	}
	w.Advance(clock.add(time.Second))
	if got := rec.snapshot(); len(got) != 2 || got[1].v != 2 {
		t.Fatalf("after 10s: %v", got)
	}
	if w.Len() != 0 {
		t.Fatalf("Len %d", w.Len())
	}
	// Started, the goroutine reads the same clock: it fires nothing the clock has not reached.
	w.Start()
	w.Add(clock.Now().Add(time.Second), 3)
	w.Advance(clock.add(time.Second))
	if got := rec.snapshot(); len(got) != 3 || got[2].v != 3 {
		t.Fatalf("started, after 1s: %v", got)
	}
}
