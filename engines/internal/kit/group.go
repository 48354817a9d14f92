package kit

import (
	"sync"
	"sync/atomic"
	"time"
)

// Task is a connection with something for its writer to do.
type Task interface {
	// Run does it, on a runner of the connection's worker. A Task that may block (a flush to a
	// slow peer) brackets that call with r.Begin and r.End; once r.HandedOff reports true the
	// worker has a new runner, and Run may go on with this one connection before it returns.
	Run(r *Runner)
}

// Group is a downlink task group: a fixed set of writer workers, each connection bound to one,
// instead of a writer goroutine per connection. A connection with output enqueues itself on its
// worker (Worker.Enqueue) when it becomes busy, and the worker's runner calls its Run.
//
// With a hand-off delay, a runner whose Task blocks between Begin and End for longer than that
// is detached: a fresh runner takes over the worker's queue, so one slow peer stalls the others
// bound to its worker for at most the delay; the detached runner exits when its Run returns.
// Go runs other goroutines of the engine's write side under the group's wait group.
type Group struct {
	workers []*Worker
	handoff time.Duration
	quit    chan struct{}
	wg      sync.WaitGroup
	stop    sync.Once
}

// NewGroup builds a group of n workers (none started) with the given hand-off delay (0: never).
func NewGroup(n int, handoff time.Duration) *Group {
	g := &Group{handoff: handoff, quit: make(chan struct{})}
	g.workers = make([]*Worker, n)
	for i := range g.workers {
		g.workers[i] = &Worker{g: g, wake: make(chan struct{}, 1)}
	}
	return g
}

// Start starts a runner per worker.
func (g *Group) Start() {
	for _, w := range g.workers {
		w.spawn()
	}
}

// For returns the worker a connection with this ID is bound to.
func (g *Group) For(id uint64) *Worker { return g.workers[id%uint64(len(g.workers))] }

// Go runs f as one of the group's goroutines: Stop waits for it.
func (g *Group) Go(f func()) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
}

// Stop tells the idle runners to exit and waits for every goroutine of the group. Call it once
// no connection can enqueue any more (after every connection is closed).
func (g *Group) Stop() {
	g.stop.Do(func() { close(g.quit) })
	g.wg.Wait()
}

// Worker is one writer of the group: a queue of tasks and one active runner draining it.
type Worker struct {
	g    *Group
	mu   sync.Mutex
	q    []Task
	head int
	wake chan struct{}
}

// Enqueue adds t to w's queue and wakes its runner.
func (w *Worker) Enqueue(t Task) {
	w.mu.Lock()
	w.q = append(w.q, t)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Worker) pop() Task {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.head == len(w.q) {
		w.q, w.head = w.q[:0], 0
		return nil
	}
	t := w.q[w.head]
	w.q[w.head] = nil
	w.head++
	if w.head > 1024 && w.head > len(w.q)/2 { // compact under sustained load
		n := copy(w.q, w.q[w.head:])
		clear(w.q[n:])
		w.q, w.head = w.q[:n], 0
	}
	return t
}

// spawn starts a new active runner for w.
func (w *Worker) spawn() {
	r := &Runner{w: w}
	if w.g.handoff > 0 {
		r.timer = time.AfterFunc(time.Hour, r.slow)
		r.timer.Stop()
	}
	w.g.Go(func() { w.run(r) })
}

func (w *Worker) run(r *Runner) {
	if r.timer != nil {
		defer r.timer.Stop()
	}
	for {
		t := w.pop()
		if t == nil {
			select {
			case <-w.wake:
				continue
			case <-w.g.quit:
				return
			}
		}
		t.Run(r)
		if r.HandedOff() {
			return // another runner serves w now
		}
	}
}

// Runner is one goroutine draining a worker.
type Runner struct {
	w     *Worker
	state atomic.Int32 // runnerIdle, runnerBlocked, runnerHandedOff
	timer *time.Timer  // nil without a hand-off delay
}

const (
	runnerIdle int32 = iota
	runnerBlocked
	runnerHandedOff
)

// Begin marks the start of a call that may block on a peer.
func (r *Runner) Begin() {
	if r.timer != nil && r.state.CompareAndSwap(runnerIdle, runnerBlocked) {
		r.timer.Reset(r.w.g.handoff)
	}
}

// End marks its end.
func (r *Runner) End() {
	if r.timer != nil && r.state.CompareAndSwap(runnerBlocked, runnerIdle) {
		r.timer.Stop()
	}
}

// HandedOff reports whether the worker has a new runner: r only finishes its current task.
func (r *Runner) HandedOff() bool { return r.state.Load() == runnerHandedOff }

// slow runs on the timer's goroutine while r is (still) blocked: hand the worker to a new
// runner. r's own goroutine is counted in the group until it exits, so spawning is safe even
// while Stop waits.
func (r *Runner) slow() {
	if r.state.CompareAndSwap(runnerBlocked, runnerHandedOff) {
		r.w.spawn()
	}
}
