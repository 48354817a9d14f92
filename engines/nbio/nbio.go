// Package nbioengine is the engine on github.com/lesismal/nbio (v1.6.9): a few epoll pollers
// read every connection and call the handler on the poller goroutine; writes go straight to the
// socket from the writing goroutine and nbio caches what the socket does not take.
//
// # Reading
//
// nbio hands OnData the poller's shared read buffer (Config.ReadBufferSize bytes per poller), valid
// only during the call. The engine offers it to the handler as is (through the kit's Reader, which
// checks the consumed count); when the handler leaves a
// partial frame, only that tail is copied into a per-connection buffer, which exists only while a
// partial frame is pending (the next call offers tail+new bytes) and is given back as soon as it
// has been consumed. The pending tail never exceeds Config.MaxFrame: a connection whose
// unconsumed input reaches it is closed with engines.ErrFrameTooLarge.
//
// # Writing
//
// Conn.Write calls nbio's Conn.Write (a mutex, a direct write(2), a copy of the unsent rest). The
// engine counts the bytes queued and not yet written through nbio's OnWrittenSize callback, so a
// Write that would take the queue past Config.MaxWriteQueue returns engines.ErrQueueFull and
// queues nothing. nbio's own MaxWriteBufferSize is set to the same bound as a safety net: it closes
// the connection when exceeded, which the engine's own check makes unreachable.
//
// Conn also implements engines.FrameWriter: head and tail are assembled in a pooled buffer for
// one Write. This is the one engine that copies a shared tail per connection, and it must: nbio's
// Writev (v1.6.9) drops the data when the socket is full and nothing is cached yet, and never
// reports a complete writev to OnWrittenSize (which the queue bound relies on); two Writes would
// need a lock of the engine's own to stay one unit and cost a second system call, far more than
// copying a frame that is already in cache into a buffer that goes straight back to the pool.
//
// A connection whose peer accepts nothing for Config.WriteTimeout while bytes are queued is closed
// with engines.ErrWriteTimeout. There is no timer per connection: connections with bytes left
// over after a Write join a list that one goroutine sweeps every WriteTimeout/4 (between 10 ms and
// 1 s), so a slow consumer is closed between WriteTimeout and WriteTimeout plus one sweep period
// after its last progress. That close is a reset (SO_LINGER 0): the peer gets ECONNRESET and the
// kernel drops the send buffer (several MB on loopback) instead of keeping an orphan socket.
//
// # Closing
//
// Conn.Close stops accepting Writes and closes the socket once what was queued has been written
// (or the write timeout closes it). A handler error or an oversized frame closes the same way, so
// an error frame written before is still sent. OnOpen, OnData and OnClose of one connection are
// serialised by a per-connection mutex, because nbio calls OnClose on another goroutine (its
// Async queue) while the poller may still be inside OnData. Shutdown stops accepting, closes
// every connection after flushing, waits for every OnClose and stops nbio; when its context
// ends first, the rest are reset.
//
// # nbio traps handled here
//
//   - Its Stop hangs forever when a poller or acceptor goroutine has not started running yet
//     (each clears its shutdown flag when it starts): Start returns only after every poller has
//     read a probe byte, and Shutdown waits for the acceptor to park before calling Stop.
//   - Its acceptor loop spins and logs on every Accept error (EMFILE included) until Stop: the
//     listener handed to nbio backs off on errors and parks once Shutdown stops accepting.
//   - It calls OnOpen before adding the fd to its poller, so a Close inside OnOpen (the core's
//     GOAWAY while draining) must not release the fd number yet: that close is a shutdown(2),
//     and the poller closes the fd when it sees the hang-up.
//   - It dup(2)s accepted sockets without FD_CLOEXEC: the engine sets it, so a child process
//     cannot keep a closed connection open.
//   - A peer's half-close (EPOLLRDHUP) closes the whole connection with io.EOF after at most
//     "read_times" reads of what was still buffered; bytes beyond that are not offered.
//   - OnClose runs on nbio's Async goroutine, serially for all of the engine's connections: a slow
//     handler OnClose delays every other OnClose.
//
// # Options
//
// Declared with their types, defaults and help in Options; engines.New validates them and
// rejects any other key:
//
//   - "sweep": the slow-consumer sweep period, a Go duration ("250ms"). Default 0: WriteTimeout/4,
//     clamped to [10ms, 1s].
//   - "read_times": nbio's MaxConnReadTimesPerEventLoop, reads per readable event and connection
//     before the poller moves on (default 3).
//   - "lock_poller": "true" locks each poller goroutine to an OS thread.
//   - "nbio_log": nbio's log level, one of debug, info (the default), warn, error, none. This
//     sets nbio's process-wide logger (nbio logs to stdout).
//
// The connection cap (Config.MaxConns) is checked by the listener the engine hands nbio: a
// connection past it gets Config.RefuseMessage and is closed before nbio or the handler sees it.
//
// Config.Workers sets the number of pollers (default GOMAXPROCS).
//
// Registered as "nbio".
package nbioengine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lesismal/nbio"
	"github.com/lesismal/nbio/logging"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/internal/kit"
)

// Name is the registered engine name.
const Name = "nbio"

// Options are the nbio engine's options.
var Options = []engines.Option{
	{Key: "sweep", Type: engines.OptDuration, Default: "0s", Min: "0s",
		Help: "slow-consumer sweep period; 0 for WriteTimeout/4 clamped to 10ms..1s"},
	{Key: "read_times", Type: engines.OptInt, Default: "3", Min: "1",
		Help: "nbio's MaxConnReadTimesPerEventLoop: reads per readable event and connection before the poller moves on"},
	{Key: "lock_poller", Type: engines.OptBool, Default: "false",
		Help: "lock each poller goroutine to an OS thread"},
	{Key: "nbio_log", Type: engines.OptEnum, Default: "info", Values: []string{"debug", "info", "warn", "error", "none"},
		Help: "nbio's own log level (process-wide; nbio logs to stdout)"},
}

var nbioLevels = map[string]int{
	"debug": logging.LevelDebug, "info": logging.LevelInfo, "warn": logging.LevelWarn,
	"error": logging.LevelError, "none": logging.LevelNone,
}

func init() { engines.Register(Name, newEngine, Options...) }

// engine serves one listener with an nbio.Engine.
type engine struct {
	kit.Base

	npoller   int
	readTimes int
	lockPoll  bool
	sweepIvl  time.Duration

	g      *nbio.Engine
	ln     *listener
	t0     time.Time // origin of the monotonic stamps in conn.stamp
	nextID atomic.Uint64
	live   sync.WaitGroup // one per connection opened, done after its OnClose

	stateMu  sync.Mutex // guards started and stopped
	started  bool
	stopped  bool
	stopOnce sync.Once

	// All open connections, an intrusive list (two pointers per connection).
	mu   sync.Mutex
	head *conn

	// Connections with bytes left unsent after a Write, swept for the write timeout.
	slowMu sync.Mutex
	slow   []*conn

	quit    chan struct{}
	sweepWG sync.WaitGroup

	probeHit chan int // probePollers: one receive per poller that read its probe
}

// newEngine builds an nbio engine; engines.New has validated the options.
func newEngine(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	e := &engine{
		Base:      kit.NewBase(Name, cfg, h),
		npoller:   cfg.Workers,
		readTimes: kit.Int(cfg, "read_times"),
		lockPoll:  kit.Bool(cfg, "lock_poller"),
		sweepIvl:  kit.Duration(cfg, "sweep"),
		quit:      make(chan struct{}),
	}
	if e.npoller <= 0 {
		e.npoller = runtime.GOMAXPROCS(0)
	}
	e.probeHit = make(chan int, e.npoller) // before Start: read by the pollers
	if e.sweepIvl == 0 {
		e.sweepIvl = min(max(cfg.WriteTimeout/4, 10*time.Millisecond), time.Second)
	}
	logging.SetLevel(nbioLevels[cfg.Options["nbio_log"]])
	return e, nil
}

func (e *engine) Addr() net.Addr {
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	if e.ln == nil {
		return nil
	}
	return e.ln.Addr()
}

// Start binds cfg.Addr and starts nbio's pollers and the slow-consumer sweeper.
func (e *engine) Start() error {
	e.stateMu.Lock()
	defer e.stateMu.Unlock()
	if e.started {
		return errors.New("nbioengine: Start called twice")
	}
	g := nbio.NewEngine(nbio.Config{
		Name:                         "pushwire-nbio",
		Network:                      "tcp",
		Addrs:                        []string{e.Cfg.Addr},
		NPoller:                      e.npoller,
		ReadBufferSize:               e.Cfg.ReadBufferSize,
		MaxWriteBufferSize:           e.Cfg.MaxWriteQueue,
		MaxConnReadTimesPerEventLoop: e.readTimes,
		LockPoller:                   e.lockPoll,
		Listen:                       e.listen,
	})
	g.OnOpen(e.onOpen)
	g.OnData(e.onData)
	g.OnClose(e.onClose)
	g.OnWrittenSize(e.onWritten)
	// Callbacks may run as soon as g.Start has started the acceptor.
	e.g = g
	e.t0 = time.Now()
	if err := g.Start(); err != nil {
		e.g = nil
		if e.ln != nil {
			_ = e.ln.Close()
			e.ln = nil
		}
		return fmt.Errorf("nbioengine: start on %s: %w", e.Cfg.Addr, err)
	}
	if err := e.probePollers(); err != nil {
		// Only when file descriptors run out. Stop races with goroutines that have not run yet
		// (see probePollers): wait for the acceptor to park and give the pollers a moment.
		e.ln.stopAccepting()
		<-e.ln.parked
		time.Sleep(50 * time.Millisecond)
		e.stopOnce.Do(g.Stop)
		e.g = nil
		return fmt.Errorf("nbioengine: start on %s: %w", e.Cfg.Addr, err)
	}
	e.started = true
	e.sweepWG.Add(1)
	go e.sweep()
	return nil
}

// probePollers returns once every nbio poller goroutine has handled an event.
//
// nbio's poller goroutine sets its shutdown flag to false when it starts running; a Stop that
// comes before that (Shutdown right after Start, on a busy machine) is overwritten and the poller
// then spins forever on its never-drained wake-up eventfd, so Stop never returns. Each poller
// gets a socketpair end (nbio picks the poller by fd modulo NPoller) and one byte; once every
// poller has read its byte it is past that point, and the probes are closed.
func (e *engine) probePollers() error {
	n := e.npoller
	var (
		probes []*nbio.Conn
		peers  []int
		seen   = make([]bool, n)
		left   = n
		err    error
	)
	defer func() {
		for _, nc := range probes {
			_ = nc.Close()
		}
		for _, fd := range peers {
			_ = syscall.Close(fd)
		}
	}()
	for attempt := 0; left > 0 && attempt < 8*n+8; attempt++ {
		var fds [2]int
		fds, err = syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC|syscall.SOCK_NONBLOCK, 0)
		if err != nil {
			return fmt.Errorf("probe socketpair: %w", err)
		}
		peers = append(peers, fds[1])
		f := os.NewFile(uintptr(fds[0]), "nbio-probe")
		c, ferr := net.FileConn(f) // a dup of fds[0]
		_ = f.Close()
		if ferr != nil {
			return fmt.Errorf("probe conn: %w", ferr)
		}
		// nbio dup(2)s c's fd to the lowest free number: hold spacer fds until that number
		// falls on a poller not reached yet.
		for range n {
			x, derr := syscall.Dup(fds[1])
			if derr != nil {
				break
			}
			if !seen[x%n] {
				_ = syscall.Close(x)
				break
			}
			peers = append(peers, x)
		}
		nc, aerr := e.g.AddConn(c) // dups c's fd and closes c
		if aerr != nil {
			_ = c.Close()
			return fmt.Errorf("probe add: %w", aerr)
		}
		probes = append(probes, nc)
		if i := nc.Hash() % n; !seen[i] {
			seen[i] = true
			left--
			if _, err = syscall.Write(fds[1], []byte{1}); err != nil {
				return fmt.Errorf("probe write: %w", err)
			}
		}
	}
	if left > 0 {
		return fmt.Errorf("probe: %d of %d pollers not reached", left, n)
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for range n {
		select {
		case <-e.probeHit:
		case <-timeout.C:
			return errors.New("probe: pollers did not start within 10s")
		}
	}
	return nil
}

// probe marks the sessions of probePollers' connections.
type probe struct{}

// listen is nbio's Config.Listen: it keeps the listener, for Addr and for Shutdown.
func (e *engine) listen(_, addr string) (net.Listener, error) {
	ln, err := kit.Listen(addr)
	if err != nil {
		return nil, err
	}
	e.ln = newListener(ln, e.Log, e.Gate)
	return e.ln, nil
}

// Shutdown stops accepting, closes every connection after flushing what it has queued, waits
// for every OnClose and stops nbio's goroutines. When ctx ends first the remaining connections are
// closed at once (queued bytes are dropped) and ctx.Err() is returned after nbio has stopped.
func (e *engine) Shutdown(ctx context.Context) error {
	e.stateMu.Lock()
	if !e.started || e.stopped {
		e.stateMu.Unlock()
		return nil
	}
	e.stopped = true
	e.stateMu.Unlock()

	// Stop accepting and wait until nbio's acceptor is parked, so every connection it accepted
	// has been opened (nbio calls OnOpen on the acceptor goroutine) and is in e.head. This does
	// not wait on ctx: Accept fails at once on the closed socket, and nbio's Stop must not run
	// before the acceptor goroutine has started (it would then spin on Accept forever).
	e.ln.stopAccepting()
	<-e.ln.parked

	// Close everything gracefully (no connection opens from here on: the acceptor is parked),
	// then wait for every OnClose; past ctx, reset what is left.
	if ctx.Err() == nil {
		for _, c := range e.conns() {
			_ = c.Close()
		}
	}
	err := kit.WaitOr(ctx, e.live.Wait, func() {
		for _, c := range e.conns() {
			c.abort(nil)
		}
	})

	// nbio's Stop closes the listener (releasing the parked acceptor) and stops the pollers.
	e.stopOnce.Do(e.g.Stop)
	close(e.quit)
	e.sweepWG.Wait()
	return err
}

// conns snapshots the open connections.
func (e *engine) conns() []*conn {
	e.mu.Lock()
	defer e.mu.Unlock()
	var all []*conn
	for c := e.head; c != nil; c = c.next {
		all = append(all, c)
	}
	return all
}

func (e *engine) link(c *conn) {
	e.mu.Lock()
	c.next = e.head
	if e.head != nil {
		e.head.prev = c
	}
	e.head = c
	e.mu.Unlock()
}

func (e *engine) unlink(c *conn) {
	e.mu.Lock()
	if c.prev != nil {
		c.prev.next = c.next
	} else if e.head == c {
		e.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	e.mu.Unlock()
}

// mono is a monotonic clock in nanoseconds, for write-progress stamps.
func (e *engine) mono() int64 { return int64(time.Since(e.t0)) }

// onOpen runs on nbio's acceptor goroutine, before the socket is added to its poller.
func (e *engine) onOpen(nc *nbio.Conn) {
	if _, ok := nc.LocalAddr().(*net.UnixAddr); ok {
		nc.SetSession(probe{}) // probePollers' socketpair: the engine listens on TCP only
		return
	}
	// nbio dup(2)s every accepted fd without FD_CLOEXEC: a child process started meanwhile would
	// inherit the socket and keep it open after the engine closes it.
	if rc, err := nc.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) { syscall.CloseOnExec(int(fd)) })
	}
	var remote string
	if ra := nc.RemoteAddr(); ra != nil {
		remote = ra.String()
	}
	c := &conn{Ident: kit.MakeIdent(e.nextID.Add(1), remote), e: e, nc: nc}
	// nbio publishes the session to the poller and Async goroutines through epoll, which the race
	// detector cannot see; ready is the synchronising store that connOf loads.
	c.ready.Store(true)
	nc.SetSession(c)
	e.live.Add(1)
	e.link(c)
	c.hmu.Lock()
	c.opening.Store(true)
	e.Rd.H.OnOpen(c)
	c.opening.Store(false)
	c.hmu.Unlock()
}

// connOf returns the engine's conn for nc, nil before onOpen.
func connOf(nc *nbio.Conn) *conn {
	c, _ := nc.Session().(*conn)
	if c == nil || !c.ready.Load() {
		return nil
	}
	return c
}

// onData runs on the connection's poller goroutine; data is the poller's buffer.
func (e *engine) onData(nc *nbio.Conn, data []byte) {
	c := connOf(nc)
	if c == nil {
		if _, ok := nc.Session().(probe); ok {
			select {
			case e.probeHit <- nc.Hash():
			default:
			}
		}
		return
	}
	c.hmu.Lock()
	if c.dead || c.noRead {
		c.hmu.Unlock()
		return
	}
	err := e.Rd.Feed(c, &c.in, data, nil)
	if err != nil {
		c.noRead = true
		e.Rd.Release(&c.in)
	}
	c.hmu.Unlock()
	if err != nil {
		c.shut(err)
	}
}

// onClose runs on nbio's Async goroutine, exactly once per connection nbio opened.
func (e *engine) onClose(nc *nbio.Conn, err error) {
	c := connOf(nc)
	if c == nil {
		return
	}
	c.closing.Store(true)
	c.hmu.Lock()
	if c.dead {
		c.hmu.Unlock()
		return
	}
	c.dead = true
	c.gone.Store(true)
	e.Rd.Release(&c.in)
	c.hmu.Unlock()
	if c.halfShut.Load() {
		err = c.closeReason() // closed in OnOpen: the hang-up nbio saw was ours
	}
	e.unlink(c)
	e.Gate.Leave()
	e.Rd.H.OnClose(c, err)
	e.live.Done()
}

// onWritten is nbio's OnWrittenSize: n bytes of c's output reached the socket. It runs with
// nbio's connection mutex held, so it must not call into nbio.Conn.
func (e *engine) onWritten(nc *nbio.Conn, _ []byte, n int) {
	c := connOf(nc)
	if c == nil || n <= 0 {
		return
	}
	if c.slow.Load() {
		c.stamp.Store(e.mono())
	}
	if c.queued.Add(-int64(n)) <= 0 && c.closing.Load() && !c.gone.Load() {
		// The last queued bytes of a closing connection are out: close it, off this lock.
		e.g.Async(c.finish)
	}
}

// track puts c on the slow list if it has bytes left unsent and is not already on it.
func (e *engine) track(c *conn) {
	if c.queued.Load() <= 0 || !c.slow.CompareAndSwap(false, true) {
		return
	}
	c.stamp.Store(e.mono())
	e.slowMu.Lock()
	e.slow = append(e.slow, c)
	e.slowMu.Unlock()
}

// sweep closes slow consumers: connections that made no write progress for WriteTimeout while
// bytes were queued.
func (e *engine) sweep() {
	defer e.sweepWG.Done()
	t := time.NewTicker(e.sweepIvl)
	defer t.Stop()
	var list []*conn
	limit := int64(e.Cfg.WriteTimeout)
	for {
		select {
		case <-e.quit:
			return
		case <-t.C:
		}
		e.slowMu.Lock()
		list, e.slow = e.slow, list[:0]
		e.slowMu.Unlock()
		if len(list) == 0 {
			continue
		}
		now := e.mono()
		keep := list[:0]
		for _, c := range list {
			switch {
			case c.gone.Load():
				c.slow.Store(false)
			case c.queued.Load() <= 0:
				// Drained. Leave the list, unless bytes were queued again meanwhile.
				c.slow.Store(false)
				if c.queued.Load() > 0 && c.slow.CompareAndSwap(false, true) {
					c.stamp.Store(now)
					keep = append(keep, c)
				} else if c.closing.Load() {
					c.finish()
				}
			case now-c.stamp.Load() > limit:
				c.slow.Store(false)
				e.Log.Debug("slow consumer; closing", "conn", c.ID(), "remote", c.RemoteAddr())
				c.abort(engines.ErrWriteTimeout)
			default:
				keep = append(keep, c)
			}
		}
		clear(list[len(keep):])
		e.slowMu.Lock()
		e.slow = append(e.slow, keep...)
		e.slowMu.Unlock()
		list = list[:0]
	}
}

// conn is one connection.
type conn struct {
	kit.Ident
	e  *engine
	nc *nbio.Conn

	queued   atomic.Int64          // bytes accepted by Write and not yet written to the socket
	stamp    atomic.Int64          // e.mono() of the last write progress, while on the slow list
	reason   atomic.Pointer[error] // why the engine closes it (handler error, oversized frame)
	closing  atomic.Bool           // no more Writes: Close called, or closed
	slow     atomic.Bool           // on the engine's slow list
	gone     atomic.Bool           // OnClose delivered
	ready    atomic.Bool           // set once at open: publishes the struct to nbio's goroutines
	opening  atomic.Bool           // inside the handler's OnOpen
	halfShut atomic.Bool           // closed during OnOpen with shutdown(2); the poller closes the fd

	hmu    sync.Mutex // serialises the handler's calls for this connection
	dead   bool       // under hmu: OnClose delivered
	noRead bool       // under hmu: closing for a read-side error, drop further input
	in     kit.Input  // under hmu: pending partial frame

	prev, next *conn // e's list, under e.mu
}

var _ engines.FrameWriter = (*conn)(nil)

// Write sends b now as far as the socket takes it; nbio copies the rest and sends it when the
// socket is writable, so b is not retained. It never blocks on the peer.
func (c *conn) Write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if c.closing.Load() {
		return engines.ErrClosed
	}
	n := int64(len(b))
	limit := int64(c.e.Cfg.MaxWriteQueue)
	for {
		q := c.queued.Load()
		if q+n > limit {
			return engines.ErrQueueFull
		}
		if c.queued.CompareAndSwap(q, q+n) {
			break
		}
	}
	if _, err := c.nc.Write(b); err != nil {
		c.queued.Add(-n)
		if errors.Is(err, net.ErrClosed) {
			return engines.ErrClosed
		}
		// nbio closed the connection (EPIPE, ECONNRESET...); OnClose follows with err.
		return fmt.Errorf("%w: %w", engines.ErrClosed, err)
	}
	if c.queued.Load() > 0 {
		c.e.track(c)
	} else if c.closing.Load() {
		c.finish() // Close raced with this Write and left the flush to it
	}
	return nil
}

// maxPooledFrame bounds the frames WriteFrame assembles in a pooled buffer.
const maxPooledFrame = 64 << 10

var framePool = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

// WriteFrame implements engines.FrameWriter: head then tail as one unit, under Write's rules.
// nbio's Writev is not used: in v1.6.9 it drops the data when the socket is full (EAGAIN with
// nothing cached yet) and never reports a complete writev to OnWrittenSize. Instead head and
// tail are copied into a pooled buffer for one Write; nbio keeps no reference to it after Write
// returns (it copies what the socket did not take), so the buffer goes straight back to the pool.
func (c *conn) WriteFrame(head, tail []byte) error {
	switch n := len(head) + len(tail); {
	case len(tail) == 0:
		return c.Write(head)
	case len(head) == 0:
		return c.Write(tail)
	case n > maxPooledFrame:
		return c.Write(append(append(make([]byte, 0, n), head...), tail...))
	}
	p := framePool.Get().(*[]byte)
	b := append(append((*p)[:0], head...), tail...)
	err := c.Write(b)
	*p = b[:0]
	framePool.Put(p)
	return err
}

// Close stops Writes and closes the socket once the queued bytes have been written.
func (c *conn) Close() error {
	c.shut(nil)
	return nil
}

// shut closes c after its queued bytes are written; reason (if any) is OnClose's err.
func (c *conn) shut(reason error) {
	if reason != nil {
		c.reason.CompareAndSwap(nil, &reason)
	}
	if !c.closing.CompareAndSwap(false, true) {
		return
	}
	if c.queued.Load() <= 0 {
		c.finish()
		return
	}
	c.e.track(c) // bounded by the write timeout
}

// finish closes the socket now. nbio calls OnClose (once, however often this runs).
func (c *conn) finish() {
	if c.opening.Load() {
		// Inside OnOpen nbio has not yet added the fd to its poller: closing it now would free the
		// number for another socket before nbio registers it. shutdown(2) ends the connection (what
		// the kernel holds is still sent, then FIN) and keeps the fd; once registered, the poller
		// sees the hang-up and closes it, and onClose reports c.reason instead of io.EOF.
		c.halfShut.Store(true)
		c.nc.Lock()
		if closed, _ := c.nc.IsClosed(); !closed {
			if rc, err := c.nc.SyscallConn(); err == nil {
				_ = rc.Control(func(fd uintptr) { _ = syscall.Shutdown(int(fd), syscall.SHUT_RDWR) })
			}
		}
		c.nc.Unlock()
		return
	}
	_ = c.nc.CloseWithError(c.closeReason())
}

// closeReason is the reason the engine closes c for, nil for a plain Close.
func (c *conn) closeReason() error {
	if p := c.reason.Load(); p != nil {
		return *p
	}
	return nil
}

// abort closes the socket now with a reset (SO_LINGER 0): what nbio and the kernel still hold
// for the peer is dropped. Without it a slow consumer's socket lingers as an orphan in
// FIN-WAIT-1 with up to several MB of kernel send buffer, which the peer, reading at last
// through a small window, takes many seconds to drain before it sees the end.
func (c *conn) abort(reason error) {
	c.nc.Lock()
	if closed, _ := c.nc.IsClosed(); !closed {
		_ = c.nc.SetLinger(1, 0) // under nbio's lock: the fd cannot be closed and reused meanwhile
	}
	c.nc.Unlock()
	_ = c.nc.CloseWithError(reason)
}

// listener wraps the net.Listener nbio accepts from. nbio's acceptor loop spins (logging) on any
// Accept error until its Stop; this wrapper instead backs off on transient errors (EMFILE) through
// the kit, refuses connections past the cap before nbio sees them, and once Shutdown stops
// accepting it parks Accept until nbio closes the listener.
type listener struct {
	*net.TCPListener
	log      *slog.Logger
	gate     *kit.Gate
	stopping atomic.Bool
	stopCh   chan struct{} // closed by stopAccepting
	parked   chan struct{} // closed when Accept has parked for good
	done     chan struct{} // closed by Close (nbio's Stop)
	stopOnce sync.Once
	parkOnce sync.Once
	doneOnce sync.Once
}

func newListener(ln *net.TCPListener, log *slog.Logger, gate *kit.Gate) *listener {
	return &listener{TCPListener: ln, log: log, gate: gate, stopCh: make(chan struct{}), parked: make(chan struct{}), done: make(chan struct{})}
}

// Accept returns the next connection under the cap, retrying transient errors with a backoff.
func (l *listener) Accept() (net.Conn, error) {
	var backoff kit.Backoff
	for {
		c, err := l.AcceptTCP()
		if err == nil {
			backoff.Reset()
			switch {
			case l.stopping.Load():
				_ = c.Close()
			case !l.gate.Admit():
				l.gate.RefuseConn(c)
			default:
				return c, nil
			}
			continue
		}
		if l.stopping.Load() || errors.Is(err, net.ErrClosed) {
			l.parkOnce.Do(func() { close(l.parked) })
			<-l.done
			return nil, net.ErrClosed
		}
		l.log.Warn("accept failed; retrying", "err", err)
		backoff.Wait(l.stopCh)
	}
}

// stopAccepting closes the socket; Accept parks until Close.
func (l *listener) stopAccepting() {
	l.stopOnce.Do(func() {
		l.stopping.Store(true)
		close(l.stopCh)
		_ = l.TCPListener.Close()
	})
}

// Close releases a parked Accept and closes the socket.
func (l *listener) Close() error {
	l.doneOnce.Do(func() { close(l.done) })
	l.stopAccepting()
	return nil
}
