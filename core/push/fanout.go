// Package push is the downlink side of the core: the fan-out that spreads one message to many
// connections across a fixed set of worker goroutines, so a push to a 100,000-member group never
// stalls one goroutine and never starts a goroutine per member.
package push

import (
	"errors"
	"runtime"
	"sync"
)

// ErrStopped is returned by Run after Stop.
var ErrStopped = errors.New("push: fan-out stopped")

// Config configures a Fanout. The zero value of each field means its default.
type Config struct {
	// Workers is the number of fan-out goroutines. Default 2 × GOMAXPROCS.
	Workers int
	// Chunk is how many targets one worker takes at a time. Default 512.
	Chunk int
}

func (c *Config) setDefaults() {
	if c.Workers <= 0 {
		c.Workers = 2 * runtime.GOMAXPROCS(0)
	}
	if c.Chunk <= 0 {
		c.Chunk = 512
	}
}

// Fanout runs a function over chunks of a target list on a fixed set of workers. New starts
// nothing: Start starts the workers and Stop stops them and waits for them. Before Start, Run
// runs every chunk on its caller.
type Fanout[T any] struct {
	cfg  Config
	jobs chan job[T]
	wg   sync.WaitGroup

	mu      sync.RWMutex // held for reading by Run while it hands out jobs; Start and Stop take it
	started bool
	stopped bool
}

type job[T any] struct {
	list []T
	fn   func([]T)
	done *sync.WaitGroup
}

// New returns a Fanout whose workers are not started.
func New[T any](cfg Config) *Fanout[T] {
	cfg.setDefaults()
	return &Fanout[T]{cfg: cfg, jobs: make(chan job[T], cfg.Workers)}
}

// Start starts the workers. It does nothing after the first call or after Stop.
func (f *Fanout[T]) Start() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.started || f.stopped {
		return
	}
	f.started = true
	for range f.cfg.Workers {
		f.wg.Go(f.work)
	}
}

func (f *Fanout[T]) work() {
	for j := range f.jobs {
		j.fn(j.list)
		j.done.Done()
	}
}

// Stop waits for the jobs under way and stops the workers. It may be called more than once, and
// without Start.
func (f *Fanout[T]) Stop() {
	f.mu.Lock()
	if !f.stopped {
		f.stopped = true
		close(f.jobs)
	}
	f.mu.Unlock()
	f.wg.Wait()
}

// Run calls fn on consecutive chunks of list, on the workers, and returns when every chunk is
// done. A list no longer than one chunk runs on the caller. fn may run concurrently with itself
// on different chunks. Run blocks while every worker is busy: that is the push path's
// backpressure.
func (f *Fanout[T]) Run(list []T, fn func(chunk []T)) error {
	if len(list) <= f.cfg.Chunk {
		fn(list)
		return nil
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.stopped {
		return ErrStopped
	}
	if !f.started {
		for len(list) > 0 {
			n := min(len(list), f.cfg.Chunk)
			fn(list[:n:n])
			list = list[n:]
		}
		return nil
	}
	var done sync.WaitGroup
	for len(list) > 0 {
		n := min(len(list), f.cfg.Chunk)
		done.Add(1)
		f.jobs <- job[T]{list: list[:n:n], fn: fn, done: &done}
		list = list[n:]
	}
	done.Wait()
	return nil
}
