package floor

import (
	"encoding/binary"
	"errors"
	"sync"

	"golang.org/x/sys/unix"
)

// conn is one client connection.
type conn struct {
	fd int
	lp *loop // the loop that owns it: reads it, flushes it, closes it
	id uint64

	// Owned by the loop.
	partial  []byte // the bytes of a partial frame, nil when none
	loggedIn bool
	app      *appState
	device   string

	// Guarded by registry.mu.
	member []membership // the sets it is in: its app's connections, its groups

	// Guarded by mu: the write side, reached from any goroutine.
	mu      sync.Mutex
	closed  bool   // the descriptor is closed: nothing may touch it
	dead    bool   // shut down or on its way out: takes no more bytes
	finWait bool   // dead after a protocol error: shut the write side once pending is out
	armed   bool   // EPOLLOUT is armed
	pending []byte // bytes the socket has not taken yet, in order
	pushSeq uint32 // the last PUSH seq written
}

// Outcomes of a write.
type outcome uint8

const (
	outDelivered outcome = iota // written or queued
	outFailed                   // closed, dying, or over its write queue
)

// send writes b (one or more whole frames) to c, or queues what the socket does not take. With
// push, b is one PUSH frame whose seq field is set to c's next push seq first.
func (c *conn) send(b []byte, push bool) outcome {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.dead {
		return outFailed
	}
	if push {
		c.pushSeq++
		binary.BigEndian.PutUint32(b[8:12], c.pushSeq)
	}
	return c.writeLocked(b)
}

// writeLocked writes b or queues it behind what is pending. c.mu is held.
func (c *conn) writeLocked(b []byte) outcome {
	wq := c.lp.s.cfg.WriteQueue
	if len(c.pending) > 0 {
		if len(c.pending)+len(b) > wq {
			c.slowConsumer()
			return outFailed
		}
		c.lp.s.queued.Add(1)
		c.pending = append(c.pending, b...)
		return outDelivered
	}
	n, err := write(c.fd, b)
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		c.kill()
		return outFailed
	}
	if n == len(b) {
		return outDelivered
	}
	if len(b)-n > wq {
		c.slowConsumer()
		return outFailed
	}
	c.lp.s.queued.Add(1)
	c.pending = append(c.pending, b[n:]...)
	c.arm(true)
	return outDelivered
}

// flush writes what is pending once the socket is writable; on the owning loop.
func (c *conn) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	if len(c.pending) > 0 { // kill drops what is pending: only a finishing connection flushes while dead
		n, err := write(c.fd, c.pending)
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			c.kill()
			return
		}
		c.pending = c.pending[:copy(c.pending, c.pending[n:])]
	}
	if len(c.pending) == 0 {
		c.pending = nil // an idle connection keeps no buffer
		if c.armed {
			c.arm(false)
		}
		if c.finWait {
			c.finWait = false
			_ = unix.Shutdown(c.fd, unix.SHUT_WR)
		}
	}
}

// arm turns EPOLLOUT on or off for c. c.mu is held.
func (c *conn) arm(on bool) {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(c.fd)}
	if on {
		ev.Events |= unix.EPOLLOUT
	}
	if unix.EpollCtl(c.lp.epfd, unix.EPOLL_CTL_MOD, c.fd, &ev) == nil {
		c.armed = on
	}
}

// slowConsumer closes c because its write queue overflowed. c.mu is held.
func (c *conn) slowConsumer() {
	c.lp.s.slowConsumers.Add(1)
	c.kill()
}

// kill shuts c down at once, both ways: its loop sees the end of the stream and closes it.
// c.mu is held.
func (c *conn) kill() {
	if c.closed {
		return
	}
	c.dead, c.finWait, c.pending = true, false, nil
	_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
}

// finish ends c after a protocol error: what is queued (the ERROR) goes out, then the write side
// is shut, and the loop closes c when the peer closes its side. Input is discarded meanwhile.
func (c *conn) finish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.dead {
		return
	}
	c.dead = true
	if len(c.pending) > 0 {
		c.finWait = true
		return
	}
	_ = unix.Shutdown(c.fd, unix.SHUT_WR)
}

// write is write(2), retried on EINTR. It returns the bytes written (0 on error).
func write(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}
