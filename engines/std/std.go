// Package stdengine is the standard-library engine: one reader goroutine per connection, and
// writes through a downlink task group, a fixed set of writer workers with every connection
// bound to one, instead of a writer goroutine per connection.
//
// A worker writes a connection's queued frames with one non-blocking writev. When the socket
// cannot take everything (a slow peer), the rest is handed to a short-lived goroutine that waits
// for the socket with a deadline (Config.WriteTimeout), so one slow peer never stalls a worker
// and the other connections bound to it. Per connection, queued bytes are bounded by
// Config.MaxWriteQueue.
//
// Registered as "std".
package stdengine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
)

// Name is the registered engine name.
const Name = "std"

func init() { engines.Register(Name, New) }

// maxIov bounds one writev (IOV_MAX is 1024 on Linux).
const maxIov = 1024

type engine struct {
	cfg engines.Config
	h   engines.Handler
	log *slog.Logger

	ln       net.Listener
	workers  []*worker
	nextID   atomic.Uint64
	closing  atomic.Bool
	acceptWG sync.WaitGroup
	readers  sync.WaitGroup // one per connection, done after OnClose
	writers  sync.WaitGroup // workers and slow-path flushers
	open     atomic.Int64   // sockets not yet closed

	mu    sync.Mutex
	conns map[uint64]*conn
}

// New builds a std engine. Options: none.
func New(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	cfg = cfg.WithDefaults()
	n := cfg.Workers
	if n <= 0 {
		n = 2 * runtime.GOMAXPROCS(0)
	}
	e := &engine{cfg: cfg, h: h, log: slog.Default().With("engine", Name), conns: make(map[uint64]*conn)}
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
		c := &conn{id: id, nc: tc, raw: raw, remote: nc.RemoteAddr().String(), e: e, w: e.workers[id%uint64(len(e.workers))]}
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
		e.mu.Unlock()
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

// conn is one connection. Lock order: conn.mu, then worker.mu.
type conn struct {
	id     uint64
	nc     *net.TCPConn
	raw    syscall.RawConn
	remote string
	e      *engine
	w      *worker
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

func (c *conn) Write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return engines.ErrClosed
	}
	if c.queued+len(b) > c.e.cfg.MaxWriteQueue {
		c.mu.Unlock()
		return engines.ErrQueueFull
	}
	c.pending = append(c.pending, b)
	c.queued += len(b)
	schedule := !c.busy
	c.busy = true
	c.mu.Unlock()
	if schedule {
		c.w.enqueue(c)
	}
	return nil
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
		c.w.enqueue(c) // more arrived meanwhile; stay busy
		return
	}
	c.busy = false
	closeNow := c.closed
	c.mu.Unlock()
	if closeNow {
		c.closeSocket()
	}
}

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
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.e.cfg.WriteTimeout))
		nb := net.Buffers(bufs)
		n, err := nb.WriteTo(c.nc)
		c.mu.Lock()
		c.queued -= int(n)
		c.mu.Unlock()
		if err != nil {
			if errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
				c.fail(err)
			} else {
				c.fail(engines.ErrWriteTimeout)
			}
			return
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
	c.closeSocket()
}

// writevNonblock writes as much of bufs as the socket takes now, without waiting.
func writevNonblock(raw syscall.RawConn, bufs [][]byte) (int, error) {
	total := 0
	var werr error
	for len(bufs) > 0 {
		chunk := bufs[:min(len(bufs), maxIov)]
		var n int
		var err error
		rerr := raw.Write(func(fd uintptr) bool {
			for {
				n, err = unix.Writev(int(fd), chunk)
				if err != unix.EINTR {
					return true // done or EAGAIN: never wait here
				}
			}
		})
		if rerr != nil {
			return total, rerr
		}
		if n > 0 {
			total += n
		}
		if err != nil {
			if err == unix.EAGAIN {
				return total, nil
			}
			werr = err
			break
		}
		size := 0
		for _, b := range chunk {
			size += len(b)
		}
		if n < size {
			return total, nil
		}
		bufs = bufs[len(chunk):]
	}
	return total, werr
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
