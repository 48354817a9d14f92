// Package timewheel is a hashed timing wheel: coarse deadlines for millions of items (login and
// idle timeouts of connections), driven by one goroutine and one timer, with no timer per item.
//
// Time is cut into ticks of a fixed length, counted from the wheel's creation; tick k is at
// origin + k*tick. An item due at tick k waits in slot k mod slots. Each tick the driving
// goroutine visits one slot and fires the items that are due, leaving those due in a later
// rotation (deadlines beyond slots*tick) for the next visit.
//
// # Lazy cancellation
//
// There is no way to cancel or move an item: it fires at its deadline whatever happened since.
// The callback re-checks whether the item still matters, and Adds it again if its deadline moved.
// For an idle timeout, fire reads the connection's last-activity stamp (taken from Now, which is
// cheap) and either closes the connection or Adds it back at stamp+timeout. A closed connection
// is ignored. This keeps Add a slice append and the per-item cost a deadline and a value.
//
// # Locking
//
// Each slot has its own mutex, a leaf lock: Add holds one slot's mutex to append, Advance holds it
// to take out the due items. Advance holds the visit mutex while it visits ticks (and calls fire),
// so fire may call Add but not Advance. The lifecycle mutex (Start, Stop) is never held together
// with a slot mutex.
package timewheel

import (
	"sync"
	"sync/atomic"
	"time"
)

// item is one pending callback: the number of the tick it fires at, and its value. An absolute
// tick number, rather than a count of rotations left, is never rewritten while it waits, so the
// driving goroutine only reads the items it keeps.
type item[T any] struct {
	due int64
	v   T
}

// slot holds the items due at ticks ≡ its index (mod slots). Its slice is reused: after a visit
// it keeps its capacity, so a steady load appends without allocating.
type slot[T any] struct {
	mu    sync.Mutex
	items []item[T]
	_     [32]byte // a slot per cache line (8+24+32 bytes): Adds to neighbouring slots do not contend
}

// Wheel schedules callbacks at coarse deadlines. One goroutine drives it.
//
// Items fire in deadline order at tick granularity; items due at the same tick fire in the order
// they were added (as seen by the slot's mutex). An item fires at the first tick at or after its
// deadline, never before it, and about one tick after it at most when the driving goroutine keeps
// up. If it falls behind (a busy machine, a suspended process), it catches up tick by tick.
//
// Memory: an item is its tick number and its value (16 bytes for a pointer). Slots keep the
// capacity they grew to, so a wheel holds about the peak number of items it has seen; Stop
// releases it.
type Wheel[T any] struct {
	tick   time.Duration
	origin time.Time // tick k is at origin + k*tick; carries a monotonic reading
	slots  []slot[T]
	fire   func(now time.Time, v T)
	now    func() time.Time // the clock: time.Now unless WithClock

	cur     atomic.Int64 // the last tick visited: Add places items after it
	pending atomic.Int64 // items added and not yet fired or dropped
	stopped atomic.Bool  // set once by Stop; Add drops items after it

	mu      sync.Mutex // guards started
	started bool
	quit    chan struct{} // closed by Stop
	done    chan struct{} // closed by the driving goroutine as it exits

	visitMu sync.Mutex // held by Advance while it visits ticks; guards firing
	firing  []T        // values due in the tick being visited
}

// Option configures a Wheel.
type Option func(*options)

type options struct{ now func() time.Time }

// WithClock makes the wheel read the time from now instead of time.Now: its origin at New, and the
// present each time its goroutine wakes. A test gives it a clock it advances, and moves the wheel
// with Advance (with or without Start).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// New returns a wheel with the given tick (granularity, e.g. 1s) and number of slots. fire is
// called on the wheel's goroutine (or Advance's caller) for each due item; it must not block for
// long, must not panic, and must not call Stop or Advance. Deadlines up to slots*tick ahead take one visit; later ones wait for
// their rotation. The wheel's clock starts at New: Start it soon after. New panics on a
// non-positive tick or slot count, or a nil fire. New starts nothing.
func New[T any](tick time.Duration, slots int, fire func(now time.Time, v T), opts ...Option) *Wheel[T] {
	if tick <= 0 || slots <= 0 || fire == nil {
		panic("timewheel: New needs a positive tick and slot count and a fire func")
	}
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	return &Wheel[T]{
		tick:   tick,
		origin: o.now(),
		slots:  make([]slot[T], slots),
		fire:   fire,
		now:    o.now,
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
}

// Start starts the driving goroutine. It does nothing if the wheel is started or stopped.
func (w *Wheel[T]) Start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.started || w.stopped.Load() {
		return
	}
	w.started = true
	go w.run()
}

// Stop stops the driving goroutine and waits for it to exit; if a tick is firing, that tick's
// items fire first. Stop without Start is fine. Pending items are dropped, and later Adds are ignored. Stop is idempotent and
// safe from any goroutine but the wheel's own (fire must not call it).
func (w *Wheel[T]) Stop() {
	w.mu.Lock()
	first := !w.stopped.Swap(true)
	started := w.started
	w.mu.Unlock()
	if first && started {
		close(w.quit)
	}
	if started {
		<-w.done
	}
	if !first {
		return
	}
	for i := range w.slots {
		s := &w.slots[i]
		s.mu.Lock()
		w.pending.Add(-int64(len(s.items)))
		s.items = nil
		s.mu.Unlock()
	}
}

// Add schedules v to fire at the first tick at or after at; a past at fires on the next tick.
// It is safe from any goroutine, fire included, and does not allocate beyond the growth of a
// slot's slice. After Stop it does nothing.
func (w *Wheel[T]) Add(at time.Time, v T) {
	due := w.tickOf(at)
	n := int64(len(w.slots))
	for {
		// The driving goroutine stores cur = k before it locks slot k mod n. So if cur < d
		// under the slot's mutex, the visit for tick d has not begun and will see the item.
		d := max(due, w.cur.Load()+1)
		s := &w.slots[d%n]
		s.mu.Lock()
		if w.cur.Load() >= d {
			s.mu.Unlock() // the tick came meanwhile: place the item after it
			continue
		}
		if w.stopped.Load() {
			s.mu.Unlock()
			return
		}
		s.items = append(s.items, item[T]{due: d, v: v})
		w.pending.Add(1)
		s.mu.Unlock()
		return
	}
}

// Len is the number of items pending: added, and neither fired nor dropped by Stop.
func (w *Wheel[T]) Len() int { return int(w.pending.Load()) }

// Now is the wheel's coarse clock: the time of the last tick (the time of New until the first
// tick). It costs an atomic load, no system call, so it suits activity stamps. It carries a
// monotonic reading, and never goes backwards.
func (w *Wheel[T]) Now() time.Time { return w.tickTime(w.cur.Load()) }

// tickTime is the time of tick k.
func (w *Wheel[T]) tickTime(k int64) time.Time { return w.origin.Add(time.Duration(k) * w.tick) }

// tickOf is the first tick at or after at (0 for times before the origin).
func (w *Wheel[T]) tickOf(at time.Time) int64 {
	d := at.Sub(w.origin) // saturates for far-off times
	if d <= 0 {
		return 0
	}
	k := int64(d / w.tick)
	if d%w.tick != 0 {
		k++
	}
	return k
}

// run is the driving goroutine: it sleeps until the next tick is due, then visits every tick up to
// the present, in order.
func (w *Wheel[T]) run() {
	defer close(w.done)
	t := time.NewTimer(w.untilNext())
	defer t.Stop()
	for {
		select {
		case <-w.quit:
			return
		case <-t.C:
		}
		w.Advance(w.now())
		t.Reset(w.untilNext())
	}
}

// Advance visits every tick up to now, in order, firing what is due: the driving goroutine calls
// it with the clock's time each time it wakes, and a test with a clock of its own calls it after
// moving that clock. It is safe from any goroutine but fire's. After Stop it does nothing.
func (w *Wheel[T]) Advance(now time.Time) {
	w.visitMu.Lock()
	defer w.visitMu.Unlock()
	last := int64(now.Sub(w.origin) / w.tick)
	for k := w.cur.Load() + 1; k <= last; k++ {
		if w.stopped.Load() {
			return
		}
		w.visit(k)
	}
}

// untilNext is how long until the tick after the last one visited.
func (w *Wheel[T]) untilNext() time.Duration { return w.tickTime(w.cur.Load() + 1).Sub(w.now()) }

// visit advances the clock to tick k and fires the items due at k, outside the slot's lock.
func (w *Wheel[T]) visit(k int64) {
	w.cur.Store(k)
	s := &w.slots[k%int64(len(w.slots))]
	s.mu.Lock()
	kept := s.items[:0]
	for _, it := range s.items {
		if it.due <= k {
			w.firing = append(w.firing, it.v)
		} else {
			kept = append(kept, it) // a later rotation; compacted in place, order kept
		}
	}
	clear(s.items[len(kept):]) // drop references to fired values
	s.items = kept
	s.mu.Unlock()
	if len(w.firing) == 0 {
		return
	}
	w.pending.Add(-int64(len(w.firing)))
	now := w.tickTime(k)
	for _, v := range w.firing {
		w.fire(now, v)
	}
	clear(w.firing)
	w.firing = w.firing[:0]
}
