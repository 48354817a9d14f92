// Package stdengine is the standard-library engine: one reader goroutine per connection, and one
// of two write paths, chosen with Config.Options["writer"]:
//
//   - "pool" (the default): a downlink task group, a fixed set of writer workers
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
// Any other value of "writer" makes New fail. In both, queued bytes per connection are bounded
// by Config.MaxWriteQueue (Write returns engines.ErrQueueFull past it) and Write never blocks.
// Connections implement engines.FrameWriter: WriteFrame queues a frame's own header and a tail
// shared by a fan-out as two iovecs of the same writev, without copying either.
// "pool" is the default because it is the leaner and not the slower: measured on 2,000 idle
// connections it costs one goroutine and about 3.5 KB less per connection, and pushing to 1, 100
// and 1,000 connections it is as fast or faster (WRITERS.md beside this file has the commands
// and figures). Neither path allocates per push: the iovecs are pooled and a connection's queue
// array is reused.
//
// Registered as "std".
package stdengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
)

// Name is the registered engine name.
const Name = "std"

func init() { engines.Register(Name, New) }

// maxIov bounds one writev (IOV_MAX is 1024 on Linux).
const maxIov = 1024

// OptWriter is the Config.Options key that selects the write path: WriterPool or WriterConn.
const OptWriter = "writer"

// Values of OptWriter.
const (
	WriterPool = "pool" // fixed writer workers, each connection bound to one (default)
	WriterConn = "conn" // a writer goroutine per connection
)

type engine struct {
	cfg     engines.Config
	h       engines.Handler
	log     *slog.Logger
	perConn bool // writer=conn

	ln       net.Listener
	workers  []*worker // writer=pool only
	nextID   atomic.Uint64
	closing  atomic.Bool
	acceptWG sync.WaitGroup
	readers  sync.WaitGroup // one per connection, done after OnClose
	writers  sync.WaitGroup // workers and slow-path flushers
	open     atomic.Int64   // sockets not yet closed

	mu    sync.Mutex
	conns map[uint64]*conn
}

// New builds a std engine. Options: "writer" = "pool" (default) or "conn" (see the package
// comment); any other value is an error. Other keys are ignored.
func New(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	cfg = cfg.WithDefaults()
	e := &engine{cfg: cfg, h: h, log: slog.Default().With("engine", Name), conns: make(map[uint64]*conn)}
	switch v := cfg.Options[OptWriter]; v {
	case "", WriterPool:
	case WriterConn:
		e.perConn = true
		return e, nil
	default:
		return nil, fmt.Errorf("stdengine: option %s=%q: want %q or %q", OptWriter, v, WriterPool, WriterConn)
	}
	n := cfg.Workers
	if n <= 0 {
		n = 2 * runtime.GOMAXPROCS(0)
	}
	e.workers = make([]*worker, n)
	for i := range e.workers {
		e.workers[i] = &worker{e: e, wake: make(chan struct{}, 1), quit: make(chan struct{})}
	}
	return e, nil
}

func (e *engine) Name() string { return Name }

func (e *engine) Addr() net.Addr {
	if e.ln == nil {
		return nil
	}
	return e.ln.Addr()
}

func (e *engine) Start() error {
	lc := net.ListenConfig{Control: reuseAddr}
	ln, err := lc.Listen(context.Background(), "tcp", e.cfg.Addr)
	if err != nil {
		return err
	}
	e.ln = ln
	for _, w := range e.workers {
		e.writers.Add(1)
		go w.run()
	}
	e.acceptWG.Add(1)
	go e.accept()
	return nil
}

func reuseAddr(_, _ string, rc syscall.RawConn) error {
	var serr error
	err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	})
	if err != nil {
		return err
	}
	return serr
}

func (e *engine) accept() {
	defer e.acceptWG.Done()
	var delay time.Duration
	for {
		nc, err := e.ln.Accept()
		if err != nil {
			if e.closing.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: back off like net/http does.
			if delay == 0 {
				delay = 5 * time.Millisecond
			} else if delay *= 2; delay > time.Second {
				delay = time.Second
			}
			e.log.Warn("accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		tc := nc.(*net.TCPConn)
		raw, err := tc.SyscallConn()
		if err != nil {
			_ = nc.Close()
			continue
		}
		id := e.nextID.Add(1)
		c := &conn{id: id, nc: tc, raw: raw, remote: nc.RemoteAddr().String(), e: e}
		if e.perConn {
			c.wake = make(chan struct{}, 1)
		} else {
			c.w = e.workers[id%uint64(len(e.workers))]
		}
		e.open.Add(1)
		e.mu.Lock()
		if e.closing.Load() {
			e.mu.Unlock()
			_ = nc.Close()
			e.open.Add(-1)
			continue
		}
		e.conns[id] = c
		e.readers.Add(1)
		if e.perConn {
			e.writers.Add(1)
		}
		e.mu.Unlock()
		if e.perConn {
			go c.writeLoop()
		}
		go c.readLoop()
	}
}

// Shutdown stops accepting, closes every connection after flushing what it has queued, waits for
// every OnClose and for the engine's goroutines.
func (e *engine) Shutdown(ctx context.Context) error {
	if !e.closing.CompareAndSwap(false, true) {
		return nil
	}
	if e.ln != nil {
		_ = e.ln.Close()
	}
	e.acceptWG.Wait()
	e.mu.Lock()
	all := make([]*conn, 0, len(e.conns))
	for _, c := range e.conns {
		all = append(all, c)
	}
	e.mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
	done := make(chan struct{})
	go func() {
		e.readers.Wait()
		for e.open.Load() > 0 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range all {
			c.closeSocket()
		}
		<-done
	}
	for _, w := range e.workers {
		close(w.quit)
	}
	e.writers.Wait()
	return err
}

var (
	_ engines.Conn        = (*conn)(nil)
	_ engines.FrameWriter = (*conn)(nil)
)

// conn is one connection. Lock order: conn.mu, then worker.mu.
type conn struct {
	id     uint64
	nc     *net.TCPConn
	raw    syscall.RawConn
	remote string
	e      *engine
	w      *worker       // writer=pool: the worker c is bound to
	wake   chan struct{} // writer=conn: wakes c's writer goroutine (capacity 1)
	ctx    atomic.Pointer[any]

	mu        sync.Mutex
	pending   [][]byte // queued, not yet handed to a writer
	queued    int      // bytes queued and not yet written (pending plus in flight)
	busy      bool     // a worker or the slow path owns the write side
	closed    bool     // Close called or the reader ended: no more Writes
	sockDone  bool     // the socket is closed
	closeErr  error    // why the engine closed it (a write failure); OnClose reports it
	closeOnce sync.Once
}

func (c *conn) ID() uint64         { return c.id }
func (c *conn) RemoteAddr() string { return c.remote }
func (c *conn) Context() any {
	if p := c.ctx.Load(); p != nil {
		return *p
	}
	return nil
}
func (c *conn) SetContext(v any) { c.ctx.Store(&v) }

// Write implements engines.Conn.
func (c *conn) Write(b []byte) error { return c.write(b, nil) }

// WriteFrame implements engines.FrameWriter: head and tail are queued as one unit, each as its
// own iovec, without copying (a fan-out shares tail across connections).
func (c *conn) WriteFrame(head, tail []byte) error { return c.write(head, tail) }

// write queues a followed by b as one unit under the queue bound.
func (c *conn) write(a, b []byte) error {
	n := len(a) + len(b)
	if n == 0 {
		return nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return engines.ErrClosed
	}
	if c.queued+n > c.e.cfg.MaxWriteQueue {
		c.mu.Unlock()
		return engines.ErrQueueFull
	}
	if len(a) > 0 {
		c.pending = append(c.pending, a)
	}
	if len(b) > 0 {
		c.pending = append(c.pending, b)
	}
	c.queued += n
	schedule := !c.busy
	c.busy = true
	c.mu.Unlock()
	if schedule {
		c.schedule()
	}
	return nil
}

// schedule hands c's write side to its writer: its worker, or its own writer goroutine.
func (c *conn) schedule() {
	if c.wake != nil {
		c.kick()
		return
	}
	c.w.enqueue(c)
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
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	idle := !c.busy
	c.mu.Unlock()
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
		c.mu.Lock()
		c.sockDone = true
		c.closed = true
		c.pending = nil
		c.mu.Unlock()
		_ = c.nc.Close()
		c.e.open.Add(-1)
	})
	c.kick()
}

func (c *conn) readLoop() {
	defer c.e.readers.Done()
	c.e.h.OnOpen(c)
	size := c.e.cfg.ReadBufferSize
	buf := make([]byte, size)
	have := 0 // unconsumed bytes at the start of buf
	var rerr error
	for {
		n, err := c.nc.Read(buf[have:])
		if n > 0 {
			have += n
			consumed, herr := c.e.h.OnData(c, buf[:have])
			if herr != nil {
				rerr = herr
				break
			}
			if consumed > 0 {
				have = copy(buf, buf[consumed:have])
			}
			switch {
			case have == len(buf) && len(buf) >= c.e.cfg.MaxFrame:
				rerr = engines.ErrFrameTooLarge
			case have == len(buf):
				nb := make([]byte, min(2*len(buf), c.e.cfg.MaxFrame))
				copy(nb, buf[:have])
				buf = nb
			case len(buf) > size && have < size:
				nb := make([]byte, size) // give back a large frame's buffer
				copy(nb, buf[:have])
				buf = nb
			}
			if rerr != nil {
				break
			}
		}
		if err != nil {
			c.mu.Lock()
			local, why := c.closed, c.closeErr
			c.mu.Unlock()
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
	c.mu.Lock()
	c.closed = true
	idle := !c.busy
	c.mu.Unlock()
	if idle {
		c.closeSocket()
	}
	c.kick()
	c.e.mu.Lock()
	delete(c.e.conns, c.id)
	c.e.mu.Unlock()
	c.e.h.OnClose(c, rerr)
}

// flush writes what c has queued. It runs on c's worker. It never blocks on the peer: what the
// socket does not take is handed to a slow-path goroutine.
func (c *conn) flush() {
	c.mu.Lock()
	bufs := c.pending
	c.pending = nil
	sock := c.sockDone
	c.mu.Unlock()
	if sock {
		return
	}
	written, err := writevNonblock(c.raw, bufs)
	rest := consume(bufs, written)
	c.mu.Lock()
	c.queued -= written
	if err != nil {
		c.busy = false
		c.mu.Unlock()
		c.fail(err)
		return
	}
	if len(rest) > 0 {
		// The socket is full: put the rest back in front and wait for it off the worker.
		c.pending = append(rest, c.pending...)
		c.mu.Unlock()
		c.e.writers.Add(1)
		go c.slowFlush()
		return
	}
	if len(c.pending) > 0 {
		c.mu.Unlock()
		c.schedule() // more arrived meanwhile; stay busy
		return
	}
	c.recycle(bufs)
	c.busy = false
	closeNow := c.closed
	c.mu.Unlock()
	if closeNow {
		c.closeSocket()
	}
}

// recycle gives the written bufs' backing array back to c.pending, when nothing new is queued
// and it is small, so a steady trickle of pushes does not allocate a queue each time. c.mu is held.
func (c *conn) recycle(bufs [][]byte) {
	if c.pending != nil || cap(bufs) > maxRecycle {
		return
	}
	clear(bufs) // drop the references to written frames
	c.pending = bufs[:0]
}

// maxRecycle bounds the queue array a connection keeps between writes.
const maxRecycle = 16

// slowFlush writes with blocking calls and a deadline until the queue is empty, then gives the
// connection back to its worker's regime.
func (c *conn) slowFlush() {
	defer c.e.writers.Done()
	for {
		c.mu.Lock()
		bufs := c.pending
		c.pending = nil
		if len(bufs) == 0 || c.sockDone {
			c.busy = false
			closeNow := c.closed
			c.mu.Unlock()
			if closeNow {
				c.closeSocket()
			}
			return
		}
		c.mu.Unlock()
		if err := c.writeBlocking(bufs); err != nil {
			c.fail(err)
			return
		}
	}
}

// writeBlocking writes all of bufs, waiting for the peer at most WriteTimeout, and takes what it
// wrote off c.queued. A deadline that passes is reported as engines.ErrWriteTimeout.
func (c *conn) writeBlocking(bufs [][]byte) error {
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.e.cfg.WriteTimeout))
	nb := net.Buffers(bufs)
	n, err := nb.WriteTo(c.nc)
	c.mu.Lock()
	c.queued -= int(n)
	c.mu.Unlock()
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
	defer c.e.writers.Done()
	for range c.wake {
		for {
			c.mu.Lock()
			if c.sockDone {
				c.busy = false
				c.mu.Unlock()
				return
			}
			bufs := c.pending
			if len(bufs) == 0 {
				c.busy = false
				closeNow := c.closed
				c.mu.Unlock()
				if closeNow {
					c.closeSocket()
					return
				}
				break // idle: park until the next Write or Close
			}
			c.pending = nil
			c.mu.Unlock()
			written, err := writevNonblock(c.raw, bufs)
			c.mu.Lock()
			c.queued -= written
			rest := consume(bufs, written)
			if err == nil && len(rest) == 0 {
				c.recycle(bufs)
			}
			c.mu.Unlock()
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
	c.e.log.Debug("write failed; closing", "conn", c.id, "remote", c.remote, "err", err)
	c.mu.Lock()
	c.closed = true
	c.busy = false
	if c.closeErr == nil {
		c.closeErr = err
	}
	c.mu.Unlock()
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

// consume drops the first n bytes of bufs.
func consume(bufs [][]byte, n int) [][]byte {
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

// worker is one writer of the downlink task group.
type worker struct {
	e    *engine
	mu   sync.Mutex
	q    []*conn
	wake chan struct{}
	quit chan struct{}
}

func (w *worker) enqueue(c *conn) {
	w.mu.Lock()
	w.q = append(w.q, c)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *worker) run() {
	defer w.e.writers.Done()
	var batch []*conn
	for {
		select {
		case <-w.wake:
		case <-w.quit:
			return
		}
		for {
			w.mu.Lock()
			batch, w.q = w.q, batch[:0]
			w.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			for i, c := range batch {
				c.flush()
				batch[i] = nil
			}
		}
	}
}
