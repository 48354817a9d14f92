package kit

import (
	"sync/atomic"

	"github.com/pushwire/pushwire/engines"
)

// Queue is a connection's bounded write queue: the frames queued and not yet handed to the
// socket or the library, in order, and the bytes accepted and not yet written (which may
// include bytes already handed on: the engine says when they are written). Frames are never
// copied: the seam makes a written buffer immutable, so one may be shared by many connections.
//
// The owner's lock guards the frames; the byte count is atomic, so an event loop may read it and
// count written bytes without the lock. Refusing writes after a close (engines.ErrClosed) is the
// owner's: Outbox does it for engines with a writer.
type Queue struct {
	bufs   [][]byte
	queued atomic.Int64
}

// maxRecycle bounds the frame array a queue keeps between writes.
const maxRecycle = 16

// Check reports whether n more bytes may be queued under limit, with held more bytes the engine
// holds elsewhere for the connection: engines.ErrQueueFull past the limit. The caller holds the
// owner's lock.
func (q *Queue) Check(n, limit int, held int64) error {
	if q.queued.Load()+held+int64(n) > int64(limit) {
		return engines.ErrQueueFull
	}
	return nil
}

// Append queues a then b (either may be empty) as one unit and counts their bytes; Check first.
func (q *Queue) Append(a, b []byte) {
	if len(a) > 0 {
		q.bufs = append(q.bufs, a)
	}
	if len(b) > 0 {
		q.bufs = append(q.bufs, b)
	}
	q.queued.Add(int64(len(a) + len(b)))
}

// Push is Check then Append: an empty write is accepted and queues nothing.
func (q *Queue) Push(a, b []byte, limit int, held int64) error {
	n := len(a) + len(b)
	if n == 0 {
		return nil
	}
	if err := q.Check(n, limit, held); err != nil {
		return err
	}
	q.Append(a, b)
	return nil
}

// Take removes and returns the queued frames; their bytes stay counted until Written.
func (q *Queue) Take() [][]byte {
	bufs := q.bufs
	q.bufs = nil
	return bufs
}

// Empty reports whether no frame is queued.
func (q *Queue) Empty() bool { return len(q.bufs) == 0 }

// Requeue puts rest, the unwritten part of what Take returned, back in front.
func (q *Queue) Requeue(rest [][]byte) { q.bufs = append(rest, q.bufs...) }

// Recycle gives the array of written frames back for the next writes when nothing new is queued
// and it is small, so that a steady trickle of pushes does not allocate one each time.
func (q *Queue) Recycle(bufs [][]byte) {
	if q.bufs != nil || cap(bufs) > maxRecycle {
		return
	}
	clear(bufs[:cap(bufs)]) // drop the references to written frames
	q.bufs = bufs[:0]
}

// Drop forgets the queued frames (the socket is gone).
func (q *Queue) Drop() { q.bufs = nil }

// Written counts n queued bytes as written.
func (q *Queue) Written(n int) { q.queued.Add(-int64(n)) }

// Queued is the bytes accepted and not yet written.
func (q *Queue) Queued() int64 { return q.queued.Load() }

// Consume drops the first n bytes of bufs (a partial write) and returns the rest, nil when none.
func Consume(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 && n > 0 {
		bufs[0] = bufs[0][n:]
	}
	if len(bufs) == 0 {
		return nil
	}
	return bufs
}
