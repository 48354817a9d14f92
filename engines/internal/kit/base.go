package kit

import (
	"log/slog"
	"sync"

	"github.com/pushwire/pushwire/engines"
)

// Base is what every engine holds for the seam: its configuration, logger, input reader and
// connection cap. An engine embeds it, which also gives it Name and Refused (engines.Counter).
type Base struct {
	Cfg  engines.Config
	Log  *slog.Logger
	Rd   *Reader
	Gate *Gate
	name string
}

// NewBase returns the Base of the engine name for cfg and h.
func NewBase(name string, cfg engines.Config, h engines.Handler) Base {
	log := slog.Default().With("engine", name)
	return Base{Cfg: cfg, Log: log, Rd: NewReader(cfg, h), Gate: NewGate(cfg, log), name: name}
}

var _ engines.Counter = (*Base)(nil)

// Name is the registered engine name.
func (b *Base) Name() string { return b.name }

// Refused implements engines.Counter.
func (b *Base) Refused() uint64 { return b.Gate.Refused() }

// Ident is a connection's identity at the seam, with its context slot: embed it to give a
// connection ID, RemoteAddr, Context and SetContext.
type Ident struct {
	Slot
	id     uint64
	remote string
}

// MakeIdent returns the identity of connection id from remote (captured at open).
func MakeIdent(id uint64, remote string) Ident { return Ident{id: id, remote: remote} }

// ID is unique among the engine's connections.
func (i *Ident) ID() uint64 { return i.id }

// RemoteAddr is the peer's address, captured at open.
func (i *Ident) RemoteAddr() string { return i.remote }

// Outbox is the write side of a connection whose writes go through a writer (a task group
// worker, or its own goroutine): the queue, the lock that guards it (and whatever else of the
// connection's state the engine puts under it), whether a writer owns it, and whether writes are
// refused.
type Outbox struct {
	Mu     sync.Mutex
	Q      Queue
	Busy   bool // a writer owns the write side
	Closed bool // writes are refused with engines.ErrClosed
}

// Push queues a then b as one unit under limit (Queue.Push) and reports whether the write side
// was idle: the caller then hands the connection to its writer. An empty write is accepted and
// does nothing.
func (o *Outbox) Push(a, b []byte, limit int) (wake bool, err error) {
	if len(a)+len(b) == 0 {
		return false, nil
	}
	o.Mu.Lock()
	defer o.Mu.Unlock()
	if o.Closed {
		return false, engines.ErrClosed
	}
	if err := o.Q.Push(a, b, limit, 0); err != nil {
		return false, err
	}
	wake = !o.Busy
	o.Busy = true
	return wake, nil
}
