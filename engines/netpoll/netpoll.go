// Package netpollengine is the engine on github.com/cloudwego/netpoll: netpoll's epoll pollers
// read every connection into its own LinkBuffer and run the handler on a goroutine pool; writes
// go through a downlink task group like the std engine's. Registered as "netpoll".
//
// # Callbacks
//
// netpoll runs OnConnect, OnRequest and the close callbacks of one connection under its
// per-connection "processing" lock, so mapping them onto the seam keeps the handler's calls for
// one connection serial:
//
//	OnPrepare (accept path)  → the conn is created and its close callback registered
//	OnConnect (pool task)    → Handler.OnOpen
//	OnRequest (pool task)    → Handler.OnData, zero or more times
//	close callback           → Handler.OnClose, exactly once (guarded by a flag as well)
//
// The close callback runs on whichever goroutine finishes the connection: netpoll's hang-up
// goroutine after a peer close, the pool task after OnRequest, or the writer worker that closes
// it. netpoll's OnDisconnect is not used: it can run on the poller concurrently with OnRequest.
//
// # Reading, and the copies it forces
//
// netpoll calls OnRequest again in a loop for as long as input is left in its buffer, so
// OnRequest must take everything; blocking in Peek/Next until a whole frame is there would park
// a pool goroutine per half-received frame. Each OnRequest therefore takes all that is buffered
// (Reader.Len, then Next of that many: zero-copy when it lies in one buffer node, otherwise
// netpoll copies it into a temporary buffer) and offers it to Handler.OnData. The unconsumed
// tail is copied into a per-connection pending buffer, allocated only while a partial frame is
// pending and dropped as soon as it is consumed; while it exists, new input is appended to it
// (one more copy of every byte of a frame that arrives in pieces, which std and gnet avoid by
// reading into the buffer that already holds the tail). OnData is offered at most
// Config.MaxFrame bytes per call (a larger burst is offered in MaxFrame windows while the
// handler makes progress), and when MaxFrame unconsumed bytes are pending the connection is
// closed with engines.ErrFrameTooLarge, as with an engine that reads into a buffer of at most
// MaxFrame bytes. Config.ReadBufferSize is not used: netpoll sizes its reads itself, starting at
// the buffer size below and doubling while reads fill the buffer. netpoll applies no receive
// backpressure.
//
// # Writing
//
// netpoll's Writer is not goroutine-safe (a concurrent Flush fails with ErrConcurrentAccess) and
// Flush blocks until everything is sent or netpoll's write timeout passes. So Conn.Write only
// appends to a per-connection queue bounded by Config.MaxWriteQueue (engines.ErrQueueFull past
// it) and hands the connection to its writer worker (Config.Workers, default 2×GOMAXPROCS; a
// connection is bound to one by ID). The worker moves the queue into netpoll's output buffer
// and calls Flush: a batch of up to 8 frames is linked in without copying (Writer.WriteDirect),
// a longer batch is copied into buffer nodes with WriteBinary (except frames over 4 KiB, which
// WriteBinary links too) so that one sendmsg carries up to 32 nodes; either way the seam's "b is
// immutable after Write" is what makes this safe. The worker holds the connection's write lock
// meanwhile; the close callback takes that lock too before netpoll frees the buffers, so a write
// never races the teardown (writing into a closed LinkBuffer dereferences nil).
//
// A Flush that has not returned after the hand-off delay (Options "handoff", default 2ms) is
// left to finish on its own goroutine, which then keeps draining that one connection and exits,
// and a fresh goroutine takes over the worker's other connections: one slow peer stalls its
// worker for at most the hand-off delay. netpoll's write timeout is Config.WriteTimeout; a peer
// that has not taken the flushed bytes by then is closed with engines.ErrWriteTimeout.
//
// Close (from any goroutine, any number of times) stops reading at once, lets the worker flush
// what was queued before it, and then closes the socket; OnClose follows with a nil reason. A
// handler error closes the same way (a last ERROR frame still goes out) with that error as the
// reason; a peer close gives io.EOF. A panic in the handler is recovered and logged by netpoll's
// goroutine pool, not by this engine; netpoll closes that connection (OnClose then gets io.EOF).
//
// # Memory, and the process-wide netpoll settings
//
// netpoll keeps, per connection, its connection state, an iovec barrier (about 2 KB of heap
// here), an input buffer node that stays after the first read (netpoll's default 8 KiB), and,
// after a write that copied, an output node that stays as the buffer's tail (4 KiB by default).
// This engine sets both the initial buffer size (netpoll.Config.BufferSize) and the smallest
// buffer node (netpoll.LinkBufferCap) to 1 KiB by default, and links short batches without
// copying, so an idle connection keeps no output node at all (the output buffer's tail then
// references the last short frame written, often a buffer shared by many connections, until the
// next write; past 8 KiB of capacity netpoll lets go of it). The trade-off: a burst takes more,
// smaller nodes and reads at first (netpoll doubles the read size after each full read), and a
// long batch of small frames is copied into 1 KiB nodes, 32 of which go per sendmsg.
//
// Measured on the 2-core test machine, 5,000 idle loopback connections with the clients in
// another process, gateway RSS per connection: 3.5 KB before any frame, 5.6 KB after one echo
// (5.2 KB of it heap) with the default 1 KiB; 11.2 KB with buffer_size=8192 (netpoll's own
// default); 4.7 KB with buffer_size=256.
//
// These settings, and the poller count, are global to netpoll and must be set before its first
// connection, so the first engine to Start applies them once (netpoll.Configure); a later engine
// in the same process asking for other values gets a warning and netpoll's current values.
// netpoll's pollers and its goroutine pool are process-wide and outlive every engine.
//
// # Options
//
// Config.Options keys (other keys are ignored):
//
//	buffer_size  bytes, 64..1048576: netpoll's initial read buffer and smallest buffer node
//	             (default 1024; netpoll's own default is 8192)
//	pollers      netpoll epoll loops, 1..1024 (default netpoll's: GOMAXPROCS/20+1)
//	handoff      Go duration, 10µs..Config.WriteTimeout: how long a worker waits on one Flush
//	             before handing it off (default 2ms)
//
// # Listener
//
// The engine gives netpoll its own Listener over the socket it bound (SO_REUSEADDR, accept4 with
// SOCK_NONBLOCK|SOCK_CLOEXEC, TCP_NODELAY), instead of netpoll.ConvertListener, which dups the
// socket through File() and then closes the dup twice on shutdown (once with syscall.Close, once
// through the *os.File), a hazard for whatever else reuses that descriptor number. Shutdown stops
// accepting with shutdown(2) on the listening socket first, so no connection is accepted while
// the open ones flush and close.
//
// Built with -race, netpoll finds a descriptor's operator by its number instead of by pointer
// (poll_default_linux_race.go), so an event fetched for a socket that is then closed can land on
// the next socket given the same number. Shutdown waits for netpoll to detach the listener before
// closing it for that reason; the same window exists inside netpoll for connections and cannot be
// closed from outside (it does not exist in normal builds).
package netpollengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
)

// Name is the registered engine name.
const Name = "netpoll"

// Option keys understood in engines.Config.Options.
const (
	OptBufferSize = "buffer_size"
	OptPollers    = "pollers"
	OptHandoff    = "handoff"
)

// Defaults for the options.
const (
	DefaultBufferSize = 1 << 10
	DefaultHandoff    = 2 * time.Millisecond
)

func init() { engines.Register(Name, New) }

// maxDirect is the largest batch of queued frames that write links into netpoll's output buffer
// without copying.
const maxDirect = 8

// Errors of this package (OnClose reasons wrap them where the handler or input is at fault).
var (
	// ErrBadConsume is the OnClose reason when Handler.OnData returned a consumed count outside
	// 0..len(in).
	ErrBadConsume = errors.New("netpoll: handler consumed count out of range")
	errHandedOff  = errors.New("netpoll: accepted socket is owned by netpoll")
)

// settings are the process-wide netpoll settings an engine asks for.
type settings struct {
	bufferSize int
	pollers    int // 0: netpoll's default
}

var (
	configureOnce sync.Once
	configured    settings
	configureErr  error
)

// configure applies s to netpoll once per process; see the package comment.
func configure(s settings, log *slog.Logger) error {
	configureOnce.Do(func() {
		// LinkBufferCap is read by netpoll whenever it allocates a buffer node; this runs
		// before the first connection of the process (netpoll is used by nothing else here).
		netpoll.LinkBufferCap = s.bufferSize
		configureErr = netpoll.Configure(netpoll.Config{
			PollerNum:   s.pollers,
			BufferSize:  s.bufferSize,
			LoadBalance: netpoll.RoundRobin,
		})
		if configureErr != nil {
			configureErr = fmt.Errorf("netpoll: configure: %w", configureErr)
		}
		configured = s
	})
	if configureErr != nil {
		return configureErr
	}
	if s != configured {
		log.Warn("netpoll is configured once per process; keeping the first engine's settings",
			"want_buffer_size", s.bufferSize, "want_pollers", s.pollers,
			"have_buffer_size", configured.bufferSize, "have_pollers", configured.pollers)
	}
	return nil
}

type engine struct {
	cfg     engines.Config
	h       engines.Handler
	log     *slog.Logger
	set     settings
	handoff time.Duration

	ln      *listener
	evl     netpoll.EventLoop
	served  chan struct{} // closed when EventLoop.Serve returns
	started bool
	workers []*worker
	writers sync.WaitGroup // runners of every worker, active and handed off
	nextID  atomic.Uint64

	mu       sync.Mutex
	closing  bool
	conns    map[uint64]*conn
	live     sync.WaitGroup // one per registered conn, done after its OnClose
	shutOnce sync.Once
}

// New builds a netpoll engine; see the package comment for cfg.Options.
func New(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	if h == nil {
		return nil, errors.New("netpoll: nil handler")
	}
	cfg = cfg.WithDefaults()
	e := &engine{
		cfg:     cfg,
		h:       h,
		log:     slog.Default().With("engine", Name),
		set:     settings{bufferSize: DefaultBufferSize},
		handoff: min(DefaultHandoff, cfg.WriteTimeout),
		conns:   make(map[uint64]*conn),
		served:  make(chan struct{}),
	}
	for k, v := range cfg.Options {
		switch k {
		case OptBufferSize:
			n, err := strconv.Atoi(v)
			if err != nil || n < 64 || n > 1<<20 {
				return nil, fmt.Errorf("netpoll: option %s=%q: want bytes in 64..1048576", k, v)
			}
			e.set.bufferSize = n
		case OptPollers:
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1024 {
				return nil, fmt.Errorf("netpoll: option %s=%q: want 1..1024", k, v)
			}
			e.set.pollers = n
		case OptHandoff:
			d, err := time.ParseDuration(v)
			if err != nil || d < 10*time.Microsecond || d > cfg.WriteTimeout {
				return nil, fmt.Errorf("netpoll: option %s=%q: want a duration in 10µs..%v", k, v, cfg.WriteTimeout)
			}
			e.handoff = d
		default:
			e.log.Debug("ignoring option of another engine", "key", k)
		}
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
	return e.ln.addr
}

// Start binds cfg.Addr and serves in the background.
func (e *engine) Start() error {
	if e.started {
		return errors.New("netpoll: engine already started")
	}
	if err := configure(e.set, e.log); err != nil {
		return err
	}
	ln, err := listen(e.cfg.Addr, e)
	if err != nil {
		return err
	}
	evl, err := netpoll.NewEventLoop(e.onRequest,
		netpoll.WithOnPrepare(e.onPrepare),
		netpoll.WithOnConnect(e.onConnect),
		netpoll.WithWriteTimeout(e.cfg.WriteTimeout),
	)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("netpoll: event loop: %w", err)
	}
	e.ln, e.evl, e.started = ln, evl, true
	for _, w := range e.workers {
		w.spawn()
	}
	go func() {
		defer close(e.served)
		err := evl.Serve(ln)
		e.mu.Lock()
		closing := e.closing
		e.mu.Unlock()
		if err != nil && !closing {
			e.log.Error("netpoll stopped serving", "err", err)
		}
	}()
	return nil
}

// Shutdown stops accepting, closes every connection after flushing what it has queued, and
// waits for every OnClose and for the engine's goroutines. If ctx ends first the remaining
// connections are closed without flushing and ctx.Err() is returned once they are gone.
func (e *engine) Shutdown(ctx context.Context) error {
	var err error
	e.shutOnce.Do(func() { err = e.shutdown(ctx) })
	return err
}

func (e *engine) shutdown(ctx context.Context) error {
	e.mu.Lock()
	e.closing = true
	all := make([]*conn, 0, len(e.conns))
	for _, c := range e.conns {
		all = append(all, c)
	}
	e.mu.Unlock()
	if !e.started {
		return nil
	}
	// Stop accepting now; the listening socket itself is closed by the event loop's Shutdown
	// below, after netpoll has detached it.
	e.ln.stopAccepting()
	for _, c := range all {
		_ = c.Close()
	}
	done := make(chan struct{})
	go func() { e.live.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		for _, c := range all {
			c.abort()
		}
		<-done
	}
	// netpoll reacts to stopAccepting by detaching the listener and ending Serve. Wait for that
	// before the listening descriptor is closed: under the race detector netpoll finds a
	// descriptor's operator by number, so a hang-up still queued for this one would hit
	// whatever socket reuses the number next (another engine's listener, say).
	select {
	case <-e.served:
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	// Every connection is gone, so the event loop's Shutdown only detaches and closes the
	// listener. Serve may not have registered its server yet when Start was just called: repeat
	// until it returns.
	for served := false; !served; {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if serr := e.evl.Shutdown(sctx); serr != nil {
			e.log.Warn("netpoll event loop shutdown", "err", serr)
		}
		cancel()
		select {
		case <-e.served:
			served = true
		case <-time.After(10 * time.Millisecond):
		}
	}
	for _, w := range e.workers {
		close(w.quit)
	}
	e.writers.Wait()
	return err
}

// onPrepare runs on the accept path before netpoll watches the socket: it creates the conn and
// registers its close callback (netpoll runs close callbacks newest first, so this one runs
// before netpoll's own, which frees the buffers and closes the descriptor).
func (e *engine) onPrepare(nc netpoll.Connection) context.Context {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		return context.Background() // not a *conn: onConnect closes it
	}
	id := e.nextID.Add(1)
	c := &conn{
		baseContext: context.Background(),
		id:          id,
		e:           e,
		w:           e.workers[id%uint64(len(e.workers))],
		nc:          nc,
		remote:      addrString(nc.RemoteAddr()),
	}
	e.conns[id] = c
	e.live.Add(1)
	e.mu.Unlock()
	_ = nc.AddCloseCallback(c.onNetpollClose)
	return c
}

func (e *engine) onConnect(ctx context.Context, nc netpoll.Connection) context.Context {
	c, ok := ctx.(*conn)
	if !ok {
		_ = nc.Close() // accepted while shutting down
		return ctx
	}
	c.opened.Store(true)
	e.h.OnOpen(c)
	return ctx
}

// onRequest takes everything netpoll has buffered and offers it to the handler; see the package
// comment.
func (e *engine) onRequest(ctx context.Context, nc netpoll.Connection) error {
	r := nc.Reader()
	n := r.Len()
	if n <= 0 {
		return nil
	}
	c, ok := ctx.(*conn)
	if !ok || c.readStopped() {
		_ = r.Skip(n) // closing: input is dropped
		_ = r.Release()
		return nil
	}
	in, err := r.Next(n)
	if err != nil {
		_ = r.Release()
		c.closeWith(fmt.Errorf("netpoll: read: %w", err))
		return nil
	}
	data := in
	if c.pending != nil {
		c.pending = append(c.pending, in...)
		data = c.pending
	}
	// Like an engine reading into a MaxFrame buffer, offer at most MaxFrame bytes at a time: a
	// frame longer than that is never handed to the handler, however it arrives.
	off := 0
	for {
		win, truncated := data[off:], false
		if len(win) > e.cfg.MaxFrame {
			win, truncated = win[:e.cfg.MaxFrame], true
		}
		consumed, herr := e.h.OnData(c, win)
		if herr != nil {
			c.pending = nil
			c.closeWith(herr)
			break
		}
		if consumed < 0 || consumed > len(win) {
			c.pending = nil
			c.closeWith(fmt.Errorf("netpoll: OnData consumed %d of %d bytes: %w", consumed, len(win), ErrBadConsume))
			break
		}
		off += consumed
		if !truncated || consumed == 0 || c.readStopped() {
			c.keep(data[off:])
			break
		}
	}
	// Next's bytes die here; what the handler left is in c.pending.
	_ = r.Release()
	return nil
}

// baseContext names the context.Context embedded in conn (conn has its own Context method).
type baseContext = context.Context

// conn is one connection. Lock order: wmu, then mu, then worker.mu.
type conn struct {
	// The conn is itself the context netpoll hands back to OnConnect and OnRequest, so it
	// needs no separate allocation.
	baseContext

	id     uint64
	e      *engine
	w      *worker
	nc     netpoll.Connection
	remote string
	val    atomic.Pointer[any]
	opened atomic.Bool // OnOpen was called: OnClose is owed
	ended  atomic.Bool // OnClose was called

	// pending is the unconsumed input: only touched under netpoll's processing lock.
	pending []byte

	// wmu is held while using nc's Writer, and by the close callback before netpoll frees it.
	wmu sync.Mutex

	mu        sync.Mutex
	queue     [][]byte // queued, not yet handed to netpoll
	queued    int      // bytes queued and not yet flushed
	busy      bool     // a runner owns the write side
	closed    bool     // Close, a handler error or a failure: no more Writes or reads
	reasonSet bool     // reason below is final (nil for a local Close)
	reason    error
	closeSent bool // nc.Close was called (or netpoll closed it)
	sockDone  bool // the close callback ran: nc's buffers are gone
}

func (c *conn) ID() uint64         { return c.id }
func (c *conn) RemoteAddr() string { return c.remote }
func (c *conn) Context() any {
	if p := c.val.Load(); p != nil {
		return *p
	}
	return nil
}
func (c *conn) SetContext(v any) { c.val.Store(&v) }

// Write queues b; see engines.Conn.
func (c *conn) Write(b []byte) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return engines.ErrClosed
	}
	if len(b) == 0 {
		c.mu.Unlock()
		return nil
	}
	if c.queued+len(b) > c.e.cfg.MaxWriteQueue {
		c.mu.Unlock()
		return engines.ErrQueueFull
	}
	c.queue = append(c.queue, b)
	c.queued += len(b)
	schedule := !c.busy
	c.busy = true
	c.mu.Unlock()
	if schedule {
		c.w.enqueue(c)
	}
	return nil
}

// Close stops reading at once; the worker flushes what is queued and then closes the socket.
// OnClose follows, never on the caller's goroutine.
func (c *conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if !c.reasonSet {
		c.reasonSet, c.reason = true, nil
	}
	schedule := !c.busy
	c.busy = true
	c.mu.Unlock()
	if schedule {
		c.w.enqueue(c)
	}
	return nil
}

// closeWith closes like Close with err as the OnClose reason (unless one is already set).
func (c *conn) closeWith(err error) {
	c.mu.Lock()
	if !c.reasonSet {
		c.reasonSet, c.reason = true, err
	}
	c.closed = true
	schedule := !c.busy
	c.busy = true
	c.mu.Unlock()
	if schedule {
		c.w.enqueue(c)
	}
}

func (c *conn) readStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// keep stores the unconsumed tail of the input as c.pending (called under netpoll's
// processing lock). tail may alias c.pending or netpoll's buffer.
func (c *conn) keep(tail []byte) {
	switch {
	case len(tail) == 0:
		c.pending = nil // release the partial-frame buffer
	case len(tail) >= c.e.cfg.MaxFrame:
		c.pending = nil
		c.closeWith(engines.ErrFrameTooLarge)
	case c.pending == nil:
		p := make([]byte, len(tail), max(len(tail), 256))
		copy(p, tail)
		c.pending = p
	case cap(c.pending) > 4*max(len(tail), c.e.set.bufferSize):
		// A large frame was consumed; give its buffer back.
		p := make([]byte, len(tail), max(len(tail), 256))
		copy(p, tail)
		c.pending = p
	default:
		c.pending = c.pending[:copy(c.pending, tail)]
	}
}

// onNetpollClose is the connection's close callback: it runs once, under netpoll's processing
// lock (so never during OnOpen or OnData), before netpoll frees the buffers.
func (c *conn) onNetpollClose(netpoll.Connection) error {
	c.wmu.Lock() // a runner inside the Writer finishes first (netpoll has woken its Flush)
	c.mu.Lock()
	c.sockDone, c.closeSent, c.closed = true, true, true
	c.queue = nil
	reason, set := c.reason, c.reasonSet
	c.mu.Unlock()
	c.wmu.Unlock()
	c.pending = nil
	if !set {
		reason = io.EOF // the peer closed, or the socket failed under netpoll
	}
	if !c.ended.CompareAndSwap(false, true) {
		return nil
	}
	c.e.mu.Lock()
	delete(c.e.conns, c.id)
	c.e.mu.Unlock()
	if c.opened.Load() {
		c.e.h.OnClose(c, reason)
	}
	c.e.live.Done()
	return nil
}

// flush runs on a runner of c's worker while c is busy. It writes what is queued with one Flush;
// if more arrives meanwhile c goes to the back of the worker's queue, unless the runner was
// handed off, in which case it keeps draining c until it is empty. It reports whether r was
// handed off (and must exit).
func (c *conn) flush(r *runner) (handedOff bool) {
	wrote := false
	for {
		c.mu.Lock()
		if c.sockDone || len(c.queue) == 0 {
			c.busy = false
			closeNow := c.closed && !c.closeSent
			c.closeSent = c.closeSent || closeNow
			c.mu.Unlock()
			if closeNow {
				_ = c.nc.Close()
			}
			return handedOff
		}
		if wrote && !handedOff {
			c.mu.Unlock()
			c.w.enqueue(c) // still busy; let the worker's other connections go first
			return false
		}
		bufs := c.queue
		c.queue = nil
		c.mu.Unlock()

		n, err := c.write(bufs, r)
		handedOff = handedOff || r.handedOff()
		wrote = true
		c.mu.Lock()
		c.queued -= n
		c.mu.Unlock()
		if err != nil {
			c.fail(err)
			return handedOff
		}
	}
}

// write moves bufs into netpoll's output buffer and flushes it, under the write lock.
func (c *conn) write(bufs [][]byte, r *runner) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sockDone { // written under wmu
		return 0, netpoll.ErrConnClosed
	}
	wr := c.nc.Writer()
	// A few frames are linked into the output buffer without copying: no buffer node is
	// allocated, and none stays behind as the idle connection's output tail. Many small frames
	// are copied into nodes instead, so that one sendmsg carries many of them.
	direct := len(bufs) <= maxDirect
	n := 0
	for _, b := range bufs {
		var err error
		if direct && len(b) <= netpoll.BinaryInplaceThreshold {
			err = wr.WriteDirect(b, 0)
		} else {
			_, err = wr.WriteBinary(b) // over 4 KiB: linked without copying as well
		}
		if err != nil {
			return n, fmt.Errorf("netpoll: write: %w", err)
		}
		n += len(b)
	}
	r.beginFlush()
	err := wr.Flush()
	r.endFlush()
	return n, err
}

// fail closes c after a failed Flush, with the failure as the OnClose reason unless a non-nil one
// is set (a write timeout also overrides a local Close's nil).
func (c *conn) fail(err error) {
	switch {
	case errors.Is(err, netpoll.ErrWriteTimeout):
		err = engines.ErrWriteTimeout
	case errors.Is(err, netpoll.ErrConnClosed), errors.Is(err, netpoll.ErrEOF):
		err = nil // closed under us: the close callback has or will have the reason
	default:
		err = fmt.Errorf("netpoll: flush: %w", err)
	}
	c.mu.Lock()
	if err != nil && !c.sockDone && c.reason == nil {
		c.reasonSet, c.reason = true, err
	}
	c.closed = true
	c.queue = nil
	closeNow := !c.closeSent
	c.closeSent = true
	c.mu.Unlock()
	if err != nil {
		c.e.log.Debug("write failed; closing", "conn", c.id, "remote", c.remote, "err", err)
	}
	if closeNow {
		_ = c.nc.Close()
	}
}

// abort closes c at once, dropping what is queued (Shutdown past its deadline).
func (c *conn) abort() {
	c.mu.Lock()
	c.closed = true
	if !c.reasonSet {
		c.reasonSet, c.reason = true, nil
	}
	closeNow := !c.closeSent
	c.closeSent = true
	c.mu.Unlock()
	if closeNow {
		_ = c.nc.Close()
	}
}

// worker is one writer of the downlink task group: a queue of connections with something to
// write and one active runner goroutine draining it (plus handed-off runners finishing one slow
// connection each).
type worker struct {
	e    *engine
	mu   sync.Mutex
	q    []*conn
	head int
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

func (w *worker) pop() *conn {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.head == len(w.q) {
		w.q, w.head = w.q[:0], 0
		return nil
	}
	c := w.q[w.head]
	w.q[w.head] = nil
	w.head++
	if w.head > 1024 && w.head > len(w.q)/2 { // compact under sustained load
		n := copy(w.q, w.q[w.head:])
		clear(w.q[n:])
		w.q, w.head = w.q[:n], 0
	}
	return c
}

// spawn starts a new active runner. The caller holds a count in e.writers (or is Start).
func (w *worker) spawn() {
	r := &runner{w: w}
	r.timer = time.AfterFunc(time.Hour, r.slow)
	r.timer.Stop()
	w.e.writers.Add(1)
	go w.run(r)
}

func (w *worker) run(r *runner) {
	defer w.e.writers.Done()
	defer r.timer.Stop()
	for {
		c := w.pop()
		if c == nil {
			select {
			case <-w.wake:
				continue
			case <-w.quit:
				return
			}
		}
		if c.flush(r) {
			return // handed off: another runner serves w now
		}
	}
}

// runner is one goroutine draining a worker. A Flush that outlasts the hand-off delay detaches
// the runner from the worker (slow) and a new runner takes over.
type runner struct {
	w     *worker
	state atomic.Int32 // runnerIdle, runnerFlushing, runnerHandedOff
	timer *time.Timer
}

const (
	runnerIdle int32 = iota
	runnerFlushing
	runnerHandedOff
)

func (r *runner) beginFlush() {
	if r.state.CompareAndSwap(runnerIdle, runnerFlushing) {
		r.timer.Reset(r.w.e.handoff)
	}
}

func (r *runner) endFlush() {
	if r.state.CompareAndSwap(runnerFlushing, runnerIdle) {
		r.timer.Stop()
	}
}

func (r *runner) handedOff() bool { return r.state.Load() == runnerHandedOff }

// slow runs on the timer's goroutine while r is (still) in Flush: hand the worker to a new
// runner. r holds its e.writers count until it exits, so the Add in spawn is safe.
func (r *runner) slow() {
	if r.state.CompareAndSwap(runnerFlushing, runnerHandedOff) {
		r.w.spawn()
	}
}

// listener is the netpoll.Listener the engine gives netpoll (see the package comment).
type listener struct {
	tl     *net.TCPListener
	raw    syscall.RawConn
	fd     int
	addr   net.Addr
	e      *engine
	closed atomic.Bool
}

var _ netpoll.Listener = (*listener)(nil)

func listen(addr string, e *engine) (*listener, error) {
	lc := net.ListenConfig{Control: reuseAddr}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("netpoll: listen %s: %w", addr, err)
	}
	tl := ln.(*net.TCPListener)
	raw, err := tl.SyscallConn()
	if err != nil {
		_ = tl.Close()
		return nil, fmt.Errorf("netpoll: listen %s: %w", addr, err)
	}
	l := &listener{tl: tl, raw: raw, addr: tl.Addr(), e: e, fd: -1}
	if err := raw.Control(func(fd uintptr) { l.fd = int(fd) }); err != nil {
		_ = tl.Close()
		return nil, fmt.Errorf("netpoll: listen %s: %w", addr, err)
	}
	return l, nil
}

func reuseAddr(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// Accept is called by netpoll's poller when the listening socket is readable. (nil, nil) means
// "nothing more now"; it is also the answer once the listener is closed, which ends netpoll's
// out-of-descriptors retry loop instead of leaving it spinning.
func (l *listener) Accept() (net.Conn, error) {
	for {
		if l.closed.Load() {
			return nil, nil
		}
		fd, sa, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
		case err == unix.EINTR || err == unix.ECONNABORTED:
			continue
		case err == unix.EAGAIN:
			return nil, nil
		case err == unix.EINVAL && l.e.isClosing():
			return nil, nil // shut down by stopAccepting
		default:
			return nil, err // EMFILE and ENFILE: netpoll backs off and retries
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		return &acceptedFD{fd: fd, local: l.addr, remote: sockaddrToTCP(sa)}, nil
	}
}

func (e *engine) isClosing() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closing
}

// stopAccepting makes the listening socket stop listening (shutdown(2) on a listening socket
// drops it out of LISTEN) without closing the descriptor netpoll still watches; netpoll sees the
// hang-up and detaches it.
func (l *listener) stopAccepting() {
	err := l.raw.Control(func(fd uintptr) { _ = unix.Shutdown(int(fd), unix.SHUT_RD) })
	if err != nil {
		l.e.log.Debug("stop accepting", "err", err)
	}
}

// Close closes the listening socket (once).
func (l *listener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	return l.tl.Close()
}

func (l *listener) Addr() net.Addr { return l.addr }
func (l *listener) Fd() int        { return l.fd }

// acceptedFD carries an accepted socket to netpoll, which takes its descriptor and addresses and
// owns it from then on; the net.Conn methods are never used.
type acceptedFD struct {
	fd            int
	local, remote net.Addr
}

func (a *acceptedFD) Fd() int                          { return a.fd }
func (a *acceptedFD) LocalAddr() net.Addr              { return a.local }
func (a *acceptedFD) RemoteAddr() net.Addr             { return a.remote }
func (a *acceptedFD) Read([]byte) (int, error)         { return 0, errHandedOff }
func (a *acceptedFD) Write([]byte) (int, error)        { return 0, errHandedOff }
func (a *acceptedFD) Close() error                     { return nil }
func (a *acceptedFD) SetDeadline(time.Time) error      { return errHandedOff }
func (a *acceptedFD) SetReadDeadline(time.Time) error  { return errHandedOff }
func (a *acceptedFD) SetWriteDeadline(time.Time) error { return errHandedOff }

func sockaddrToTCP(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
	case *unix.SockaddrInet6:
		var zone string
		if sa.ZoneId != 0 {
			zone = strconv.Itoa(int(sa.ZoneId))
		}
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port, Zone: zone}
	}
	return &net.TCPAddr{}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
