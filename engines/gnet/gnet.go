// Package gnetengine is the gnet v2 engine: a few event loops (epoll) serve every connection, with
// no goroutine per connection.
//
// Reads: gnet calls OnTraffic on the connection's event loop; the engine offers everything
// buffered (Peek(-1)) to the handler through the kit's Reader (at most MaxFrame bytes at a time,
// the consumed count checked) and discards only what it consumed. A partial frame stays in gnet's own inbound buffer, up to 16 KiB: past that it moves
// to a buffer of the engine's own until the handler has consumed it (see spillAt), because gnet
// would copy all of it into one slice again on every read. When the handler consumes nothing of
// MaxFrame bytes the connection is closed with engines.ErrFrameTooLarge.
//
// Writes: Conn.Write appends the caller's buffer (never copied, never modified) to the
// connection's batch and, unless one is already queued, queues a flush on the connection's event
// loop with gnet's AsyncWritev (an empty one: its callback does the work, on the loop, in the
// order of the high-priority queue). The flush hands the whole batch to gnet in one writev: frames
// that reach a connection before its loop gets to it cost one system call together, which is what
// lets sustained push traffic beat one write per frame. gnet writes what the socket takes and
// copies the rest into its outbound buffer, which gnet does not bound. The engine bounds a
// connection's queue itself: the bytes written and not yet flushed (an atomic counter, decremented
// in the AsyncWritev callback) plus the loop's last reading of gnet's outbound buffer. That reading
// is refreshed after every flush, on every tick for connections with output pending, and on demand
// when a Write is refused, so a refusal can be up to one tick stale for a peer that has just
// caught up. A connection whose pending output makes no progress for Config.WriteTimeout is
// closed with engines.ErrWriteTimeout, abortively (RST: the kernel drops what the peer never
// took); the check runs on gnet's ticker over only the connections with output pending (no timer
// per connection).
//
// Close (or a handler error, or an oversized frame) refuses further Writes at once, stops
// delivering input as soon as the event loop takes it, lets the loop write what was queued before
// it, and closes the socket when that is written or the write timeout passes.
//
// Options: write_buffer_cap, tcp_keepalive, tick, load_balancing and lock_os_thread, declared
// with their types, defaults and help in Options (engines.New validates them; docs/engines.md
// has the table).
//
// The connection cap (Config.MaxConns) is checked in OnOpen: a connection past it is refused by
// returning Config.RefuseMessage with gnet.Close (gnet writes it without waiting and closes the
// socket), before the handler sees it.
//
// Config.ReadBufferSize is the size of each read (gnet rounds it up to a power of two, at least
// 1 KiB); the buffer belongs to the event loop, not to a connection.
//
// Traps (see also ENGINE-NOTES.md):
//   - gnet's Discard(0) or a negative count discards everything buffered: the engine only
//     discards a positive count.
//   - gnet shuts the whole engine down when accept fails with anything but EAGAIN, EINTR,
//     ECONNRESET or ECONNABORTED, notably EMFILE at the open-files limit: every connection is
//     closed (OnClose gets ErrStopped). The engine logs it at error level and starts gnet again on
//     the same address after a backoff (the kit's Backoff, 100ms to 5s). The connection cap keeps
//     client connections under the open-files limit (the gateway's default --max-conns leaves a
//     reserve of descriptors), so the limit is not reached by accepts; the engine keeps serving
//     its open connections at the cap and refuses new ones (conformance's TestMaxConns).
//   - Peek(-1) returns one contiguous slice: while a partial frame waits, gnet copies everything
//     buffered into it on every read, quadratic for a large frame arriving in many reads. The
//     engine bounds this at 16 KiB per read (spillAt). The handler still rescans a growing
//     partial frame once per read: with large frames, a larger Config.ReadBufferSize (a buffer
//     per event loop here, not per connection) means fewer reads.
//
// Registered as "gnet".
package gnetengine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/panjf2000/gnet/v2"
	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/internal/kit"
)

// Name is the registered engine name.
const Name = "gnet"

// Options are the gnet engine's options.
var Options = []engines.Option{
	{Key: "write_buffer_cap", Type: engines.OptInt, Default: "16384", Min: "1",
		Help: "bytes of gnet's per-connection outbound ring before it spills into a list of copies (the ring is pooled: idle connections hold none)"},
	{Key: "tcp_keepalive", Type: engines.OptDuration, Default: "0s", Min: "0s",
		Help: "TCP keepalive period, 0 for off"},
	{Key: "tick", Type: engines.OptDuration, Default: "100ms", Min: "1ns",
		Help: "how often connections with output pending are checked for the write timeout (at least 10ms, at most WriteTimeout/5)"},
	{Key: "load_balancing", Type: engines.OptEnum, Default: "round_robin",
		Values: []string{"round_robin", "least_connections", "source_addr_hash"},
		Help:   "how gnet spreads new connections over its event loops"},
	{Key: "lock_os_thread", Type: engines.OptBool, Default: "false",
		Help: "lock each event loop to an OS thread"},
}

func init() { engines.Register(Name, newEngine, Options...) }

// ErrStopped is the OnClose reason when gnet stopped without Shutdown (see the package comment).
var ErrStopped = errors.New("gnetengine: gnet stopped on its own (accept failed: out of file descriptors?)")

// minTick is the shortest slow-consumer check period.
const minTick = 10 * time.Millisecond

type engine struct {
	kit.Base
	opts []gnet.Option
	tick time.Duration

	nextID   atomic.Uint64
	started  atomic.Bool
	stopping atomic.Bool
	booted   atomic.Bool

	ready    chan struct{} // closed at the first tick: the event loops run
	stopCh   chan struct{} // closed by Shutdown
	stopOnce sync.Once
	runDone  chan struct{} // closed when the run goroutine ends
	runErr   error         // gnet.Run's result, set before runDone closes
	addr     net.Addr      // set in the first OnBoot, before ready closes
	bootErr  error         // set in the first OnBoot, before ready closes

	mu    sync.Mutex
	loops map[gnet.EventLoop]*loopState
}

// newEngine builds a gnet engine; engines.New has validated the options.
func newEngine(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	e := &engine{
		Base:    kit.NewBase(Name, cfg, h),
		ready:   make(chan struct{}),
		stopCh:  make(chan struct{}),
		runDone: make(chan struct{}),
		loops:   make(map[gnet.EventLoop]*loopState),
	}
	loops := cfg.Workers
	if loops <= 0 {
		loops = runtime.GOMAXPROCS(0)
	}
	lb := map[string]gnet.LoadBalancing{
		"round_robin": gnet.RoundRobin, "least_connections": gnet.LeastConnections, "source_addr_hash": gnet.SourceAddrHash,
	}[cfg.Options["load_balancing"]]
	e.tick = max(min(kit.Duration(cfg, "tick"), cfg.WriteTimeout/5), minTick)
	e.opts = []gnet.Option{
		gnet.WithMulticore(true),
		gnet.WithNumEventLoop(loops),
		gnet.WithReuseAddr(true),
		gnet.WithReadBufferCap(cfg.ReadBufferSize),
		gnet.WithWriteBufferCap(kit.Int(cfg, "write_buffer_cap")),
		gnet.WithTicker(true),
		gnet.WithLoadBalancing(lb),
		gnet.WithLockOSThread(kit.Bool(cfg, "lock_os_thread")),
		gnet.WithLogger(gnetLogger{e.Log}),
	}
	if keepAlive := kit.Duration(cfg, "tcp_keepalive"); keepAlive > 0 {
		e.opts = append(e.opts, gnet.WithTCPKeepAlive(keepAlive))
	}
	return e, nil
}

// Addr is the bound listen address once Start has returned without error.
func (e *engine) Addr() net.Addr {
	if !e.booted.Load() {
		return nil
	}
	return e.addr
}

// Start binds the listener and returns when the event loops run.
func (e *engine) Start() error {
	if !e.started.CompareAndSwap(false, true) {
		return errors.New("gnetengine: already started")
	}
	go e.run()
	select {
	case <-e.ready:
		if e.bootErr != nil {
			e.stopping.Store(true)
			<-e.runDone
			return e.bootErr
		}
		e.booted.Store(true)
		return nil
	case <-e.runDone:
		if e.runErr != nil {
			return fmt.Errorf("gnetengine: listen %s: %w", e.Cfg.Addr, e.runErr)
		}
		if e.bootErr != nil {
			return e.bootErr
		}
		return fmt.Errorf("gnetengine: listen %s: gnet stopped before serving", e.Cfg.Addr)
	}
}

// run runs gnet until Shutdown. gnet shuts itself down when accept fails with anything but
// EAGAIN, EINTR, ECONNRESET or ECONNABORTED (notably EMFILE at the open-files limit), closing
// every connection (OnClose gets ErrStopped); run then starts it again on the same address, with
// a backoff, so the process does not go on without a listener.
func (e *engine) run() {
	defer close(e.runDone)
	addr := "tcp://" + e.Cfg.Addr
	backoff := kit.Backoff{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	for {
		err := gnet.Run(eventHandler{e}, addr, e.opts...)
		select {
		case <-e.ready:
		default:
			e.runErr = err // it never served: Start reports it
			return
		}
		if e.stopping.Load() {
			if err != nil {
				e.Log.Error("gnet stopped with an error", "err", err)
			}
			return
		}
		e.Log.Error("gnet stopped without Shutdown (accept failed: out of file descriptors?); restarting",
			"addr", e.addr, "err", err)
		if !backoff.Wait(e.stopCh) {
			return
		}
		addr = "tcp://" + e.addr.String() // the same port, also when the configured one was 0
		e.mu.Lock()
		e.loops = make(map[gnet.EventLoop]*loopState) // the old loops are gone
		e.mu.Unlock()
	}
}

// Shutdown stops accepting and closes every connection (each gets its OnClose, after gnet has
// tried to write what it holds without waiting), then waits for gnet's goroutines. It takes up to
// one tick to begin.
func (e *engine) Shutdown(ctx context.Context) error {
	if !e.started.Load() {
		return nil
	}
	e.stopping.Store(true)
	e.stopOnce.Do(func() { close(e.stopCh) })
	select {
	case <-e.runDone:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loopState is the engine's view of one gnet event loop.
type loopState struct {
	e  *engine
	el gnet.EventLoop
	// busy holds the loop's connections with output pending or a close waiting for it, with
	// their progress. Only the loop touches it.
	busy       map[*conn]struct{}
	nbusy      atomic.Int32 // len(busy), for the ticker
	scanQueued atomic.Bool
	scanFn     gnet.RunnableFunc
}

func (e *engine) loopFor(el gnet.EventLoop) *loopState {
	e.mu.Lock()
	defer e.mu.Unlock()
	ls := e.loops[el]
	if ls == nil {
		ls = &loopState{e: e, el: el, busy: make(map[*conn]struct{})}
		ls.scanFn = func(context.Context) error {
			ls.scanQueued.Store(false)
			now := time.Now().UnixNano()
			for c := range ls.busy {
				c.check(now)
			}
			return nil
		}
		e.loops[el] = ls
	}
	return ls
}

func (ls *loopState) add(c *conn) {
	ls.busy[c] = struct{}{}
	ls.nbusy.Store(int32(len(ls.busy)))
}

func (ls *loopState) remove(c *conn) {
	delete(ls.busy, c)
	ls.nbusy.Store(int32(len(ls.busy)))
}

// extra is the loop's state of a connection that has output pending or is being closed by the
// engine; idle connections (most of them) carry none. Only the loop touches it.
type extra struct {
	in       kit.Input // a large partial frame, moved out of gnet's buffer (see spillAt)
	reason   error     // why the engine closes the connection
	inBusy   bool      // in ls.busy: output pending or a close waiting for it
	handed   int64     // bytes gnet took (written or buffered) since it became busy, plus the outbound buffer then
	lastSent int64     // handed minus outbound at the last progress
	lastTime int64     // unix nanoseconds of the last progress
}

// conn is one connection. Fields marked "loop" are only touched on the connection's event loop.
// (Field order keeps the struct in a small size class: most connections are idle.)
type conn struct {
	kit.Ident
	gc gnet.Conn
	ls *loopState

	outbound atomic.Int64 // gnet's outbound buffer as last read on the loop

	mu sync.Mutex
	// q (under mu) holds the frames written since the flush task last ran, and counts the bytes
	// queued by Write and not yet taken by gnet.
	q kit.Queue

	x *extra // loop: allocated when output is pending or the engine closes it

	refreshQueued atomic.Bool
	closed        bool // mu: no more Writes; after OnClose the gnet.Conn is never touched again
	flushQueued   bool // mu: a flush task is queued on the loop
	gone          bool // loop: OnClose happened
	closeReq      bool // loop: close once the output is written
}

var _ engines.FrameWriter = (*conn)(nil)

// Write adds b to the connection's batch and, unless one is already queued, queues a flush task
// on the event loop with gnet's AsyncWritev (high priority, ahead of a later Close). Frames
// written while the task waits join it, so a connection that receives several frames before its
// loop gets to it costs one writev, not one write per frame. It never blocks on the peer.
func (c *conn) Write(b []byte) error { return c.queue(b, nil) }

// WriteFrame implements engines.FrameWriter: head and tail join the batch together, both uncopied,
// so a fan-out shares one encoded tail across every connection.
func (c *conn) WriteFrame(head, tail []byte) error { return c.queue(head, tail) }

// queue adds a, then b (if not empty), to the batch as one unit under the queue bound.
func (c *conn) queue(a, b []byte) error {
	n := len(a) + len(b)
	if n == 0 {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return engines.ErrClosed
	}
	out := c.outbound.Load()
	if err := c.q.Check(n, c.ls.e.Cfg.MaxWriteQueue, out); err != nil {
		if errors.Is(err, engines.ErrQueueFull) && out > 0 && c.refreshQueued.CompareAndSwap(false, true) {
			// The outbound reading may be stale: have the loop refresh it for the next Write.
			if err := c.gc.EventLoop().Execute(context.Background(), gnet.RunnableFunc(c.refresh)); err != nil {
				c.refreshQueued.Store(false)
			}
		}
		return err
	}
	if !c.flushQueued {
		// An empty AsyncWritev writes nothing; it runs c.flush on the loop in write order.
		if err := c.gc.AsyncWritev(nil, c.flush); err != nil {
			return fmt.Errorf("%w: %w", engines.ErrClosed, err)
		}
		c.flushQueued = true
	}
	c.q.Append(a, b)
	return nil
}

// maxIov bounds one writev (IOV_MAX is 1024 on Linux; gnet passes larger batches on as they are).
const maxIov = 1024

// flush is the AsyncWritev callback: on the loop, it hands the batch to gnet, which writes what
// the socket takes and copies the rest into its outbound buffer. err is non-nil when gnet had
// already closed the connection.
func (c *conn) flush(_ gnet.Conn, err error) error {
	c.mu.Lock()
	batch := c.q.Take()
	c.flushQueued = false
	c.mu.Unlock()
	total := 0
	for _, b := range batch {
		total += len(b)
	}
	if c.gone || err != nil {
		c.q.Written(total)
		return nil //nolint:nilerr // gnet had closed the connection: nothing to write, OnClose reports why
	}
	for len(batch) > 0 {
		chunk := batch[:min(len(batch), maxIov)]
		batch = batch[len(chunk):]
		if _, err := c.gc.Writev(chunk); err != nil || c.gone {
			c.q.Written(total)
			return nil //nolint:nilerr // gnet has closed the connection (OnClose ran and has the reason)
		}
	}
	if c.busy() {
		c.x.handed += int64(total)
	}
	out := int64(c.gc.OutboundBuffered())
	c.outbound.Store(out)
	c.q.Written(total)
	if out > 0 || c.busy() || c.closeReq {
		c.check(time.Now().UnixNano())
	}
	return nil
}

func (c *conn) refresh(context.Context) error {
	c.refreshQueued.Store(false)
	if !c.gone {
		c.check(time.Now().UnixNano())
	}
	return nil
}

// check runs on the loop: it refreshes the outbound reading, tracks progress, finishes a waiting
// close when the output is written, and closes a connection that made no progress for WriteTimeout.
func (c *conn) check(now int64) {
	if c.gone {
		return
	}
	out := int64(c.gc.OutboundBuffered())
	c.outbound.Store(out)
	idle := out == 0 && c.q.Queued() == 0
	if !c.busy() {
		if idle {
			if c.closeReq {
				c.closeNow()
			}
			return
		}
		x := c.extra()
		x.inBusy, x.handed, x.lastSent, x.lastTime = true, out, 0, now
		c.ls.add(c)
		return
	}
	x := c.x
	if sent := x.handed - out; sent != x.lastSent {
		x.lastSent, x.lastTime = sent, now
	}
	switch {
	case idle:
		x.inBusy = false
		c.ls.remove(c)
		c.tidyExtra()
		if c.closeReq {
			c.closeNow()
		}
	case out > 0 && time.Duration(now-x.lastTime) >= c.ls.e.Cfg.WriteTimeout:
		c.ls.e.Log.Debug("slow consumer; closing", "conn", c.ID(), "remote", c.RemoteAddr(), "queued", out)
		c.setReason(engines.ErrWriteTimeout)
		// Abortive close (RST): what the peer has not taken in WriteTimeout is dropped now
		// instead of lingering in the kernel's send queue (up to several MB) of an orphan socket.
		if err := c.gc.SetLinger(0); err != nil {
			c.ls.e.Log.Debug("set linger failed", "conn", c.ID(), "err", err)
		}
		c.closeNow()
	}
}

func (c *conn) busy() bool { return c.x != nil && c.x.inBusy }

// tidyExtra drops c.x when it holds nothing.
func (c *conn) tidyExtra() {
	if x := c.x; x != nil && !x.inBusy && x.reason == nil && x.in.Pending() == 0 {
		c.x = nil
	}
}

func (c *conn) extra() *extra {
	if c.x == nil {
		c.x = &extra{}
	}
	return c.x
}

// setReason records why the engine closes c, unless a reason is already set.
func (c *conn) setReason(err error) {
	if x := c.extra(); x.reason == nil {
		x.reason = err
	}
}

func (c *conn) reason() error {
	if c.x == nil {
		return nil
	}
	return c.x.reason
}

// closeNow closes the socket on the loop; gnet calls OnClose before returning.
func (c *conn) closeNow() {
	c.markClosed()
	if err := c.ls.el.Close(c.gc); err != nil {
		c.ls.e.Log.Debug("close failed", "conn", c.ID(), "err", err)
	}
}

func (c *conn) markClosed() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// Close refuses further Writes at once; input stops as soon as the loop runs the close (no later
// than the writes queued before it), and the socket closes when those writes are written or the
// write timeout passes. OnClose then gets nil, or engines.ErrWriteTimeout.
func (c *conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	// The task runs after the writes queued before it: AsyncWrite tasks have the higher priority.
	err := c.gc.EventLoop().Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		c.beginClose()
		return nil
	}))
	if err != nil {
		c.ls.e.Log.Debug("close not scheduled; the engine is shutting down", "conn", c.ID(), "err", err)
	}
	return nil
}

// requestClose is Close from the loop with a reason: writes queued so far are still flushed.
func (c *conn) requestClose(reason error) {
	c.setReason(reason)
	if c.closeReq {
		return
	}
	c.closeReq = true // no more input
	c.markClosed()
	err := c.ls.el.Execute(context.Background(), gnet.RunnableFunc(func(context.Context) error {
		c.beginClose()
		return nil
	}))
	if err != nil {
		c.closeNow()
	}
}

// beginClose runs on the loop after the writes queued before the close.
func (c *conn) beginClose() {
	if c.gone {
		return
	}
	c.closeReq = true
	c.check(time.Now().UnixNano())
}

// eventHandler adapts the engine to gnet's callbacks without exporting them on the engine.
type eventHandler struct{ e *engine }

var _ gnet.EventHandler = eventHandler{}

func (h eventHandler) OnBoot(eng gnet.Engine) gnet.Action {
	e := h.e
	select {
	case <-e.ready:
		return gnet.None // a restart: the address is known
	default:
	}
	addr, err := boundAddr(eng)
	if err != nil {
		e.bootErr = fmt.Errorf("gnetengine: bound address: %w", err)
	}
	e.addr = addr
	return gnet.None
}

// boundAddr reads the listener's address (the real port when the configured one is 0).
func boundAddr(eng gnet.Engine) (net.Addr, error) {
	fd, err := eng.Dup()
	if err != nil {
		return nil, err
	}
	defer func() { _ = unix.Close(fd) }()
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	if a := kit.SockaddrToAddr(sa); a != nil {
		return a, nil
	}
	return nil, fmt.Errorf("unexpected socket address %T", sa)
}

func (h eventHandler) OnShutdown(gnet.Engine) {}

func (h eventHandler) OnTick() (time.Duration, gnet.Action) {
	e := h.e
	select {
	case <-e.ready:
	default:
		close(e.ready) // the first tick: the event loops are running
	}
	if e.stopping.Load() {
		return e.tick, gnet.Shutdown
	}
	e.mu.Lock()
	for _, ls := range e.loops {
		if ls.nbusy.Load() > 0 && ls.scanQueued.CompareAndSwap(false, true) {
			if err := ls.el.Execute(context.Background(), ls.scanFn); err != nil {
				ls.scanQueued.Store(false)
			}
		}
	}
	e.mu.Unlock()
	return e.tick, gnet.None
}

func (h eventHandler) OnOpen(gc gnet.Conn) ([]byte, gnet.Action) {
	e := h.e
	if !e.Gate.Admit() {
		// Refused before the handler sees it: gnet writes the message without waiting (what
		// the socket does not take is dropped at the close) and closes it; OnClose finds no conn.
		return e.Gate.Message(), gnet.Close
	}
	var remote string
	if ra := gc.RemoteAddr(); ra != nil {
		remote = ra.String()
	}
	c := &conn{Ident: kit.MakeIdent(e.nextID.Add(1), remote), gc: gc, ls: e.loopFor(gc.EventLoop())}
	gc.SetContext(c)
	e.Rd.H.OnOpen(c)
	return nil, gnet.None
}

func (h eventHandler) OnTraffic(gc gnet.Conn) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c == nil {
		return gnet.Close
	}
	if c.closeReq || c.gone {
		c.dropInput(gc) // closing: input is dropped
		return gnet.None
	}
	var herr error
	if c.x != nil && c.x.in.Pending() > 0 {
		herr = h.deliverSpilled(c, gc)
	} else {
		herr = h.deliver(c, gc)
	}
	if herr != nil {
		c.dropInput(gc)
		c.requestClose(herr)
	}
	return gnet.None
}

// spillAt is the partial frame size from which the engine keeps input in its own buffer instead
// of gnet's: gnet's Peek(-1) copies everything buffered into one slice on every read while a
// partial frame waits, so a large frame arriving in many reads would cost quadratic copying
// (measured: 116 ms per 1 MiB frame read 4 KiB at a time, against 3 ms for the std engine).
const spillAt = 16 << 10

// deliver offers the input gnet holds to the handler through the kit's Reader (at most MaxFrame
// bytes at a time, the consumed count checked) and discards what it consumed. A partial frame of
// spillAt bytes or more moves to the engine's own buffer (see deliverSpilled).
func (h eventHandler) deliver(c *conn, gc gnet.Conn) error {
	in, _ := gc.Peek(-1) // Peek(-1) never fails: it returns what is buffered, maybe nothing
	if len(in) == 0 {
		return nil
	}
	n, herr := h.e.Rd.Offer(c, in, c.closing)
	if n > 0 {
		// Only a positive count: gnet's Discard(0) or a negative one discards everything.
		if _, err := gc.Discard(n); err != nil {
			return fmt.Errorf("gnetengine: discard: %w", err)
		}
	}
	if herr != nil {
		return herr
	}
	if left := gc.InboundBuffered(); left >= spillAt && !c.closeReq {
		// A large partial frame: take it out of gnet's buffer (one copy) and gather the rest
		// of it in the engine's own buffer, copying each new byte once.
		rest, err := gc.Peek(-1)
		if err != nil {
			return fmt.Errorf("gnetengine: peek: %w", err)
		}
		h.e.Rd.Hold(&c.extra().in, rest)
		if _, err := gc.Discard(len(rest)); err != nil {
			return fmt.Errorf("gnetengine: discard: %w", err)
		}
	}
	return nil
}

// deliverSpilled feeds the new input to the engine's buffer through the kit's Reader (gnet's
// buffer is then empty, so its Peek(-1) is the read itself, no copy) and discards it from gnet.
// The buffer goes when the handler has consumed all of it.
func (h eventHandler) deliverSpilled(c *conn, gc gnet.Conn) error {
	x := c.x
	in, _ := gc.Peek(-1) // never fails (see deliver)
	if len(in) == 0 {
		return nil
	}
	herr := h.e.Rd.Feed(c, &x.in, in, c.closing)
	if _, err := gc.Discard(len(in)); err != nil && herr == nil {
		herr = fmt.Errorf("gnetengine: discard: %w", err)
	}
	if x.in.Pending() == 0 {
		c.tidyExtra()
	}
	return herr
}

// closing reports, on the loop, whether the engine is closing c: its input is dropped.
func (c *conn) closing() bool { return c.closeReq }

// dropInput discards what gnet and the engine hold of c's input.
func (c *conn) dropInput(gc gnet.Conn) {
	discardAll(gc)
	if c.x != nil && c.x.in.Pending() > 0 {
		c.ls.e.Rd.Release(&c.x.in)
		c.tidyExtra()
	}
}

func discardAll(gc gnet.Conn) {
	if n := gc.InboundBuffered(); n > 0 {
		_, _ = gc.Discard(n)
	}
}

func (h eventHandler) OnClose(gc gnet.Conn, err error) gnet.Action {
	c, _ := gc.Context().(*conn)
	if c == nil || c.gone {
		return gnet.None
	}
	c.gone = true
	c.markClosed()
	if c.busy() {
		c.x.inBusy = false
		c.ls.remove(c)
	}
	reason := c.reason()
	switch {
	case reason != nil || c.closeReq:
	case errors.Is(err, io.EOF):
		reason = io.EOF
	case err != nil:
		reason = err
	case !h.e.stopping.Load():
		reason = ErrStopped // gnet closes every connection when it stops on its own
	}
	if c.x != nil {
		h.e.Rd.Release(&c.x.in)
	}
	h.e.Gate.Leave()
	h.e.Rd.H.OnClose(c, reason)
	return gnet.None
}

// gnetLogger sends gnet's own log lines to slog (gnet's fatal level, used only on BSD, as errors).
type gnetLogger struct{ l *slog.Logger }

func (g gnetLogger) log(level slog.Level, format string, args []any) {
	if g.l.Enabled(context.Background(), level) {
		g.l.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

func (g gnetLogger) Debugf(format string, args ...any) { g.log(slog.LevelDebug, format, args) }
func (g gnetLogger) Infof(format string, args ...any)  { g.log(slog.LevelInfo, format, args) }
func (g gnetLogger) Warnf(format string, args ...any)  { g.log(slog.LevelWarn, format, args) }
func (g gnetLogger) Errorf(format string, args ...any) { g.log(slog.LevelError, format, args) }
func (g gnetLogger) Fatalf(format string, args ...any) { g.log(slog.LevelError, format, args) }
