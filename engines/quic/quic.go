// Package quicengine serves pushwire over QUIC (quic-go): an engine that carries its own
// transport, registered with engines.RegisterTransport as "quic" for engines.TransportQUIC.
//
// # Connections and streams
//
// Config.Addr is a UDP host:port; Config.TLS is required (New fails naming it). The engine clones
// it and forces NextProtos ["pushwire/1"] and TLS 1.3, so a client offering any other ALPN is
// refused by the handshake. 0-RTT is off (Allow0RTT false: a LOGIN must not be replayable).
//
// One client session is one QUIC connection carrying one bidirectional stream that the client
// opens, with protocol frames back to back on it. The peer may open exactly one bidirectional
// stream (MAX_STREAMS 1) and no unidirectional stream: a second stream is refused by the stream
// limit (the client's OpenStream fails with a StreamLimitReachedError, OpenStreamSync blocks), it
// never reaches the handler.
//
// OnOpen is called when the handshake is done and the connection accepted, before the client's
// stream arrives: a client that connects and never opens a stream is an open connection to the
// core, so its login timeout closes it (Conn.Close before the stream closes the QUIC connection).
// OnData gets the stream's bytes through the engine kit's Reader (partial frames kept under
// Config.MaxFrame); the reader waits for data with a one-byte Peek before it takes a read buffer
// from the kit's pool, so an idle connection holds no read buffer. Past Config.MaxConns a new connection never reaches the handler: when
// Config.RefuseMessage is empty it is closed at once with the application error CodeRefused;
// otherwise the engine waits briefly (at most 2 s, by a goroutine that ends with it; no more than
// 64 at once, beyond that the close is immediate) for the client's stream, writes the message on
// it, finishes the stream and closes the connection with CodeRefused.
//
// # Writes
//
// Writes never block the caller: each connection's queue is bounded by Config.MaxWriteQueue
// (engines.ErrQueueFull past it), and a fixed set of writer workers (the kit's Group,
// Config.Workers, default 2×GOMAXPROCS) moves queued frames to the stream with
// quic-go's SendStream.TryWriteAll, which takes a frame only when the peer's flow-control credit
// covers it and never waits. quic-go offers no signal for new credit, so when a frame would block
// the rest of the queue goes to a short-lived goroutine that writes it with blocking Writes under
// a write deadline of Config.WriteTimeout; a peer that takes no bytes for that long is closed
// with the application error CodeSlowConsumer and OnClose gets engines.ErrWriteTimeout. An idle
// connection therefore has no writer goroutine. Connections implement engines.FrameWriter.
//
// # Closing
//
// OnClose is called exactly once: for a local Close (nil), the peer finishing its stream or
// closing the connection with code 0 (io.EOF), an idle timeout (quic-go's IdleTimeoutError), a
// stream reset (a *quic.StreamError), a write failure or any other connection error. After it,
// what is still queued is flushed (bounded by Config.WriteTimeout from the close) and the stream
// is finished (FIN). The engine then waits, within the same bound, for the peer to close the
// connection (a client closes when it reads the end of the stream) before closing it itself with
// code 0: a QUIC connection closed with CONNECTION_CLOSE makes the peer's stack drop stream data
// its application has not read yet, and quic-go does not report acknowledgements. Shutdown closes
// every connection that way, except that it does not wait for the peers to close: once a
// connection has had what it sent acknowledged (see linger) it is left to Transport.Close, which
// drops it without a CONNECTION_CLOSE, so a client still reads what it received and then the end
// of the stream. When Shutdown's context ends first the rest are closed at once (CodeError). It
// returns after every goroutine it started has exited and the UDP socket is closed.
//
// # UDP buffers
//
// quic-go wants 7 MiB socket buffers and prints a warning through the standard logger when it
// cannot raise them. The engine sets them itself when it binds (option udp_buffer; as root it
// uses SO_RCVBUFFORCE/SO_SNDBUFFORCE past net.core.rmem_max and wmem_max). When they stay
// smaller it logs one structured warning with the sizes and the sysctl to raise, and silences
// quic-go's duplicate (QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING, unless already set).
//
// Registered as "quic"; its options are declared in Options.
package quicengine

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/internal/kit"
)

// Name is the registered engine name.
const Name = "quic"

// ALPN is the application protocol every connection negotiates.
const ALPN = "pushwire/1"

// Application error codes the engine closes connections with (CONNECTION_CLOSE).
const (
	CodeNormal       quic.ApplicationErrorCode = 0x0 // a local Close, Shutdown
	CodeRefused      quic.ApplicationErrorCode = 0x1 // refused at Config.MaxConns
	CodeSlowConsumer quic.ApplicationErrorCode = 0x2 // took no bytes within Config.WriteTimeout
	CodeError        quic.ApplicationErrorCode = 0x3 // a write failed, or Shutdown ran out of time
)

// Option keys.
const (
	OptIdleTimeout      = "idle_timeout"
	OptHandshakeTimeout = "handshake_timeout"
	OptReceiveWindow    = "receive_window"
	OptUDPBuffer        = "udp_buffer"
)

// Options are the quic engine's options.
var Options = []engines.Option{
	{Key: OptIdleTimeout, Type: engines.OptDuration, Default: "5m", Min: "1s",
		Help: "QUIC max idle timeout: a connection with no packet from the peer for this long is closed (keep it well above the client heartbeat)"},
	{Key: OptHandshakeTimeout, Type: engines.OptDuration, Default: "10s", Min: "100ms",
		Help: "QUIC handshake idle timeout: a handshake with no packet from the client for this long is abandoned"},
	{Key: OptReceiveWindow, Type: engines.OptInt, Default: "524288", Min: "16384", Max: "67108864",
		Help: "flow-control window in bytes for what a client may send ahead on its stream and connection (bounds quic-go's receive buffering per connection)"},
	{Key: OptUDPBuffer, Type: engines.OptInt, Default: "7340032", Min: "0", Max: "1073741824",
		Help: "UDP socket receive and send buffer in bytes, set at bind (0: leave them to quic-go)"},
}

func init() { engines.RegisterTransport(Name, engines.TransportQUIC, New, Options...) }

// Bounds of the refusal path (Config.MaxConns with a RefuseMessage).
const (
	refuseWait  = 2 * time.Second
	maxRefusers = 64
)

type engine struct {
	kit.Base
	group  *kit.Group
	tls    *tls.Config
	qconf  *quic.Config
	udpBuf int

	udp      *net.UDPConn
	tr       *quic.Transport
	ln       *quic.Listener
	ctx      context.Context // ends at Shutdown: Accept, refusals
	cancel   context.CancelFunc
	nextID   atomic.Uint64
	closing  atomic.Bool
	stop     chan struct{}
	accepts  sync.WaitGroup
	conns    sync.WaitGroup // one per admitted connection: its goroutine, done after the close
	refuse   sync.WaitGroup // refusal goroutines
	refusing atomic.Int32

	mu   sync.Mutex
	live map[uint64]*conn
}

var _ engines.Counter = (*engine)(nil)

// New builds a quic engine (the Factory registered as "quic"); engines.New has validated the
// options. It fails when Config.TLS is missing or has no certificate, or Config.Addr is not a
// UDP address.
func New(cfg engines.Config, h engines.Handler) (engines.Engine, error) {
	cfg = cfg.WithDefaults()
	if cfg.TLS == nil {
		return nil, errors.New("quicengine: Config.TLS is required (QUIC carries its own TLS 1.3)")
	}
	if len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
		return nil, errors.New("quicengine: Config.TLS has no certificate (Certificates, GetCertificate or GetConfigForClient)")
	}
	if _, err := net.ResolveUDPAddr("udp", cfg.Addr); err != nil {
		return nil, fmt.Errorf("quicengine: Config.Addr %q: want a UDP host:port: %w", cfg.Addr, err)
	}
	if cfg.Options == nil {
		cfg.Options = map[string]string{}
	}
	for _, o := range Options { // New may be called directly, not only through engines.New
		v, ok := cfg.Options[o.Key]
		if !ok {
			cfg.Options[o.Key] = o.Default
			continue
		}
		if err := o.Check(v); err != nil {
			return nil, fmt.Errorf("quicengine: option %s=%q: %w", o.Key, v, err)
		}
	}
	tc := cfg.TLS.Clone()
	tc.NextProtos = []string{ALPN}
	tc.MinVersion = tls.VersionTLS13
	win := uint64(kit.Int(cfg, OptReceiveWindow))
	qc := &quic.Config{
		HandshakeIdleTimeout:           kit.Duration(cfg, OptHandshakeTimeout),
		MaxIdleTimeout:                 kit.Duration(cfg, OptIdleTimeout),
		InitialStreamReceiveWindow:     win,
		MaxStreamReceiveWindow:         win,
		InitialConnectionReceiveWindow: win,
		MaxConnectionReceiveWindow:     win,
		MaxIncomingStreams:             1,
		MaxIncomingUniStreams:          -1,
		Allow0RTT:                      false,
	}
	e := &engine{Base: kit.NewBase(Name, cfg, h), tls: tc, qconf: qc, udpBuf: kit.Int(cfg, OptUDPBuffer),
		stop: make(chan struct{}), live: make(map[uint64]*conn)}
	e.group = kit.NewGroup(kit.Workers(cfg), 0)
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// Addr is the bound *net.UDPAddr.
func (e *engine) Addr() net.Addr {
	if e.udp == nil {
		return nil
	}
	return e.udp.LocalAddr()
}

func (e *engine) Start() error {
	if e.udp != nil {
		return errors.New("quicengine: already started")
	}
	if e.closing.Load() {
		return errors.New("quicengine: shut down")
	}
	ua, err := net.ResolveUDPAddr("udp", e.Cfg.Addr)
	if err != nil {
		return fmt.Errorf("quicengine: Config.Addr %q: %w", e.Cfg.Addr, err)
	}
	udp, err := net.ListenUDP("udp", ua)
	if err != nil {
		return fmt.Errorf("quicengine: listen %s: %w", e.Cfg.Addr, err)
	}
	e.setBuffers(udp)
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(e.tls, e.qconf)
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return fmt.Errorf("quicengine: listen %s: %w", e.Cfg.Addr, err)
	}
	e.udp, e.tr, e.ln = udp, tr, ln
	e.group.Start()
	e.accepts.Add(1)
	go e.accept()
	return nil
}

var envWarnOnce sync.Once

// setBuffers raises the socket's receive and send buffers to udp_buffer bytes, forcing past the
// system maximum where it may, and logs once when it cannot.
func (e *engine) setBuffers(udp *net.UDPConn) {
	want := e.udpBuf
	if want <= 0 {
		return
	}
	rc, err := udp.SyscallConn()
	if err != nil {
		return
	}
	var rcv, snd int
	_ = rc.Control(func(fd uintptr) {
		rcv = raise(int(fd), unix.SO_RCVBUF, unix.SO_RCVBUFFORCE, want)
		snd = raise(int(fd), unix.SO_SNDBUF, unix.SO_SNDBUFFORCE, want)
	})
	if rcv >= want && snd >= want {
		return
	}
	e.Log.Warn("UDP socket buffers smaller than asked: QUIC may drop packets under load",
		"addr", udp.LocalAddr().String(), "want_bytes", want, "rcvbuf_bytes", rcv, "sndbuf_bytes", snd,
		"fix", fmt.Sprintf("run as root, or sysctl -w net.core.rmem_max=%d net.core.wmem_max=%d", want, want))
	envWarnOnce.Do(func() {
		// quic-go would print the same through the standard logger.
		if _, set := os.LookupEnv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING"); !set {
			_ = os.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
		}
	})
}

// raise sets the socket buffer opt to want bytes (force: the privileged option that ignores the
// system maximum) unless it is already that large, and returns the size it ends at. Linux reports
// twice the size set (the kernel's bookkeeping share), as quic-go's own check expects.
func raise(fd, opt, force, want int) int {
	get := func() int {
		n, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, opt)
		if err != nil {
			return 0
		}
		return n
	}
	if n := get(); n >= want {
		return n
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, want)
	if n := get(); n >= want {
		return n
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, force, want)
	return get()
}

func (e *engine) accept() {
	defer e.accepts.Done()
	var backoff kit.Backoff
	for {
		qc, err := e.ln.Accept(e.ctx)
		if err != nil {
			if e.closing.Load() || errors.Is(err, quic.ErrServerClosed) || errors.Is(err, net.ErrClosed) || e.ctx.Err() != nil {
				return
			}
			e.Log.Warn("accept failed; retrying", "err", err)
			if !backoff.Wait(e.stop) {
				return
			}
			continue
		}
		backoff.Reset()
		if !e.Gate.Admit() {
			e.refuseConn(qc)
			continue
		}
		id := e.nextID.Add(1)
		c := &conn{Ident: kit.MakeIdent(id, qc.RemoteAddr().String()), e: e, qc: qc, w: e.group.For(id),
			drained: make(chan struct{})}
		e.mu.Lock()
		if e.closing.Load() {
			e.mu.Unlock()
			_ = qc.CloseWithError(CodeNormal, "shutting down")
			e.Gate.Leave()
			continue
		}
		e.live[id] = c
		e.conns.Add(1)
		e.mu.Unlock()
		go c.serve()
	}
}

// refuseConn refuses a connection past MaxConns (see the package doc).
func (e *engine) refuseConn(qc *quic.Conn) {
	msg := e.Gate.Message()
	if len(msg) == 0 || e.refusing.Load() >= maxRefusers {
		_ = qc.CloseWithError(CodeRefused, "at capacity")
		return
	}
	e.refusing.Add(1)
	e.refuse.Add(1)
	go func() {
		defer e.refuse.Done()
		defer e.refusing.Add(-1)
		ctx, cancel := context.WithTimeout(e.ctx, min(refuseWait, e.Cfg.WriteTimeout))
		defer cancel()
		if st, err := qc.AcceptStream(ctx); err == nil {
			if st.TryWriteAll(msg) == nil {
				_ = st.Close()
				// Let the client read the message: it closes when it reads the end of the stream.
				select {
				case <-qc.Context().Done():
				case <-ctx.Done():
				}
			}
		}
		_ = qc.CloseWithError(CodeRefused, "at capacity")
	}()
}

// Shutdown stops accepting, closes every connection after flushing what it has queued, waits for
// every OnClose and for the engine's goroutines, and closes the UDP socket. When ctx ends first
// the remaining connections are closed at once and ctx.Err() is returned once they are gone.
func (e *engine) Shutdown(ctx context.Context) error {
	if !e.closing.CompareAndSwap(false, true) {
		return nil
	}
	close(e.stop)
	if e.ln != nil {
		_ = e.ln.Close()
	}
	e.cancel()
	e.accepts.Wait()
	e.mu.Lock()
	all := make([]*conn, 0, len(e.live))
	for _, c := range e.live {
		all = append(all, c)
	}
	e.mu.Unlock()
	for _, c := range all {
		_ = c.Close()
	}
	err := kit.WaitOr(ctx, func() { e.conns.Wait(); e.refuse.Wait() }, func() {
		for _, c := range all {
			c.abort()
		}
	})
	e.group.Stop()
	if e.tr != nil {
		_ = e.tr.Close()
		_ = e.udp.Close()
	}
	return err
}

// A connection is also a writer's task, and writes a frame's head and a shared tail as one unit.
var _ interface {
	kit.Task
	engines.FrameWriter
} = (*conn)(nil)

// conn is one QUIC connection and its stream. Lock order: Mu, then the worker's.
type conn struct {
	kit.Ident
	e  *engine
	qc *quic.Conn
	w  *kit.Worker

	// Outbox: the queue, Busy (a worker or the slow path owns the write side) and Closed (no
	// more Writes), under Mu with the fields below.
	kit.Outbox
	st         *quic.Stream  // the client's stream, once accepted
	closeErr   error         // why the engine closed it (a write failure); OnClose reports it
	dead       bool          // the connection was closed with an error: nothing more is written
	drained    chan struct{} // closed once the write side is done for good (Closed and idle)
	drainedSet bool
}

// Write implements engines.Conn.
func (c *conn) Write(b []byte) error { return c.write(b, nil) }

// WriteFrame implements engines.FrameWriter: head and tail are queued as one unit without copying
// (a fan-out shares tail across connections).
func (c *conn) WriteFrame(head, tail []byte) error { return c.write(head, tail) }

func (c *conn) write(a, b []byte) error {
	wake, err := c.Push(a, b, c.e.Cfg.MaxWriteQueue)
	if wake {
		c.w.Enqueue(c)
	}
	return err
}

// markDrained signals the write side done; c.Mu held.
func (c *conn) markDrained() {
	if !c.drainedSet {
		c.drainedSet = true
		close(c.drained)
	}
}

// Close stops reading at once and closes the connection once what is queued has been sent (see
// the package doc). Before the client opened its stream nothing can be sent: the QUIC connection
// is closed at once.
func (c *conn) Close() error {
	c.Mu.Lock()
	if c.Closed {
		c.Mu.Unlock()
		return nil
	}
	c.Closed = true
	if !c.Busy {
		c.markDrained()
	}
	st := c.st
	c.Mu.Unlock()
	if st == nil {
		_ = c.qc.CloseWithError(CodeNormal, "")
		return nil
	}
	_ = st.SetReadDeadline(time.Unix(1, 0)) // wake the reader; it calls OnClose
	return nil
}

// abort closes the connection at once, dropping what is queued.
func (c *conn) abort() { c.fail(errors.New("quicengine: shut down before the queue was flushed")) }

// serve is the connection's goroutine: OnOpen, the client's stream, the read loop, OnClose, and
// the close.
func (c *conn) serve() {
	defer c.e.conns.Done()
	defer c.e.Gate.Leave()
	rd := c.e.Rd
	rd.H.OnOpen(c)
	var rerr error
	st, err := c.qc.AcceptStream(context.Background()) // returns when the connection ends
	if err == nil {
		c.Mu.Lock()
		c.st = st
		closed := c.Closed
		wake := !c.Busy && !c.Q.Empty() && !c.dead
		if wake {
			c.Busy = true // written before the stream existed
		}
		c.Mu.Unlock()
		if wake {
			c.w.Enqueue(c)
		}
		if !closed {
			rerr = c.readLoop(st)
		}
	} else {
		rerr = c.reason(err)
	}
	c.Mu.Lock()
	c.Closed = true
	if !c.Busy {
		c.markDrained()
	}
	c.Mu.Unlock()
	rd.H.OnClose(c, rerr)
	c.finish(st)
	c.e.mu.Lock()
	delete(c.e.live, c.ID()) // only now: Shutdown may still have to abort a lingering close
	c.e.mu.Unlock()
}

// readLoop offers the stream's bytes to the handler until the stream or the connection ends, or
// Close; it returns the OnClose reason. It waits for data with a one-byte Peek and only then takes
// a read buffer (pooled by the kit's Reader), so an idle connection holds none.
func (c *conn) readLoop(st *quic.Stream) error {
	rd := c.e.Rd
	var in kit.Input
	defer rd.Release(&in)
	var one [1]byte
	for {
		_, err := st.Peek(one[:])
		if err == nil {
			var n int
			n, err = st.Read(rd.Space(&in))
			if n > 0 {
				if rerr := rd.Commit(c, &in, n, nil); rerr != nil {
					return rerr
				}
			}
		}
		if err != nil {
			c.Mu.Lock()
			local, why := c.Closed, c.closeErr
			c.Mu.Unlock()
			switch {
			case why != nil:
				return why
			case local:
				return nil
			}
			return c.reason(err)
		}
	}
}

// reason is the OnClose reason for a read or accept error. The peer ending its stream, or closing
// the connection with code 0, is io.EOF, as a TCP peer's close is on the other engines.
func (c *conn) reason(err error) error {
	c.Mu.Lock()
	local, why := c.Closed, c.closeErr
	c.Mu.Unlock()
	if why != nil {
		return why
	}
	if local {
		return nil
	}
	var ae *quic.ApplicationError
	if errors.Is(err, io.EOF) || (errors.As(err, &ae) && ae.Remote && ae.ErrorCode == CodeNormal) {
		return io.EOF
	}
	return err
}

// finish closes the connection after OnClose: it waits (at most WriteTimeout) for the writer to
// flush the queue, finishes the stream, waits within the same bound for the peer to close (so
// that quic-go sends what it holds), and closes the connection.
func (c *conn) finish(st *quic.Stream) {
	if st == nil {
		_ = c.qc.CloseWithError(CodeNormal, "")
		return
	}
	bound, cancel := context.WithTimeout(context.Background(), c.e.Cfg.WriteTimeout)
	defer cancel()
	select {
	case <-c.drained:
	case <-bound.Done():
		c.fail(engines.ErrWriteTimeout)
		return
	}
	c.Mu.Lock()
	dead := c.dead
	c.Mu.Unlock()
	if dead {
		return // fail closed it
	}
	_ = st.Close()
	st.CancelRead(quic.StreamErrorCode(CodeNormal))
	select {
	case <-c.qc.Context().Done(): // the peer read the end and closed (or abort closed it)
		return
	case <-bound.Done():
		_ = c.qc.CloseWithError(CodeNormal, "")
		return
	case <-c.e.ctx.Done(): // Shutdown
	}
	// Shutdown: wait for what was sent to be acknowledged, then leave the connection to
	// Transport.Close, which drops it without a CONNECTION_CLOSE: a peer that has not read
	// everything yet still reads it, and then the end of the stream.
	linger(c.qc, bound.Done())
}

// Lingering at Shutdown after the stream's end: a connection dropped at once loses stream data
// quic-go has not yet sent or had acknowledged, and quic-go does not say when that is done.
const (
	lingerPoll     = 10 * time.Millisecond
	lingerMinQuiet = 100 * time.Millisecond
	maxAckDelay    = 25 * time.Millisecond // RFC 9000's default max_ack_delay, quic-go's too
)

// linger waits until the peer closes qc, or qc has sent nothing for two probe timeouts (at least
// lingerMinQuiet), or bound ends; Shutdown uses it before it drops a connection silently. While anything ack-eliciting is unacknowledged quic-go sends a
// probe within one probe timeout (RFC 9002 §6.2: smoothed RTT + max(4×RTT variance, 1 ms) + max
// ack delay), so a connection quiet for longer has had everything it sent acknowledged (or its
// peer is gone).
func linger(qc *quic.Conn, bound <-chan struct{}) {
	tick := time.NewTicker(lingerPoll)
	defer tick.Stop()
	last, quiet := qc.ConnectionStats().BytesSent, time.Now()
	for {
		select {
		case <-qc.Context().Done(): // the peer closed, or abort did
			return
		case <-bound:
			return
		case now := <-tick.C:
			s := qc.ConnectionStats()
			if s.BytesSent != last {
				last, quiet = s.BytesSent, now
				continue
			}
			pto := s.SmoothedRTT + max(4*s.MeanDeviation, time.Millisecond) + maxAckDelay
			if now.Sub(quiet) >= max(2*pto, lingerMinQuiet) {
				return
			}
		}
	}
}

// Run is the kit.Task: it moves what c has queued to the stream without waiting for the peer.
// What the peer's flow-control credit does not cover goes to the slow path.
func (c *conn) Run(*kit.Runner) {
	c.Mu.Lock()
	st := c.st
	if st == nil || c.dead {
		c.Busy = false // before the stream: kept until it arrives (serve)
		if c.Closed {
			c.markDrained()
		}
		c.Mu.Unlock()
		return
	}
	bufs := c.Q.Take()
	c.Mu.Unlock()
	i := 0
	for ; i < len(bufs); i++ {
		err := st.TryWriteAll(bufs[i])
		if errors.Is(err, quic.ErrWouldBlock) {
			break
		}
		if err != nil {
			c.fail(fmt.Errorf("quicengine: write: %w", err))
			return
		}
		c.Q.Written(len(bufs[i]))
	}
	c.Mu.Lock()
	if c.dead {
		c.Mu.Unlock()
		return
	}
	if i < len(bufs) {
		c.Q.Requeue(bufs[i:])
		c.Mu.Unlock()
		c.e.group.Go(c.slowFlush)
		return
	}
	if !c.Q.Empty() {
		c.Mu.Unlock()
		c.w.Enqueue(c) // more arrived meanwhile; stay busy
		return
	}
	c.Q.Recycle(bufs)
	c.Busy = false
	if c.Closed {
		c.markDrained()
	}
	c.Mu.Unlock()
}

// slowFlush writes the queue with blocking Writes under the write deadline until it is empty,
// then gives the connection back to its worker's regime.
func (c *conn) slowFlush() {
	c.Mu.Lock()
	st := c.st
	c.Mu.Unlock()
	for {
		c.Mu.Lock()
		bufs := c.Q.Take()
		if len(bufs) == 0 || c.dead {
			c.Busy = false
			if c.Closed {
				c.markDrained()
			}
			c.Mu.Unlock()
			return
		}
		c.Mu.Unlock()
		for _, b := range bufs {
			_ = st.SetWriteDeadline(time.Now().Add(c.e.Cfg.WriteTimeout))
			n, err := st.Write(b)
			c.Q.Written(n)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					err = engines.ErrWriteTimeout
				} else {
					err = fmt.Errorf("quicengine: write: %w", err)
				}
				c.fail(err)
				return
			}
		}
	}
}

// fail closes the connection at once after a write error (or an aborted Shutdown): nothing more
// is written, and the reader reports OnClose with err.
func (c *conn) fail(err error) {
	c.Mu.Lock()
	if c.dead {
		c.Mu.Unlock()
		return
	}
	c.dead = true
	c.Closed = true
	c.Busy = false
	if c.closeErr == nil {
		c.closeErr = err
	}
	c.Q.Drop()
	c.markDrained()
	c.Mu.Unlock()
	code, msg := CodeError, "write failed"
	if errors.Is(err, engines.ErrWriteTimeout) {
		code, msg = CodeSlowConsumer, "slow consumer"
		c.e.Log.Debug("slow consumer; closing", "conn", c.ID(), "remote", c.RemoteAddr())
	}
	_ = c.qc.CloseWithError(code, msg)
}
