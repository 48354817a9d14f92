// Package tlslayer is TLS 1.3 over any stream engine, written once above the seam: Wrap returns
// the engines.Handler to give an engine, which speaks TLS to the peer and the seam to the handler
// it wraps. The engine sees ciphertext; the wrapped handler sees plaintext and a Conn whose writes
// are encrypted, exactly as it would over plain TCP.
//
// # No goroutine per connection
//
// crypto/tls drives its record layer from a net.Conn. The layer gives each connection an
// in-memory one (wire) over the bytes of the current OnData call, whose Read returns a temporary
// net.Error once those bytes are used up: crypto/tls's record reader does not keep a temporary
// error (readRecordOrCCS), so after the handshake OnData calls tls.Conn.Read until that error and
// offers the plaintext to the wrapped handler through the engine kit's Reader (partial frames
// kept, MaxFrame enforced). An open idle connection holds no goroutine and no buffer of the layer.
//
// A handshake error is kept by crypto/tls, so the handshake runs on a goroutine of its own that
// lives only for the handshake. It starts once the client's first record has arrived whole (a
// client that sends nothing, or a part of its hello, holds none), and OnData runs it as a
// coroutine: it hands the goroutine its bytes and waits until the handshake has used them and
// wants more, or has ended. The goroutine only computes: it never touches the engine's connection
// (what it writes is collected and written by OnData), and OnClose wakes it and waits for it.
//
// # Writes
//
// The Conn given to the wrapped handler seals each Write (or WriteFrame's head and tail, each
// sealed in place by crypto/tls, so tail is never copied as plaintext) under its own lock into one
// buffer and hands that buffer to the engine's connection in one Write. engines.ErrQueueFull and
// engines.ErrClosed pass through unchanged. A sealed record refused by a full queue cannot be
// dropped (the next record's sequence number follows it), so after ErrQueueFull the connection is
// closed: over TLS the slow-consumer policy "drop" closes as "close" does.
//
// Writes before the handshake completes are refused with ErrHandshaking (nothing is queued); the
// core writes nothing before a client's first frame, which comes after the handshake.
package tlslayer

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/internal/kit"
)

// ALPN is the application protocol a pushwire client negotiates over TLS.
const ALPN = "pushwire/1"

// Errors the layer reports.
var (
	// ErrHandshaking is what Write returns before the handshake has completed.
	ErrHandshaking = errors.New("tlslayer: handshake not complete")
	// ErrALPN is the OnClose reason (wrapped) for a client refused for its ALPN.
	ErrALPN = errors.New("tlslayer: client did not negotiate the required ALPN protocol")
	// ErrRecordLost is the OnClose reason after a sealed record was refused by a full write queue.
	ErrRecordLost = errors.New("tlslayer: a sealed record was refused by the full write queue; the TLS stream cannot go on")
)

// Record sizes (RFC 8446 §5).
const (
	recordHeader  = 5
	maxPlaintext  = 1 << 14
	recordExpand  = 1 + 16              // inner content type and AEAD tag (every TLS 1.3 suite)
	maxCiphertext = maxPlaintext + 2048 // the most crypto/tls takes in one record
	engineFrame   = 32 << 10            // EngineMaxFrame: room for one whole record
	defaultFrame  = 1 << 20             // Config.MaxFrame default
	hsContentType = 22                  // TLS handshake record type
)

// Config configures the layer.
type Config struct {
	// TLS is the server configuration (required): a certificate through Certificates,
	// GetCertificate or GetConfigForClient. The layer uses a clone with MinVersion TLS 1.3 and
	// dynamic record sizing off (a frame is sealed in records of 16 KiB and written in one piece).
	TLS *tls.Config
	// RequireALPN, when set, refuses a client that does not negotiate it: a client offering no
	// ALPN is refused at its hello (alert, close), one offering only other protocols is refused by
	// crypto/tls (no_application_protocol). It is added to TLS.NextProtos when those are empty.
	RequireALPN string
	// MaxFrame is the largest frame the wrapped handler takes: the plaintext kept for one
	// connection never reaches it. Default 1 MiB.
	MaxFrame int
	// Logger gets handshake failures at debug level. Default slog.Default().
	Logger *slog.Logger
}

// EngineMaxFrame is the engines.Config.MaxFrame to give the engine under the layer: the layer
// consumes every byte the engine offers except a client's first record while it is incomplete,
// so the engine needs room for one whole record.
func (c Config) EngineMaxFrame() int { return engineFrame }

// layer is the handler given to the engine.
type layer struct {
	h   engines.Handler
	tls *tls.Config
	alp string
	rd  *kit.Reader
	log *slog.Logger
}

// Wrap returns the handler to give a stream engine: it speaks TLS 1.3 to the peer and the seam to
// h. It fails on a bad Config, naming the field.
func Wrap(h engines.Handler, cfg Config) (engines.Handler, error) {
	if h == nil {
		return nil, errors.New("tlslayer: nil handler")
	}
	if cfg.TLS == nil {
		return nil, errors.New("tlslayer: Config.TLS is required")
	}
	if len(cfg.TLS.Certificates) == 0 && cfg.TLS.GetCertificate == nil && cfg.TLS.GetConfigForClient == nil {
		return nil, errors.New("tlslayer: Config.TLS has no certificate (set Certificates, GetCertificate or GetConfigForClient)")
	}
	if cfg.TLS.MaxVersion != 0 && cfg.TLS.MaxVersion < tls.VersionTLS13 {
		return nil, fmt.Errorf("tlslayer: Config.TLS.MaxVersion %s is below TLS 1.3", tls.VersionName(cfg.TLS.MaxVersion))
	}
	if cfg.MaxFrame < 0 {
		return nil, fmt.Errorf("tlslayer: Config.MaxFrame %d is negative", cfg.MaxFrame)
	}
	if cfg.MaxFrame == 0 {
		cfg.MaxFrame = defaultFrame
	}
	tc := cfg.TLS.Clone()
	tc.MinVersion = tls.VersionTLS13
	tc.DynamicRecordSizingDisabled = true
	if alp := cfg.RequireALPN; alp != "" {
		switch {
		case len(tc.NextProtos) == 0:
			tc.NextProtos = []string{alp}
		case !slices.Contains(tc.NextProtos, alp):
			return nil, fmt.Errorf("tlslayer: Config.RequireALPN %q is not in Config.TLS.NextProtos %q", alp, tc.NextProtos)
		}
		next := tc.GetConfigForClient
		tc.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			if len(hello.SupportedProtos) == 0 {
				return nil, fmt.Errorf("%w %q: it offered none", ErrALPN, alp)
			}
			if next != nil {
				return next(hello)
			}
			return nil, nil
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	l := &layer{h: h, tls: tc, alp: cfg.RequireALPN, log: log.With("layer", "tls")}
	l.rd = kit.NewReader(engines.Config{MaxFrame: cfg.MaxFrame}, h)
	return l, nil
}

// Connection states, as OnData sees them (only OnData and OnClose read or change them).
const (
	stHello     uint8 = iota // waiting for the client's first record to arrive whole
	stHandshake              // the handshake goroutine runs
	stOpen                   // handshake done: records are read in OnData
)

// conn is one connection as the wrapped handler sees it.
type conn struct {
	kit.Slot
	l     *layer
	raw   engines.Conn
	tc    *tls.Conn
	w     wire
	in    kit.Input // plaintext of a partial frame (OnData only)
	state uint8     // OnData and OnClose only

	closed atomic.Bool // Close was called, or the engine closed the connection

	wmu    sync.Mutex // serialises sealing and writing; guards open and reason
	open   bool       // the handshake completed and the client was accepted
	reason error      // why the layer closed the connection, for OnClose

	fmu sync.Mutex // keeps collected ciphertext in order on its way to raw
}

var (
	_ engines.Conn        = (*conn)(nil)
	_ engines.FrameWriter = (*conn)(nil)
)

// OnOpen implements engines.Handler: the wrapped handler's OnOpen runs now, so that its login
// timeout covers a slow or stalled handshake.
func (l *layer) OnOpen(raw engines.Conn) {
	c := &conn{l: l, raw: raw}
	c.w.c = c
	c.tc = tls.Server(&c.w, l.tls)
	raw.SetContext(c)
	l.h.OnOpen(c)
}

// OnData implements engines.Handler.
func (l *layer) OnData(raw engines.Conn, in []byte) (int, error) {
	c := raw.Context().(*conn)
	if c.closed.Load() {
		return len(in), nil
	}
	switch c.state {
	case stHello:
		whole, err := firstRecord(in)
		if err != nil {
			return 0, err
		}
		if !whole {
			return 0, nil // the engine keeps the part and offers it again with more
		}
		c.state = stHandshake
		c.w.startHandshake(c.tc)
		fallthrough
	case stHandshake:
		rest, done, err := c.w.feedHandshake(in)
		ferr := c.flush()
		if err != nil {
			l.log.Debug("handshake failed", "remote", raw.RemoteAddr(), "err", err)
			return 0, fmt.Errorf("tlslayer: handshake: %w", err)
		}
		if ferr != nil {
			return 0, ferr
		}
		if !done {
			return len(in), nil
		}
		if err := c.accept(); err != nil {
			return 0, err
		}
		c.state = stOpen
		return len(in), c.readRecords(rest)
	case stOpen:
		return len(in), c.readRecords(in)
	}
	return 0, fmt.Errorf("tlslayer: connection in unknown state %d", c.state)
}

// accept checks the negotiated connection and opens the write side.
func (c *conn) accept() error {
	if alp := c.l.alp; alp != "" {
		if got := c.tc.ConnectionState().NegotiatedProtocol; got != alp {
			return fmt.Errorf("%w %q: negotiated %q", ErrALPN, alp, got)
		}
	}
	c.wmu.Lock()
	c.open = !c.closed.Load()
	c.wmu.Unlock()
	return nil
}

// plainPool holds the buffers plaintext is decrypted into during OnData.
var plainPool = sync.Pool{New: func() any { return new([maxPlaintext]byte) }}

// readRecords decrypts what data completes, and offers the plaintext to the wrapped handler.
func (c *conn) readRecords(data []byte) error {
	c.w.setSrc(data)
	defer c.w.setSrc(nil)
	buf := plainPool.Get().(*[maxPlaintext]byte)
	defer plainPool.Put(buf)
	for !c.closed.Load() {
		n, err := c.tc.Read(buf[:])
		if n > 0 {
			if ferr := c.l.rd.Feed(c, &c.in, buf[:n], c.closed.Load); ferr != nil {
				return ferr
			}
		}
		if err != nil {
			if errors.Is(err, errWouldBlock) {
				break
			}
			_ = c.flush() // an alert crypto/tls sent about bad input
			return err
		}
	}
	// Reading may have written (a KeyUpdate answered): send it.
	if err := c.flush(); err != nil && !errors.Is(err, engines.ErrClosed) {
		return err
	}
	return nil
}

// OnClose implements engines.Handler.
func (l *layer) OnClose(raw engines.Conn, err error) {
	c := raw.Context().(*conn)
	c.closed.Store(true)
	c.w.stop() // ends a handshake in progress and waits for its goroutine
	l.rd.Release(&c.in)
	c.wmu.Lock()
	c.open = false
	if c.reason != nil {
		err = c.reason
	}
	c.wmu.Unlock()
	l.h.OnClose(c, err)
}

// ID implements engines.Conn: the engine's ID for the connection.
func (c *conn) ID() uint64 { return c.raw.ID() }

// RemoteAddr implements engines.Conn.
func (c *conn) RemoteAddr() string { return c.raw.RemoteAddr() }

// Write implements engines.Conn: b is sealed and queued as one unit.
func (c *conn) Write(b []byte) error { return c.write(b, nil) }

// WriteFrame implements engines.FrameWriter: head and tail are sealed (crypto/tls encrypts each
// from where it lies) into one buffer written as one unit.
func (c *conn) WriteFrame(head, tail []byte) error { return c.write(head, tail) }

func (c *conn) write(head, tail []byte) error {
	if len(head)+len(tail) == 0 {
		return nil
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() {
		return engines.ErrClosed
	}
	if !c.open {
		return ErrHandshaking
	}
	c.w.reserve(sealedLen(len(head)) + sealedLen(len(tail)))
	for _, b := range [2][]byte{head, tail} {
		if len(b) == 0 {
			continue
		}
		if _, err := c.tc.Write(b); err != nil {
			// Only a failed record layer gets here (the wire never refuses a write).
			c.loseLocked(err)
			return fmt.Errorf("%w: %w", engines.ErrClosed, err)
		}
	}
	err := c.flush()
	if errors.Is(err, engines.ErrQueueFull) {
		c.loseLocked(ErrRecordLost)
	}
	return err
}

// loseLocked closes the connection because its TLS stream cannot go on; c.wmu is held.
func (c *conn) loseLocked(reason error) {
	if c.reason == nil {
		c.reason = reason
	}
	c.open = false
	c.closed.Store(true)
	c.w.stop()
	_ = c.raw.Close()
}

// flush writes the collected ciphertext to the engine's connection in one Write.
func (c *conn) flush() error {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	out := c.w.take()
	if len(out) == 0 {
		return nil
	}
	return c.raw.Write(out)
}

// Close implements engines.Conn: it sends close_notify after what is queued (best effort: a full
// queue skips it) and closes the engine's connection.
func (c *conn) Close() error {
	c.wmu.Lock()
	if c.closed.Swap(true) {
		c.wmu.Unlock()
		return nil
	}
	if c.open {
		c.open = false
		if c.tc.CloseWrite() == nil {
			_ = c.flush()
		}
	}
	c.wmu.Unlock()
	c.w.stop()
	return c.raw.Close()
}

// sealedLen is the size on the wire of n bytes of application data, sealed in full records.
func sealedLen(n int) int {
	if n == 0 {
		return 0
	}
	return n + (n+maxPlaintext-1)/maxPlaintext*(recordHeader+recordExpand)
}

// firstRecord reports whether in starts with a whole TLS handshake record, failing at once on
// input that is not one (so that a client speaking something else is closed without a goroutine).
func firstRecord(in []byte) (bool, error) {
	if len(in) > 0 && in[0] != hsContentType {
		return false, fmt.Errorf("tlslayer: first byte %#02x is not a TLS handshake record", in[0])
	}
	if len(in) < recordHeader {
		return false, nil
	}
	n := int(in[3])<<8 | int(in[4])
	if n > maxCiphertext {
		return false, fmt.Errorf("tlslayer: first record of %d bytes is over the %d a record may hold", n, maxCiphertext)
	}
	return len(in) >= recordHeader+n, nil
}

// wouldBlock is the temporary error wire.Read returns when the bytes of the current OnData call
// are used up: crypto/tls returns it from Read without recording it.
type wouldBlock struct{}

func (wouldBlock) Error() string   { return "tlslayer: no more input in this call" }
func (wouldBlock) Timeout() bool   { return false }
func (wouldBlock) Temporary() bool { return true }

var errWouldBlock net.Error = wouldBlock{}

// wire is the net.Conn crypto/tls reads ciphertext from and writes ciphertext to: reads come from
// the bytes of the current OnData call, writes are collected for the next flush.
type wire struct {
	c *conn

	mu  sync.Mutex
	src []byte // ciphertext of the current OnData call not yet read
	out []byte // ciphertext collected and not yet flushed
	hs  *handshake
}

// handshake is the state shared by OnData and the handshake goroutine.
type handshake struct {
	cond   sync.Cond // on wire.mu
	need   bool      // the goroutine waits for input
	done   bool      // the handshake ended (err says how)
	err    error
	closed bool          // the connection closed: the goroutine's Read fails
	exited chan struct{} // closed when the goroutine has returned
}

// startHandshake starts the handshake goroutine.
func (w *wire) startHandshake(tc *tls.Conn) {
	h := &handshake{exited: make(chan struct{})}
	h.cond.L = &w.mu
	w.mu.Lock()
	w.hs = h
	w.mu.Unlock()
	go func() {
		defer close(h.exited)
		err := tc.Handshake()
		w.mu.Lock()
		h.done, h.err = true, err
		h.cond.Broadcast()
		w.mu.Unlock()
	}()
}

// feedHandshake gives in to the handshake and waits until it has used all of it and wants more
// (done false), or has ended (done true, with the bytes it left in rest, or failed with err).
func (w *wire) feedHandshake(in []byte) (rest []byte, done bool, err error) {
	w.mu.Lock()
	h := w.hs
	if h == nil {
		w.mu.Unlock()
		return nil, false, net.ErrClosed
	}
	rest, done, err = w.runHandshake(h, in)
	w.mu.Unlock()
	if done {
		<-h.exited // the goroutine has nothing left to do: let it end before going on
	}
	return rest, done, err
}

// runHandshake is feedHandshake's part under w.mu.
func (w *wire) runHandshake(h *handshake, in []byte) (rest []byte, done bool, err error) {
	w.src = in
	h.cond.Broadcast()
	for !h.done && (!h.need || len(w.src) > 0) { // until it ends, or has used in and wants more
		h.cond.Wait()
	}
	rest, w.src = w.src, nil
	if !h.done {
		return nil, false, nil
	}
	if h.err != nil {
		return nil, true, h.err
	}
	w.hs = nil // the goroutine has returned its result: nothing of it is kept
	return rest, true, nil
}

// stop ends a handshake in progress and waits for its goroutine.
func (w *wire) stop() {
	w.mu.Lock()
	h := w.hs
	if h != nil {
		h.closed = true
		h.cond.Broadcast()
	}
	w.mu.Unlock()
	if h != nil {
		<-h.exited
	}
}

func (w *wire) setSrc(b []byte) {
	w.mu.Lock()
	w.src = b
	w.mu.Unlock()
}

// reserve makes room in the collect buffer for n bytes about to be sealed.
func (w *wire) reserve(n int) {
	w.mu.Lock()
	if w.out == nil {
		w.out = make([]byte, 0, n)
	} else {
		w.out = slices.Grow(w.out, n)
	}
	w.mu.Unlock()
}

// take returns the collected ciphertext (the caller owns it) and starts a new collection.
func (w *wire) take() []byte {
	w.mu.Lock()
	out := w.out
	w.out = nil
	w.mu.Unlock()
	return out
}

// Read implements net.Conn for crypto/tls: the current OnData call's bytes; after them, during
// the handshake it waits for the next call's, afterwards it returns errWouldBlock.
func (w *wire) Read(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for {
		h := w.hs
		if h != nil && h.closed {
			return 0, net.ErrClosed
		}
		if len(w.src) > 0 {
			n := copy(p, w.src)
			w.src = w.src[n:]
			if h != nil {
				h.need = false
			}
			return n, nil
		}
		if h == nil || h.done {
			return 0, errWouldBlock
		}
		h.need = true
		h.cond.Broadcast()
		h.cond.Wait()
	}
}

// Write implements net.Conn for crypto/tls: the records are collected (copied: crypto/tls
// reuses its buffer) until the next flush.
func (w *wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.out = append(w.out, p...)
	w.mu.Unlock()
	return len(p), nil
}

// Close implements net.Conn; the engine's connection is closed by conn.Close.
func (w *wire) Close() error { return nil }

// LocalAddr implements net.Conn (crypto/tls does not use it).
func (w *wire) LocalAddr() net.Addr { return addr("") }

// RemoteAddr implements net.Conn: the peer's address as the engine captured it.
func (w *wire) RemoteAddr() net.Addr { return addr(w.c.raw.RemoteAddr()) }

// SetDeadline implements net.Conn: the layer never blocks on the wire, so deadlines do nothing.
func (w *wire) SetDeadline(time.Time) error { return nil }

// SetReadDeadline implements net.Conn (see SetDeadline).
func (w *wire) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline implements net.Conn (see SetDeadline).
func (w *wire) SetWriteDeadline(time.Time) error { return nil }

// addr is a peer address as the engine gave it.
type addr string

func (addr) Network() string  { return "tcp" }
func (a addr) String() string { return string(a) }
