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
// and calls Flush: a batch of up to 8 buffers is linked in without copying (Writer.WriteDirect),
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
// buffer_size (netpoll's initial read buffer and smallest buffer node, default 1024), pollers
// (netpoll's epoll loops, 0 for netpoll's default GOMAXPROCS/20+1) and handoff (how long a worker
// waits on one Flush before handing it off, default 2ms, at most Config.WriteTimeout), declared
// with their types, ranges and help in Options; engines.New validates them and rejects any other
// key.
//
// # Listener
//
// The engine gives netpoll its own Listener over the socket it bound (SO_REUSEADDR, accept4 with
// SOCK_NONBLOCK|SOCK_CLOEXEC, TCP_NODELAY; past Config.MaxConns an accepted socket gets
// Config.RefuseMessage and is closed there, before netpoll or the handler sees it; EMFILE goes
// back to netpoll, whose accept loop backs off), instead of netpoll.ConvertListener, which dups the
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
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/internal/kit"
)

// Name is the registered engine name.
const Name = "netpoll"

// Option keys.
const (
	OptBufferSize = "buffer_size"
	OptPollers    = "pollers"
	OptHandoff    = "handoff"
)

// Options are the netpoll engine's options.
var Options = []engines.Option{
	{Key: OptBufferSize, Type: engines.OptInt, Default: "1024", Min: "64", Max: "1048576",
		Help: "bytes: netpoll's initial read buffer and smallest buffer node (netpoll's own default is 8192); process-wide, set by the first engine to start"},
	{Key: OptPollers, Type: engines.OptInt, Default: "0", Min: "0", Max: "1024",
		Help: "netpoll epoll loops, 0 for netpoll's default (GOMAXPROCS/20+1); process-wide, set by the first engine to start"},
	{Key: OptHandoff, Type: engines.OptDuration, Default: "2ms", Min: "10us", Max: "1m",
		Help: "how long a writer worker waits on one Flush before a fresh goroutine takes over its other connections (at most Config.WriteTimeout)"},
}

func init() { engines.Register(Name, newEngine, Options...) }

// maxDirect is the largest batch of queued buffers that write links into netpoll's output buffer
// without copying.
const maxDirect = 8

var errHandedOff = errors.New("netpoll: accepted socket is owned by netpoll")

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
	kit.Base
	group *kit.Group
	set   settings

	ln      *listener
	evl     netpoll.EventLoop
	served  chan struct{} // closed when EventLoop.Serve returns
	started bool
	nextID  atomic.Uint64

	mu       sync.Mutex
	closing  bool
	conns    map[uint64]*conn
	live     sync.WaitGroup // one per registered conn, done after its OnClose
	shutOnce sync.Once
}

// newEngine builds a netpoll engine; engines.New has validated the options.
func newEngine(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	e := &engine{
		Base:   kit.NewBase(Name, cfg, h),
		set:    settings{bufferSize: kit.Int(cfg, OptBufferSize), pollers: kit.Int(cfg, OptPollers)},
		conns:  make(map[uint64]*conn),
		served: make(chan struct{}),
	}
	e.group = kit.NewGroup(kit.Workers(cfg), min(kit.Duration(cfg, OptHandoff), cfg.WriteTimeout))
	return e, nil
}

func (e *engine) Addr() net.Addr {
	if e.ln == nil {
		return nil
	}
	return e.ln.addr
}

// Start binds cfg.Addr and serves in the background. It returns once netpoll watches the
// listener, so that a Shutdown right after it finds netpoll's server to stop.
func (e *engine) Start() error {
	if e.started {
		return errors.New("netpoll: engine already started")
	}
	if err := configure(e.set, e.Log); err != nil {
		return err
	}
	ln, err := listen(e.Cfg.Addr, e)
	if err != nil {
		return err
	}
	evl, err := netpoll.NewEventLoop(e.onRequest,
		netpoll.WithOnPrepare(e.onPrepare),
		netpoll.WithOnConnect(e.onConnect),
		netpoll.WithWriteTimeout(e.Cfg.WriteTimeout),
	)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("netpoll: event loop: %w", err)
	}
	e.ln, e.evl, e.started = ln, evl, true
	e.group.Start()
	serveErr := make(chan error, 1)
	go func() {
		defer close(e.served)
		err := evl.Serve(ln)
		serveErr <- err
		e.mu.Lock()
		closing := e.closing
		e.mu.Unlock()
		if err != nil && !closing {
			e.Log.Error("netpoll stopped serving", "err", err)
		}
	}()
	select {
	case <-ln.registered:
		return nil
	case err := <-serveErr:
		e.group.Stop()
		_ = ln.Close()
		return fmt.Errorf("netpoll: serve %s: %w", e.Cfg.Addr, err)
	}
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
	err := kit.WaitOr(ctx, e.live.Wait, func() {
		for _, c := range all {
			c.abort()
		}
	})
	// netpoll reacts to stopAccepting by detaching the listener and ending Serve. Wait for that
	// before the listening descriptor is closed: under the race detector netpoll finds a
	// descriptor's operator by number, so a hang-up still queued for this one would hit
	// whatever socket reuses the number next (another engine's listener, say). The hang-up is
	// netpoll's to deliver; the bound keeps a lost one from holding Shutdown.
	hup := time.NewTimer(time.Second)
	select {
	case <-e.served:
	case <-ctx.Done():
	case <-hup.C:
	}
	hup.Stop()
	// Every connection is gone, so the event loop's Shutdown only detaches and closes the
	// listener (Start returned after Serve registered it, so Shutdown finds it), and Serve
	// returns if the hang-up has not ended it already.
	if serr := e.evl.Shutdown(ctx); serr != nil {
		e.Log.Warn("netpoll event loop shutdown", "err", serr)
	}
	<-e.served
	e.group.Stop()
	return err
}

// onPrepare runs on the accept path before netpoll watches the socket: it creates the conn and
// registers its close callback (netpoll runs close callbacks newest first, so this one runs
// before netpoll's own, which frees the buffers and closes the descriptor). The listener has
// admitted the connection under the cap.
func (e *engine) onPrepare(nc netpoll.Connection) context.Context {
	e.mu.Lock()
	if e.closing {
		e.mu.Unlock()
		e.Gate.Leave()
		return context.Background() // not a *conn: onConnect closes it
	}
	id := e.nextID.Add(1)
	c := &conn{
		baseContext: context.Background(),
		Ident:       kit.MakeIdent(id, addrString(nc.RemoteAddr())),
		e:           e,
		w:           e.group.For(id),
		nc:          nc,
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
	e.Rd.H.OnOpen(c)
	return ctx
}

// onRequest takes everything netpoll has buffered and offers it to the handler through the kit's
// Reader; see the package comment.
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
	if err := e.Rd.Feed(c, &c.in, in, c.readStopped); err != nil {
		e.Rd.Release(&c.in)
		c.closeWith(err)
	}
	// Next's bytes die here; what the handler left is in c.in.
	_ = r.Release()
	return nil
}

// baseContext names the context.Context embedded in conn (conn has its own Context method).
type baseContext = context.Context

// A connection is also a writer's task, and writes a frame's head and a shared tail as one unit.
var _ interface {
	kit.Task
	engines.FrameWriter
} = (*conn)(nil)

// conn is one connection. Lock order: wmu, then Mu, then the worker's.
type conn struct {
	// The conn is itself the context netpoll hands back to OnConnect and OnRequest, so it
	// needs no separate allocation.
	baseContext
	kit.Ident

	e      *engine
	w      *kit.Worker
	nc     netpoll.Connection
	opened atomic.Bool // OnOpen was called: OnClose is owed
	ended  atomic.Bool // OnClose was called

	// in is the unconsumed input: only touched under netpoll's processing lock.
	in kit.Input

	// wmu is held while using nc's Writer, and by the close callback before netpoll frees it.
	wmu sync.Mutex

	// Outbox: the queue, Busy (a runner owns the write side) and Closed (Close, a handler error
	// or a failure: no more Writes or reads), under Mu with the fields below.
	kit.Outbox
	reasonSet bool // reason below is final (nil for a local Close)
	reason    error
	closeSent bool // nc.Close was called (or netpoll closed it)
	sockDone  bool // the close callback ran: nc's buffers are gone
}

// Write queues b; see engines.Conn.
func (c *conn) Write(b []byte) error { return c.write(b, nil) }

// WriteFrame implements engines.FrameWriter: head and tail are queued as one unit without
// copying, and linked into netpoll's output buffer like any other queued frame (see write).
func (c *conn) WriteFrame(head, tail []byte) error { return c.write(head, tail) }

func (c *conn) write(a, b []byte) error {
	wake, err := c.Push(a, b, c.e.Cfg.MaxWriteQueue)
	if wake {
		c.w.Enqueue(c)
	}
	return err
}

// Close stops reading at once; the worker flushes what is queued and then closes the socket.
// OnClose follows, never on the caller's goroutine.
func (c *conn) Close() error {
	c.closeWith(nil)
	return nil
}

// closeWith closes like Close with err as the OnClose reason (unless one is already set).
func (c *conn) closeWith(err error) {
	c.Mu.Lock()
	if c.Closed && err == nil {
		c.Mu.Unlock()
		return
	}
	if !c.reasonSet {
		c.reasonSet, c.reason = true, err
	}
	c.Closed = true
	schedule := !c.Busy
	c.Busy = true
	c.Mu.Unlock()
	if schedule {
		c.w.Enqueue(c)
	}
}

func (c *conn) readStopped() bool {
	c.Mu.Lock()
	defer c.Mu.Unlock()
	return c.Closed
}

// onNetpollClose is the connection's close callback: it runs once, under netpoll's processing
// lock (so never during OnOpen or OnData), before netpoll frees the buffers.
func (c *conn) onNetpollClose(netpoll.Connection) error {
	c.wmu.Lock() // a runner inside the Writer finishes first (netpoll has woken its Flush)
	c.Mu.Lock()
	c.sockDone, c.closeSent, c.Closed = true, true, true
	c.Q.Drop()
	reason, set := c.reason, c.reasonSet
	c.Mu.Unlock()
	c.wmu.Unlock()
	c.e.Rd.Release(&c.in)
	if !set {
		reason = io.EOF // the peer closed, or the socket failed under netpoll
	}
	if !c.ended.CompareAndSwap(false, true) {
		return nil
	}
	c.e.Gate.Leave()
	c.e.mu.Lock()
	delete(c.e.conns, c.ID())
	c.e.mu.Unlock()
	if c.opened.Load() {
		c.e.Rd.H.OnClose(c, reason)
	}
	c.e.live.Done()
	return nil
}

// Run is the kit.Task, on a runner of c's worker while c is busy. It writes what is queued with
// one Flush; if more arrives meanwhile c goes to the back of the worker's queue, unless the
// runner was handed off, in which case it keeps draining c until it is empty (and then exits).
func (c *conn) Run(r *kit.Runner) {
	wrote := false
	for {
		c.Mu.Lock()
		if c.sockDone || c.Q.Empty() {
			c.Busy = false
			closeNow := c.Closed && !c.closeSent
			c.closeSent = c.closeSent || closeNow
			c.Mu.Unlock()
			if closeNow {
				_ = c.nc.Close()
			}
			return
		}
		if wrote && !r.HandedOff() {
			c.Mu.Unlock()
			c.w.Enqueue(c) // still busy; let the worker's other connections go first
			return
		}
		bufs := c.Q.Take()
		c.Mu.Unlock()

		n, err := c.flush(bufs, r)
		wrote = true
		c.Q.Written(n)
		if err != nil {
			c.fail(err)
			return
		}
	}
}

// flush moves bufs into netpoll's output buffer and flushes it, under the write lock.
func (c *conn) flush(bufs [][]byte, r *kit.Runner) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.sockDone { // written under wmu
		return 0, netpoll.ErrConnClosed
	}
	wr := c.nc.Writer()
	// A few buffers are linked into the output buffer without copying: no buffer node is
	// allocated, and none stays behind as the idle connection's output tail. Many small ones
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
	r.Begin()
	err := wr.Flush()
	r.End()
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
	c.Mu.Lock()
	if err != nil && !c.sockDone && c.reason == nil {
		c.reasonSet, c.reason = true, err
	}
	c.Closed = true
	c.Q.Drop()
	closeNow := !c.closeSent
	c.closeSent = true
	c.Mu.Unlock()
	if err != nil {
		c.e.Log.Debug("write failed; closing", "conn", c.ID(), "remote", c.RemoteAddr(), "err", err)
	}
	if closeNow {
		_ = c.nc.Close()
	}
}

// abort closes c at once, dropping what is queued (Shutdown past its deadline).
func (c *conn) abort() {
	c.Mu.Lock()
	c.Closed = true
	if !c.reasonSet {
		c.reasonSet, c.reason = true, nil
	}
	closeNow := !c.closeSent
	c.closeSent = true
	c.Mu.Unlock()
	if closeNow {
		_ = c.nc.Close()
	}
}

// listener is the netpoll.Listener the engine gives netpoll (see the package comment).
type listener struct {
	tl         *net.TCPListener
	raw        syscall.RawConn
	fd         int
	addr       net.Addr
	e          *engine
	closed     atomic.Bool
	registered chan struct{} // closed when netpoll first asks for Fd: its server is set
	regOnce    sync.Once
}

var _ netpoll.Listener = (*listener)(nil)

func listen(addr string, e *engine) (*listener, error) {
	tl, err := kit.Listen(addr)
	if err != nil {
		return nil, fmt.Errorf("netpoll: listen %s: %w", addr, err)
	}
	raw, err := tl.SyscallConn()
	if err != nil {
		_ = tl.Close()
		return nil, fmt.Errorf("netpoll: listen %s: %w", addr, err)
	}
	l := &listener{tl: tl, raw: raw, addr: tl.Addr(), e: e, fd: -1, registered: make(chan struct{})}
	if err := raw.Control(func(fd uintptr) { l.fd = int(fd) }); err != nil {
		_ = tl.Close()
		return nil, fmt.Errorf("netpoll: listen %s: %w", addr, err)
	}
	return l, nil
}

// Accept is called by netpoll's poller when the listening socket is readable. (nil, nil) means
// "nothing more now"; it is also the answer once the listener is closed, which ends netpoll's
// out-of-descriptors retry loop instead of leaving it spinning. A connection past the cap is
// refused here, before netpoll or the handler sees it.
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
		if !l.e.Gate.Admit() {
			l.e.Gate.RefuseFD(fd)
			continue
		}
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		return &acceptedFD{fd: fd, local: l.addr, remote: kit.SockaddrToAddr(sa)}, nil
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
		l.e.Log.Debug("stop accepting", "err", err)
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

// Fd is first called by netpoll's server when Serve registers it, with the event loop's lock
// held: once it has been called, EventLoop.Shutdown finds the server.
func (l *listener) Fd() int {
	l.regOnce.Do(func() { close(l.registered) })
	return l.fd
}

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

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}
