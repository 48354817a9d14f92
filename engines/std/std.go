// Package stdengine is the standard-library engine: one reader goroutine per connection, and one
// of two write paths, chosen with the option "writer":
//
//   - "pool" (the default): the kit's downlink task group, a fixed set of writer workers
//     (Config.Workers, default 2×GOMAXPROCS) with every connection bound to one, instead of a
//     writer goroutine per connection. A worker writes a connection's queued frames with one
//     non-blocking writev. When the socket cannot take everything (a slow peer), the rest is
//     handed to a short-lived goroutine that waits for the socket with a deadline
//     (Config.WriteTimeout), so one slow peer never stalls a worker and the other connections
//     bound to it.
//   - "conn": a writer goroutine per connection, started at accept and parked on a channel while
//     the connection is idle. It writes with the same non-blocking writev and, when the socket is
//     full, waits for it itself with the same deadline.
//
// In both, queued bytes per connection are bounded by Config.MaxWriteQueue (the kit's Queue:
// Write returns engines.ErrQueueFull past it) and Write never blocks. Connections implement
// engines.FrameWriter: WriteFrame queues a frame's own header and a tail shared by a fan-out as
// two iovecs of the same writev, without copying either. "pool" is the default because it is the
// leaner and not the slower: measured on 2,000 idle connections it costs one goroutine and about
// 3.5 KB less per connection, and pushing to 1, 100 and 1,000 connections it is as fast or faster
// (WRITERS.md beside this file has the commands and figures). Neither path allocates per push:
// the iovecs are pooled and a connection's queue array is reused.
//
// Reads go into the connection's kit.Input (Config.ReadBufferSize, growing for a large frame up
// to Config.MaxFrame and shrinking back after it). Past Config.MaxConns a newly accepted
// connection gets Config.RefuseMessage and is closed before the handler sees it; accept errors
// (EMFILE) back off through the kit.
//
// Registered as "std"; its options are declared in Options.
package stdengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/internal/kit"
)

// Name is the registered engine name.
const Name = "std"

// OptWriter is the option that selects the write path: WriterPool or WriterConn.
const OptWriter = "writer"

// Values of OptWriter.
const (
	WriterPool = "pool" // fixed writer workers, each connection bound to one (default)
	WriterConn = "conn" // a writer goroutine per connection
)

// Options are the std engine's options.
var Options = []engines.Option{
	{Key: OptWriter, Type: engines.OptEnum, Default: WriterPool, Values: []string{WriterPool, WriterConn},
		Help: "write path: pool (a fixed set of writer workers, each connection bound to one) or conn (a writer goroutine per connection)"},
}

func init() { engines.Register(Name, newEngine, Options...) }

// maxIov bounds one writev (IOV_MAX is 1024 on Linux).
const maxIov = 1024

type engine struct {
	kit.Base
	group   *kit.Group
	perConn bool // writer=conn

	ln      *net.TCPListener
	nextID  atomic.Uint64
	closing atomic.Bool
	stop    chan struct{} // closed by Shutdown: ends an accept back-off
	accepts sync.WaitGroup
	readers sync.WaitGroup // one per connection, done after OnClose
	sockets sync.WaitGroup // one per connection, done when its socket is closed

	mu    sync.Mutex
	conns map[uint64]*conn
}

// newEngine builds a std engine; engines.New has validated the options.
func newEngine(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	e := &engine{Base: kit.NewBase(Name, cfg, h), stop: make(chan struct{}), conns: make(map[uint64]*conn)}
	e.Rd.Keep = true // the reader reads into it
	e.perConn = cfg.Options[OptWriter] == WriterConn
	workers := kit.Workers(cfg)
	if e.perConn {
		workers = 0
	}
	e.group = kit.NewGroup(workers, 0)
	return e, nil
}

func (e *engine) Addr() net.Addr {
	if e.ln == nil {
		return nil
	}
	return e.ln.Addr()
}

func (e *engine) Start() error {
	if e.ln != nil {
		return errors.New("stdengine: already started")
	}
	ln, err := kit.Listen(e.Cfg.Addr)
	if err != nil {
		return err
	}
	e.ln = ln
	e.group.Start()
	e.accepts.Add(1)
	go e.accept()
	return nil
}

func (e *engine) accept() {
	defer e.accepts.Done()
	var backoff kit.Backoff
	for {
		tc, err := e.ln.AcceptTCP()
		if err != nil {
			if e.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: back off.
			e.Log.Warn("accept failed; retrying", "err", err)
			if !backoff.Wait(e.stop) {
				return
			}
			continue
		}
		backoff.Reset()
		if !e.Gate.Admit() {
			e.Gate.RefuseConn(tc)
			continue
		}
		raw, err := tc.SyscallConn()
		if err != nil {
			_ = tc.Close()
			e.Gate.Leave()
			continue
		}
		id := e.nextID.Add(1)
		c := &conn{Ident: kit.MakeIdent(id, tc.RemoteAddr().String()), nc: tc, raw: raw, e: e}
		if e.perConn {
			c.wake = make(chan struct{}, 1)
		} else {
			c.w = e.group.For(id)
		}
		e.mu.Lock()
		if e.closing.Load() {
			e.mu.Unlock()
			_ = tc.Close()
			e.Gate.Leave()
			continue
		}
		e.conns[id] = c
		e.readers.Add(1)
		e.sockets.Add(1)
		e.mu.Unlock()
		if e.perConn {
			e.group.Go(c.writeLoop)
		}
		go c.readLoop()
	}
}

// Shutdown stops accepting, closes every connection after flushing what it has queued, waits for
// every OnClose and for the engine's goroutines. When ctx ends first the remaining sockets are
// closed at once and ctx.Err() is returned once they are gone.
func (e *engine) Shutdown(ctx context.Context) error {
	if !e.closing.CompareAndSwap(false, true) {
		return nil
	}
	close(e.stop)
	if e.ln != nil {
		_ = e.ln.Close()
	}
	e.accepts.Wait()
	e.mu.Lock()
	all := make([]*conn, 0, len(e.conns))
	for _, c := range e.conns {
		all = append(all, c)
	}
	e.mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
	err := kit.WaitOr(ctx, func() { e.readers.Wait(); e.sockets.Wait() }, func() {
		for _, c := range all {
			c.closeSocket()
		}
	})
	e.group.Stop()
	return err
}

// A connection is also a writer's task, and writes a frame's head and a shared tail as one unit.
var _ interface {
	kit.Task
	engines.FrameWriter
} = (*conn)(nil)

// conn is one connection. Lock order: Mu, then the worker's.
type conn struct {
	kit.Ident
	nc   *net.TCPConn
	raw  syscall.RawConn
	e    *engine
	w    *kit.Worker   // writer=pool: the worker c is bound to
	wake chan struct{} // writer=conn: wakes c's writer goroutine (capacity 1)

	// Outbox: the queue, Busy (a worker or the slow path owns the write side) and Closed (Close
	// called or the reader ended: no more Writes), under Mu with closeErr and sockDone.
	kit.Outbox
	closeErr  error // why the engine closed it (a write failure); OnClose reports it
	closeOnce sync.Once
	sockDone  bool // the socket is closed (after closeOnce: it packs into its padding)
}

// Write implements engines.Conn.
func (c *conn) Write(b []byte) error { return c.write(b, nil) }

// WriteFrame implements engines.FrameWriter: head and tail are queued as one unit, each as its
// own iovec, without copying (a fan-out shares tail across connections).
func (c *conn) WriteFrame(head, tail []byte) error { return c.write(head, tail) }

// write queues a followed by b as one unit under the queue bound.
func (c *conn) write(a, b []byte) error {
	wake, err := c.Push(a, b, c.e.Cfg.MaxWriteQueue)
	if wake {
		c.schedule()
	}
	return err
}

// schedule hands c's write side to its writer: its worker, or its own writer goroutine.
func (c *conn) schedule() {
	if c.wake != nil {
		c.kick()
		return
	}
	c.w.Enqueue(c)
}

// kick wakes c's writer goroutine (writer=conn) without blocking.
func (c *conn) kick() {
	if c.wake == nil {
		return
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Close stops reading at once and closes the socket when what is queued has been written (or the
// write timeout passes).
func (c *conn) Close() error {
	c.Mu.Lock()
	if c.Closed {
		c.Mu.Unlock()
		return nil
	}
	c.Closed = true
	idle := !c.Busy
	c.Mu.Unlock()
	// Wake the reader; it calls OnClose.
	_ = c.nc.SetReadDeadline(time.Unix(1, 0))
	if idle {
		c.closeSocket()
	}
	c.kick() // a writer goroutine exits once the queue is flushed
	return nil
}

func (c *conn) closeSocket() {
	c.closeOnce.Do(func() {
		c.Mu.Lock()
		c.sockDone = true
		c.Closed = true
		c.Q.Drop()
		c.Mu.Unlock()
		_ = c.nc.Close()
		c.e.Gate.Leave()
		c.e.sockets.Done()
	})
	c.kick()
}

func (c *conn) readLoop() {
	defer c.e.readers.Done()
	rd := c.e.Rd
	rd.H.OnOpen(c)
	var in kit.Input
	defer rd.Release(&in)
	var rerr error
	for {
		n, err := c.nc.Read(rd.Space(&in))
		if n > 0 {
			if rerr = rd.Commit(c, &in, n, nil); rerr != nil {
				break
			}
		}
		if err != nil {
			c.Mu.Lock()
			local, why := c.Closed, c.closeErr
			c.Mu.Unlock()
			if why != nil {
				rerr = why
			} else if !local {
				if errors.Is(err, io.EOF) {
					rerr = io.EOF
				} else {
					rerr = err
				}
			}
			break
		}
	}
	// No more writes are accepted. What is queued (an ERROR frame before a close, say) is still
	// flushed by the writer, which closes the socket when done; an idle socket closes now.
	c.Mu.Lock()
	c.Closed = true
	idle := !c.Busy
	c.Mu.Unlock()
	if idle {
		c.closeSocket()
	}
	c.kick()
	c.e.mu.Lock()
	delete(c.e.conns, c.ID())
	c.e.mu.Unlock()
	rd.H.OnClose(c, rerr)
}

// Run is the kit.Task: it writes what c has queued, on c's worker. It never blocks on the peer:
// what the socket does not take is handed to a slow-path goroutine.
func (c *conn) Run(*kit.Runner) {
	c.Mu.Lock()
	bufs := c.Q.Take()
	sock := c.sockDone
	c.Mu.Unlock()
	if sock {
		return
	}
	written, err := writevNonblock(c.raw, bufs)
	rest := kit.Consume(bufs, written)
	c.Q.Written(written)
	c.Mu.Lock()
	if err != nil {
		c.Busy = false
		c.Mu.Unlock()
		c.fail(err)
		return
	}
	if len(rest) > 0 {
		// The socket is full: put the rest back in front and wait for it off the worker.
		c.Q.Requeue(rest)
		c.Mu.Unlock()
		c.e.group.Go(c.slowFlush)
		return
	}
	if !c.Q.Empty() {
		c.Mu.Unlock()
		c.schedule() // more arrived meanwhile; stay busy
		return
	}
	c.Q.Recycle(bufs)
	c.Busy = false
	closeNow := c.Closed
	c.Mu.Unlock()
	if closeNow {
		c.closeSocket()
	}
}

// slowFlush writes with blocking calls and a deadline until the queue is empty, then gives the
// connection back to its worker's regime.
func (c *conn) slowFlush() {
	for {
		c.Mu.Lock()
		bufs := c.Q.Take()
		if len(bufs) == 0 || c.sockDone {
			c.Busy = false
			closeNow := c.Closed
			c.Mu.Unlock()
			if closeNow {
				c.closeSocket()
			}
			return
		}
		c.Mu.Unlock()
		if err := c.writeBlocking(bufs); err != nil {
			c.fail(err)
			return
		}
	}
}

// writeBlocking writes all of bufs, waiting for the peer at most WriteTimeout, and counts what
// it wrote. A deadline that passes is reported as engines.ErrWriteTimeout.
func (c *conn) writeBlocking(bufs [][]byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.e.Cfg.WriteTimeout))
	nb := net.Buffers(bufs)
	n, err := nb.WriteTo(c.nc)
	c.Q.Written(int(n))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return engines.ErrWriteTimeout
	default:
		return fmt.Errorf("stdengine: write: %w", err)
	}
}

// writeLoop is c's writer goroutine (writer=conn). It parks on c.wake while c is idle, writes
// what is queued with a non-blocking writev, waits for a full socket itself (with the write
// deadline), and exits when c is closed and its queue flushed, or on a write error.
func (c *conn) writeLoop() {
	for range c.wake {
		for {
			c.Mu.Lock()
			if c.sockDone {
				c.Busy = false
				c.Mu.Unlock()
				return
			}
			bufs := c.Q.Take()
			if len(bufs) == 0 {
				c.Busy = false
				closeNow := c.Closed
				c.Mu.Unlock()
				if closeNow {
					c.closeSocket()
					return
				}
				break // idle: park until the next Write or Close
			}
			c.Mu.Unlock()
			written, err := writevNonblock(c.raw, bufs)
			c.Q.Written(written)
			rest := kit.Consume(bufs, written)
			if err == nil && len(rest) == 0 {
				c.Mu.Lock()
				c.Q.Recycle(bufs)
				c.Mu.Unlock()
			}
			if err == nil && len(rest) > 0 {
				err = c.writeBlocking(rest) // the socket is full: wait for the peer here
			}
			if err != nil {
				c.fail(err)
				return
			}
		}
	}
}

// fail closes the connection after a write error; the reader reports OnClose.
func (c *conn) fail(err error) {
	c.e.Log.Debug("write failed; closing", "conn", c.ID(), "remote", c.RemoteAddr(), "err", err)
	c.Mu.Lock()
	c.Closed = true
	c.Busy = false
	if c.closeErr == nil {
		c.closeErr = err
	}
	c.Mu.Unlock()
	if errors.Is(err, engines.ErrWriteTimeout) {
		// A peer that took nothing for the whole timeout: reset instead of a graceful close, which
		// would keep what is queued (up to megabytes) in the kernel for a reader that never comes.
		_ = c.nc.SetLinger(0)
	}
	c.closeSocket()
}

// writevNonblock writes as much of bufs as the socket takes now, without waiting.
func writevNonblock(raw syscall.RawConn, bufs [][]byte) (int, error) {
	w := writevPool.Get().(*writev)
	defer w.release()
	total := 0
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), maxIov)]
		size := w.set(chunk)
		if err := raw.Write(w.call); err != nil {
			return total, fmt.Errorf("stdengine: writev: %w", err)
		}
		total += w.n
		switch {
		case w.errno == unix.EAGAIN:
			return total, nil
		case w.errno != 0:
			return total, fmt.Errorf("stdengine: writev: %w", w.errno)
		case w.n < size:
			return total, nil
		}
		bufs = bufs[len(chunk):]
	}
	return total, nil
}

// writev is the state of one non-blocking writev(2), pooled with its iovec array and its bound
// callback so that the write path does not allocate.
type writev struct {
	iov   []unix.Iovec
	n     int
	errno unix.Errno
	call  func(fd uintptr) bool // w.do, bound once
}

var writevPool = sync.Pool{New: func() any {
	w := &writev{iov: make([]unix.Iovec, 0, 16)}
	w.call = w.do
	return w
}}

// set points w's iovecs at bufs and returns their total length.
func (w *writev) set(bufs [][]byte) int {
	w.iov = w.iov[:0]
	size := 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		w.iov = append(w.iov, v)
		size += len(b)
	}
	return size
}

// do is the raw.Write callback: one writev, retried on EINTR, never waiting for the socket.
func (w *writev) do(fd uintptr) bool {
	w.n, w.errno = 0, 0
	if len(w.iov) == 0 {
		return true
	}
	for {
		n, _, e := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
		if e == unix.EINTR {
			continue
		}
		if e == 0 {
			w.n = int(n)
		}
		w.errno = e
		return true // done or EAGAIN: never wait here
	}
}

// release drops w's references to the written buffers and returns it to the pool.
func (w *writev) release() {
	clear(w.iov)
	w.iov = w.iov[:0]
	writevPool.Put(w)
}
