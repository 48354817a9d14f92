// Package ws is the WebSocket (RFC 6455) transport as a layer over any stream engine: Wrap turns
// the core's handler into one that speaks WebSocket to the peer and the seam to the core, so the
// core never knows the transport and the layer is written once for std, gnet, netpoll and nbio.
//
// Everything happens in the engine's callbacks, without a goroutine or a blocking read: OnData
// parses the upgrade request from the byte stream as it arrives (the engine keeps a partial
// request, as it keeps a partial frame), then frame headers, and processes a data frame once it
// is wholly buffered (its payload unmasked in place and consumed in the same call). Each binary
// message carries whole protocol frames for the core; each of the core's writes goes out as one
// unmasked binary message, and a frame shared by many connections (group, broadcast) keeps its
// shared tail: each connection adds only its small WebSocket header.
//
// The core's OnOpen runs at the TCP accept, so its login timeout also closes a client that never
// completes its upgrade. Writes the core makes before the upgrade completes are dropped (the
// core writes nothing before a login, which cannot arrive before the upgrade); its Close before
// then answers 408 Request Timeout (503 Service Unavailable if it had written, as a draining
// gateway's GOAWAY) and closes the socket.
package ws

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/internal/kit"
	"github.com/pushwire/pushwire/internal/wsproto"
)

// Defaults of Config.
const (
	DefaultPath       = "/ws"
	DefaultMaxMessage = 1 << 20
	DefaultMaxHeader  = 8 << 10
	// MaxMaxMessage bounds Config.MaxMessage (the protocol's largest frame is far smaller).
	MaxMaxMessage = 64 << 20
	// MinMaxHeader is the smallest Config.MaxHeader: room for a browser's upgrade request.
	MinMaxHeader = 1 << 10
)

// Config is the layer's configuration. The zero value of each field means its default.
type Config struct {
	Path       string   // the request path served; default "/ws"
	MaxMessage int      // largest message payload (assembled across fragments); default 1 MiB
	Origins    []string // allowed Origin values (case-insensitive exact match, "*" for any); empty: no check
	MaxHeader  int      // largest upgrade request in bytes; default 8 KiB
	Logger     *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Path == "" {
		c.Path = DefaultPath
	}
	if c.MaxMessage == 0 {
		c.MaxMessage = DefaultMaxMessage
	}
	if c.MaxHeader == 0 {
		c.MaxHeader = DefaultMaxHeader
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Check reports the first bad setting of c, naming the field.
func (c Config) Check() error {
	c = c.withDefaults()
	switch {
	case !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, "?# \t\r\n"):
		return fmt.Errorf("ws: Config.Path %q: must start with / and hold no query, fragment or space", c.Path)
	case c.MaxMessage < 1 || c.MaxMessage > MaxMaxMessage:
		return fmt.Errorf("ws: Config.MaxMessage %d: must be 1..%d", c.MaxMessage, MaxMaxMessage)
	case c.MaxHeader < MinMaxHeader || c.MaxHeader > MaxMaxMessage:
		return fmt.Errorf("ws: Config.MaxHeader %d: must be %d..%d", c.MaxHeader, MinMaxHeader, MaxMaxMessage)
	}
	for i, o := range c.Origins {
		if o == "" || strings.ContainsAny(o, " \t\r\n,") {
			return fmt.Errorf("ws: Config.Origins[%d] %q: must be one non-empty origin without spaces or commas", i, o)
		}
	}
	return nil
}

// EngineMaxFrame is the engines.Config.MaxFrame to give the engine under the layer: room for the
// largest frame (MaxMessage and its header) and for the largest upgrade request.
func (c Config) EngineMaxFrame() int {
	c = c.withDefaults()
	return max(c.MaxMessage+wsproto.MaxHeaderLen, c.MaxHeader+1)
}

// Wrap returns the handler to give a stream engine: it speaks WebSocket to the peer and the
// seam to h (h sees a Conn whose Write sends one binary message per frame, and OnData with the
// payload of each binary message). It fails on a bad Config, naming the field.
func Wrap(h engines.Handler, cfg Config) (engines.Handler, error) {
	if h == nil {
		return nil, errors.New("ws: nil handler")
	}
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	l := &layer{h: h, cfg: cfg, log: cfg.Logger}
	for _, o := range cfg.Origins {
		if o == "*" {
			l.anyOrigin = true
		}
		l.origins = append(l.origins, strings.ToLower(o))
	}
	return l, nil
}

type layer struct {
	h         engines.Handler
	cfg       Config
	log       *slog.Logger
	origins   []string // lower case
	anyOrigin bool
}

// Connection states.
const (
	stHandshake uint32 = iota // the upgrade has not completed: the core's writes are dropped
	stOpen                    // upgraded: the core's writes go out as binary messages
	stClosed                  // a close frame (or a refusal) went out, or the socket closed
)

// conn is one connection: the engine's (raw) and the core's view of it at once.
type conn struct {
	kit.Slot // the core's context
	raw      engines.Conn
	fw       engines.FrameWriter // raw's, nil if it lacks one
	l        *layer

	mu      sync.Mutex // orders the core's writes with the upgrade answer and the close frame
	state   atomic.Uint32
	wrote   bool // the core wrote during the handshake (under mu)
	reqSeen bool // bytes of the upgrade request arrived (written under mu, in OnData)

	// why is the reason the layer closed the connection itself (a *CloseError, or the upgrade's
	// *wsproto.HandshakeError), handed to the core's OnClose in place of the engine's nil.
	why atomic.Pointer[error]

	// Read side: touched only in the engine's callbacks, which are never concurrent.
	fragging bool   // a fragmented binary message is being assembled
	frag     []byte // its payload so far; nil unless fragging
}

func (c *conn) ID() uint64         { return c.raw.ID() }
func (c *conn) RemoteAddr() string { return c.raw.RemoteAddr() }

// writable reports whether the core's write goes out now; c.mu held. During the handshake it is
// dropped (and remembered: a close then answers 503), after the close it is refused with
// engines.ErrClosed.
func (c *conn) writable() (open bool, err error) {
	switch c.state.Load() {
	case stHandshake:
		c.wrote = true
		return false, nil
	case stClosed:
		return false, engines.ErrClosed
	}
	return true, nil
}

// Write sends b as one binary message. b is never copied.
func (c *conn) Write(b []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if open, err := c.writable(); !open {
		return err
	}
	if len(b) < 126 {
		return c.send(shortHeader(len(b)), b)
	}
	return c.send(wsproto.AppendHeader(make([]byte, 0, 10), wsproto.Header{Fin: true, Op: wsproto.OpBinary, Length: int64(len(b))}), b)
}

// WriteFrame sends head and tail as one binary message: the WebSocket header and head are put
// together in one small buffer, tail (perhaps shared by many connections) goes as it is.
func (c *conn) WriteFrame(head, tail []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if open, err := c.writable(); !open {
		return err
	}
	n := len(head) + len(tail)
	buf := make([]byte, 0, wsproto.HeaderLen(n, false)+len(head))
	buf = wsproto.AppendHeader(buf, wsproto.Header{Fin: true, Op: wsproto.OpBinary, Length: int64(n)})
	return c.send(append(buf, head...), tail)
}

// send queues head then tail on raw as one unit; the caller holds mu.
func (c *conn) send(head, tail []byte) error {
	if c.fw != nil {
		return c.fw.WriteFrame(head, tail)
	}
	if len(tail) == 0 {
		return c.raw.Write(head)
	}
	b := make([]byte, 0, len(head)+len(tail))
	return c.raw.Write(append(append(b, head...), tail...))
}

// Close sends a close frame (1000) and closes the socket; before the upgrade it answers 408 (503
// if the core had written) instead.
func (c *conn) Close() error {
	c.closeWith(wsproto.CloseNormal)
	return nil
}

// closeWith ends the connection with a close frame of code (once), then closes raw.
func (c *conn) closeWith(code uint16) {
	c.mu.Lock()
	switch c.state.Swap(stClosed) {
	case stOpen:
		_ = c.raw.Write(closeFrame(code))
	case stHandshake:
		if c.reqSeen || c.wrote {
			status := 408
			if c.wrote {
				status = 503
			}
			_ = c.raw.Write(wsproto.AppendRefusal(nil, &wsproto.HandshakeError{Status: status, Reason: "connection closed by the server"}))
		}
	}
	c.mu.Unlock()
	_ = c.raw.Close()
}

// CloseError is the OnClose reason the layer gives the core when the WebSocket connection ended
// with a close frame the core did not ask for: the peer's (Peer) or the layer's own answer to bad
// input (Reason says what).
type CloseError struct {
	Code   uint16
	Peer   bool
	Reason string
	// Err is the error behind it, where there is one: engines.ErrFrameTooLarge for a message
	// over MaxMessage (1009), the handler's error (1002), engines.ErrBadConsume (1011).
	Err error
}

// Unwrap gives Err, so errors.Is(reason, engines.ErrFrameTooLarge) holds over ws as over tcp.
func (e *CloseError) Unwrap() error { return e.Err }

func (e *CloseError) Error() string {
	if e.Peer {
		return fmt.Sprintf("ws: closed by the peer with status %d", e.Code)
	}
	return fmt.Sprintf("ws: closed with status %d: %s", e.Code, e.Reason)
}

// setWhy records the first reason the layer closes c for.
func (c *conn) setWhy(err error) { c.why.CompareAndSwap(nil, &err) }

// refuse answers a refused upgrade and closes the socket.
func (c *conn) refuse(e *wsproto.HandshakeError) {
	c.setWhy(e)
	c.mu.Lock()
	if c.state.Swap(stClosed) == stHandshake {
		_ = c.raw.Write(wsproto.AppendRefusal(nil, e))
	}
	c.mu.Unlock()
	_ = c.raw.Close()
	c.l.log.Debug("ws: upgrade refused", "conn", c.raw.ID(), "remote", c.raw.RemoteAddr(), "status", e.Status, "reason", e.Reason)
}

// fail sends msg (an ERROR frame in a binary message, or nil) then a close frame of code, and
// closes the socket.
func (c *conn) fail(code uint16, msg []byte, why string) {
	c.failErr(code, msg, why, nil)
}

// failErr is fail with the error behind it (CloseError.Err).
func (c *conn) failErr(code uint16, msg []byte, why string, cause error) {
	if cause == nil && code == wsproto.CloseTooBig {
		cause = engines.ErrFrameTooLarge
	}
	c.setWhy(&CloseError{Code: code, Reason: why, Err: cause})
	c.mu.Lock()
	if c.state.Load() == stOpen && msg != nil {
		_ = c.raw.Write(msg)
	}
	c.mu.Unlock()
	c.closeWith(code)
	c.frag = nil
	c.fragging = false
	c.l.log.Debug("ws: connection failed", "conn", c.raw.ID(), "remote", c.raw.RemoteAddr(), "status", code, "reason", why)
}

// control answers a ping (pong with its payload, copied: in is the engine's) or a close frame.
func (c *conn) control(op byte, payload []byte) {
	switch op {
	case wsproto.OpPing:
		c.mu.Lock()
		if c.state.Load() == stOpen {
			// A peer that pings faster than it reads fills its queue: its pongs are dropped.
			_ = c.raw.Write(wsproto.AppendFrame(make([]byte, 0, 2+len(payload)), wsproto.OpPong, payload))
		}
		c.mu.Unlock()
	case wsproto.OpClose:
		code, _, err := wsproto.ParseClosePayload(payload)
		switch {
		case err != nil:
			c.fail(wsproto.CloseProtocolError, nil, "invalid close frame payload")
		case code == wsproto.CloseNoStatus:
			c.setWhy(&CloseError{Code: code, Peer: true})
			c.closeWith(wsproto.CloseNormal)
		default:
			c.setWhy(&CloseError{Code: code, Peer: true})
			c.closeWith(code)
		}
	}
}

func (l *layer) OnOpen(raw engines.Conn) {
	c := &conn{raw: raw, l: l}
	c.fw, _ = raw.(engines.FrameWriter)
	raw.SetContext(c)
	l.h.OnOpen(c)
}

func (l *layer) OnClose(raw engines.Conn, err error) {
	c, _ := raw.Context().(*conn)
	if c == nil {
		return
	}
	c.state.Store(stClosed)
	c.frag = nil
	if p := c.why.Load(); p != nil && err == nil {
		err = *p
	}
	l.h.OnClose(c, err)
}

func (l *layer) OnData(raw engines.Conn, in []byte) (int, error) {
	c, _ := raw.Context().(*conn)
	if c == nil || c.state.Load() == stClosed {
		return len(in), nil // closing: the rest is discarded
	}
	done := 0
	if c.state.Load() == stHandshake {
		n, ok := l.upgrade(c, in)
		if !ok {
			return len(in), nil
		}
		if n == 0 {
			return 0, nil
		}
		done = n
	}
	return l.frames(c, in, done), nil
}

// upgrade parses the upgrade request at the start of in and answers it: n == 0 with ok means
// the request is incomplete; !ok means it was refused (or the connection closed meanwhile).
func (l *layer) upgrade(c *conn, in []byte) (n int, ok bool) {
	if len(in) > 0 && !c.reqSeen {
		c.mu.Lock()
		c.reqSeen = true
		c.mu.Unlock()
	}
	req, n, err := wsproto.ParseRequest(in, l.cfg.MaxHeader)
	if err != nil {
		var he *wsproto.HandshakeError
		if !errors.As(err, &he) {
			he = &wsproto.HandshakeError{Status: 400, Reason: err.Error()}
		}
		c.refuse(he)
		return 0, false
	}
	if n == 0 {
		return 0, true
	}
	if req.Path != l.cfg.Path {
		c.refuse(&wsproto.HandshakeError{Status: 404, Reason: "no WebSocket endpoint at this path"})
		return 0, false
	}
	if !l.originAllowed(req.Origin) {
		c.refuse(&wsproto.HandshakeError{Status: 403, Reason: "origin not allowed"})
		return 0, false
	}
	c.mu.Lock()
	if c.state.Load() != stHandshake {
		c.mu.Unlock()
		return 0, false
	}
	if err := c.raw.Write(wsproto.AppendAccept(make([]byte, 0, 160), req.Key)); err != nil {
		c.state.Store(stClosed)
		c.mu.Unlock()
		_ = c.raw.Close()
		return 0, false
	}
	c.state.Store(stOpen)
	c.mu.Unlock()
	return n, true
}

func (l *layer) originAllowed(origin string) bool {
	if len(l.origins) == 0 || l.anyOrigin {
		return true
	}
	if origin == "" {
		return false
	}
	for _, o := range l.origins {
		if strings.EqualFold(o, origin) {
			return true
		}
	}
	return false
}

// frames processes the frames in in from offset done, and returns how far it consumed: up to
// the first frame not wholly present, or all of in once the connection is closing.
func (l *layer) frames(c *conn, in []byte, done int) int {
	for {
		if c.state.Load() != stOpen {
			return len(in)
		}
		b := in[done:]
		h, hn, err := wsproto.ParseHeader(b)
		if err != nil {
			c.fail(wsproto.CloseProtocolError, nil, err.Error())
			return len(in)
		}
		if hn == 0 {
			return done
		}
		if code, msg, why := l.check(c, h); code != 0 {
			c.fail(code, msg, why)
			return len(in)
		}
		if h.Op == wsproto.OpText {
			c.fail(wsproto.CloseUnsupportedData, errTextMessage, "text message")
			return len(in)
		}
		if int64(len(b)-hn) < h.Length {
			return done // wait for the whole frame (it fits the engine's MaxFrame: check bounds it)
		}
		payload := b[hn : hn+int(h.Length)]
		wsproto.MaskBytes(h.Mask, 0, payload)
		done += hn + int(h.Length)
		switch h.Op {
		case wsproto.OpPing, wsproto.OpPong, wsproto.OpClose:
			c.control(h.Op, payload)
		case wsproto.OpBinary:
			if !h.Fin {
				c.fragging = true
				c.frag = append(make([]byte, 0, max(2*len(payload), 512)), payload...)
				continue
			}
			l.deliver(c, payload)
		default: // OpContinuation (check refused one without a message)
			c.frag = append(c.frag, payload...)
			if h.Fin {
				msg := c.frag
				c.frag, c.fragging = nil, false
				l.deliver(c, msg)
			}
		}
	}
}

// check applies the protocol's rules to a client frame's header: a non-zero close code if the
// frame is refused, with the message to send before the close frame and why, for the log.
func (l *layer) check(c *conn, h wsproto.Header) (code uint16, msg []byte, why string) {
	switch {
	case h.Rsv != 0:
		return wsproto.CloseProtocolError, nil, "RSV bits set"
	case wsproto.IsReserved(h.Op):
		return wsproto.CloseProtocolError, nil, "reserved opcode"
	case !h.Masked:
		return wsproto.CloseProtocolError, nil, "unmasked client frame"
	case wsproto.IsControl(h.Op):
		if !h.Fin || h.Length > wsproto.MaxControlPayload {
			return wsproto.CloseProtocolError, nil, "fragmented or oversized control frame"
		}
		return 0, nil, ""
	case h.Op == wsproto.OpContinuation && !c.fragging:
		return wsproto.CloseProtocolError, nil, "continuation without a message"
	case h.Op != wsproto.OpContinuation && c.fragging:
		return wsproto.CloseProtocolError, nil, "new message inside a fragmented one"
	case h.Length > int64(l.cfg.MaxMessage-len(c.frag)):
		return wsproto.CloseTooBig, nil, "message over MaxMessage"
	}
	return 0, nil, ""
}

// deliver gives a binary message's payload to the core, which must consume all of it: whole
// protocol frames only.
func (l *layer) deliver(c *conn, p []byte) {
	off := 0
	for off < len(p) && c.state.Load() == stOpen {
		n, err := l.h.OnData(c, p[off:])
		if err != nil {
			c.failErr(wsproto.CloseProtocolError, nil, err.Error(), err)
			return
		}
		if n < 0 || n > len(p)-off {
			c.failErr(wsproto.CloseInternalError, nil, fmt.Sprintf("%d of %d bytes", n, len(p)-off), engines.ErrBadConsume)
			return
		}
		if n == 0 {
			c.fail(wsproto.CloseProtocolError, errPartialFrame, "message not whole protocol frames")
			return
		}
		off += n
	}
}

// The ERROR frames the layer sends itself, each in a binary message (immutable: shared).
var (
	errTextMessage  = errorMessage("text messages are not accepted: send binary messages")
	errPartialFrame = errorMessage("a message must carry whole frames")
)

func errorMessage(msg string) []byte {
	f := frame.Frame{Header: frame.Header{Type: frame.TypeError, Code: frame.CodeBadFrame}, Meta: frame.AppendMetaString(nil, "msg", msg)}
	return wsproto.AppendFrame(nil, wsproto.OpBinary, frame.Append(nil, &f))
}

// shortHeaders holds the 2-byte headers of unmasked binary messages under 126 bytes, so that a
// small write allocates nothing; the table is never modified.
var shortHeaders = func() (t [126 * 2]byte) {
	for n := range 126 {
		t[2*n], t[2*n+1] = 0x80|wsproto.OpBinary, byte(n)
	}
	return t
}()

func shortHeader(n int) []byte { return shortHeaders[2*n : 2*n+2 : 2*n+2] }

// closeFrames are the close frames of the statuses the layer sends (immutable: shared).
var closeFrames = func() map[uint16][]byte {
	m := map[uint16][]byte{}
	for _, code := range []uint16{1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011} {
		m[code] = wsproto.AppendFrame(nil, wsproto.OpClose, wsproto.AppendClosePayload(nil, code, ""))
	}
	return m
}()

func closeFrame(code uint16) []byte {
	if f, ok := closeFrames[code]; ok {
		return f
	}
	return wsproto.AppendFrame(nil, wsproto.OpClose, wsproto.AppendClosePayload(nil, code, ""))
}
