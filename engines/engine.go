// Package engines is the seam between pushwire's engine-independent core and the I/O libraries
// that move its bytes. An engine accepts connections and calls a Handler; the core sees each
// connection only as a Conn. Engines register themselves by name (see Register) and cmd picks one.
//
// Callback order for one connection, never concurrent with each other:
//
//	OnOpen ─▶ OnData* ─▶ OnClose (exactly once)
//
// Conn.Write and Conn.Close may be called from any goroutine at any time, also after OnClose.
package engines

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"sync"
	"time"
)

// Conn is one connection as the core sees it.
type Conn interface {
	// ID is unique among the engine's connections for its lifetime.
	ID() uint64
	// Write queues b for sending. It is safe from any goroutine, never blocks on a slow peer, and
	// frames from concurrent Writes never interleave. The engine owns b after the call: the
	// caller must not modify it (one buffer may be shared by many connections). It returns
	// ErrQueueFull when the bytes already queued plus b exceed the connection's write queue
	// limit (b is not queued), and ErrClosed after Close.
	Write(b []byte) error
	// Close closes the connection after trying to send what is queued; OnClose follows.
	// Calling it more than once is harmless.
	Close() error
	// RemoteAddr is the peer's address, captured at open.
	RemoteAddr() string
	// Context and SetContext hold the core's per-connection state.
	Context() any
	SetContext(v any)
}

// FrameWriter is an optional Conn capability. WriteFrame queues head followed by tail as one unit
// (never interleaved with other writes), under the same rules and bound as Write, without copying
// either: a fan-out encodes a message's meta and body once as tail and shares it across every
// connection, each with its own small head (the frame header with that connection's sequence
// number). The engine owns both slices after the call. Where a Conn lacks it, the core copies
// head and tail into one buffer and calls Write.
type FrameWriter interface {
	WriteFrame(head, tail []byte) error
}

// Handler receives a connection's events. Calls for one connection are never concurrent.
type Handler interface {
	// OnOpen is called once when the connection is accepted, before any OnData.
	OnOpen(c Conn)
	// OnData offers the bytes received and not yet consumed. The handler returns how many bytes
	// it consumed; the engine keeps the rest and offers them again, followed by new bytes, on the
	// next call. in is valid only during the call. A non-nil error closes the connection. OnData
	// must not block.
	OnData(c Conn, in []byte) (consumed int, err error)
	// OnClose is called exactly once, after which the engine never calls the handler for c.
	// err is the reason (nil for a local Close).
	OnClose(c Conn, err error)
}

// Engine serves connections on one listener.
type Engine interface {
	// Name is the registered name.
	Name() string
	// Addr is the bound listen address (useful with port 0). Valid after Start returns.
	Addr() net.Addr
	// Start binds the listener and begins serving in the background.
	Start() error
	// Shutdown stops accepting, closes every connection (each gets its OnClose), and waits for
	// the engine's goroutines to exit. It returns ctx.Err() if ctx ends first.
	Shutdown(ctx context.Context) error
}

// Config is what the core asks of every engine. The zero value of each field means its default.
type Config struct {
	// Addr is the TCP listen address, host:port. Default "127.0.0.1:0".
	Addr string
	// MaxWriteQueue bounds the bytes queued for one connection and not yet written. Default
	// DefaultMaxWriteQueue. A Write beyond it returns ErrQueueFull.
	MaxWriteQueue int
	// ReadBufferSize is the size of each read. Default 4096.
	ReadBufferSize int
	// MaxFrame is the largest frame the handler accepts: an engine that buffers a partial frame
	// never buffers more than this for one connection. Default 1 MiB.
	MaxFrame int
	// WriteTimeout bounds how long a connection may take to accept queued bytes before it is
	// closed as a slow consumer (OnClose gets ErrWriteTimeout). Default 10s.
	WriteTimeout time.Duration
	// Workers is the number of writer or event-loop goroutines where the engine has them.
	// Default: the engine's own choice from GOMAXPROCS.
	Workers int
	// MaxConns caps the connections open at once: past it, a newly accepted connection is
	// refused before the handler sees it (no OnOpen). The engine writes RefuseMessage to it
	// (best effort, without blocking) and closes it at once. Zero or negative: no cap.
	MaxConns int
	// RefuseMessage is written to a connection refused by MaxConns; it may be empty. The engine
	// owns it after New and never modifies it.
	RefuseMessage []byte
	// TLS is the server TLS configuration of an engine that carries its own transport security
	// (one registered with RegisterTransport for TransportQUIC needs it). Stream engines ignore
	// it: TLS over a stream engine is a layer above the seam (engines/tlslayer).
	TLS *tls.Config
	// Options are engine-specific settings, "key=value", declared by each engine when it
	// registers (see Register and Describe). New rejects a key the engine does not declare and a
	// value it cannot take, and gives the engine's factory every declared key, the defaults
	// filled in.
	Options map[string]string
}

// DefaultMaxWriteQueue is the default per-connection write queue bound in bytes.
const DefaultMaxWriteQueue = 256 << 10

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	if c.Addr == "" {
		c.Addr = "127.0.0.1:0"
	}
	if c.MaxWriteQueue <= 0 {
		c.MaxWriteQueue = DefaultMaxWriteQueue
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = 4096
	}
	if c.MaxFrame <= 0 {
		c.MaxFrame = 1 << 20
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	return c
}

// Errors returned by Conn.Write.
var (
	ErrQueueFull = errors.New("engines: write queue full")
	ErrClosed    = errors.New("engines: connection closed")
	// ErrWriteTimeout is the OnClose reason when a peer did not accept queued bytes within
	// WriteTimeout.
	ErrWriteTimeout = errors.New("engines: write timeout (slow consumer)")
	// ErrFrameTooLarge is the OnClose reason when a partial frame outgrew MaxFrame.
	ErrFrameTooLarge = errors.New("engines: buffered input over MaxFrame")
	// ErrBadConsume is the OnClose reason when Handler.OnData returned a consumed count outside
	// 0..len(in).
	ErrBadConsume = errors.New("engines: handler consumed count out of range")
)

// Counter is an optional Engine capability: Refused counts the connections refused by
// Config.MaxConns since the engine was built.
type Counter interface {
	Refused() uint64
}

// Factory builds an engine for a handler. New calls it with cfg.WithDefaults() and with
// cfg.Options validated against the engine's declared options, every declared key present.
type Factory func(cfg Config, h Handler) (Engine, error)

var (
	regMu    sync.RWMutex
	registry = map[string]entry{}
)

type entry struct {
	f         Factory
	opts      []Option
	transport string // "": a stream engine (TCP), which carries StreamTransports
}

// Transport names, as in the wire protocol and the control layer's endpoints.
const (
	TransportTCP  = "tcp"  // frames back to back on a TCP stream
	TransportTLS  = "tls"  // TLS 1.3 over TCP, ALPN pushwire/1
	TransportWS   = "ws"   // WebSocket on HTTP/1.1 path /ws, one frame per binary message
	TransportWSS  = "wss"  // ws over TLS
	TransportQUIC = "quic" // one bidirectional QUIC stream, ALPN pushwire/1
)

// StreamTransports are the transports a stream engine carries: plain TCP, and the layers that
// run over any stream engine (TLS, WebSocket, WebSocket over TLS).
var StreamTransports = []string{TransportTCP, TransportTLS, TransportWS, TransportWSS}

// RegisterTransport registers an engine that carries one transport of its own (QUIC, over UDP)
// instead of a TCP stream: Transports reports only that transport for it.
func RegisterTransport(name, transport string, f Factory, opts ...Option) {
	Register(name, f, opts...)
	regMu.Lock()
	defer regMu.Unlock()
	e := registry[name]
	e.transport = transport
	registry[name] = e
}

// Transports lists what the engine registered as name carries: StreamTransports for a stream
// engine, its one transport for an engine registered with RegisterTransport.
func Transports(name string) ([]string, error) {
	regMu.RLock()
	defer regMu.RUnlock()
	e, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("engines: unknown engine %q", name)
	}
	if e.transport != "" {
		return []string{e.transport}, nil
	}
	return slices.Clone(StreamTransports), nil
}

// Carries reports whether the engine registered as name carries transport.
func Carries(name, transport string) bool {
	ts, err := Transports(name)
	return err == nil && slices.Contains(ts, transport)
}

// Register makes an engine available by name, with the options it takes. It panics on a
// duplicate name or a bad option declaration (a default its own check refuses, say); call it
// from init.
func Register(name string, f Factory, opts ...Option) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("engines: Register called twice for " + name)
	}
	seen := map[string]bool{}
	for _, o := range opts {
		if o.Key == "" || seen[o.Key] {
			panic(fmt.Sprintf("engines: %s: option key %q empty or declared twice", name, o.Key))
		}
		seen[o.Key] = true
		if err := o.Check(o.Default); err != nil {
			panic(fmt.Sprintf("engines: %s: option %s: default %q: %v", name, o.Key, o.Default, err))
		}
	}
	registry[name] = entry{f: f, opts: slices.Clone(opts)}
}

// New builds the engine registered as name. It fails, naming the engine, the key and what is
// wanted, when cfg.Options holds a key the engine does not declare or a value it cannot take.
func New(name string, cfg Config, h Handler) (Engine, error) {
	regMu.RLock()
	e, ok := registry[name]
	regMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("engines: unknown engine %q (have %v)", name, Names())
	}
	if h == nil {
		return nil, fmt.Errorf("engines: %s: nil handler", name)
	}
	opts, err := resolve(name, e.opts, cfg.Options)
	if err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	cfg.Options = opts
	return e.f(cfg, h)
}

// CheckOptions checks opts against the options the engine registered as name declares, as New
// does, so that a caller can refuse bad settings before it builds anything else.
func CheckOptions(name string, opts map[string]string) error {
	regMu.RLock()
	e, ok := registry[name]
	regMu.RUnlock()
	if !ok {
		return fmt.Errorf("engines: unknown engine %q (have %v)", name, Names())
	}
	_, err := resolve(name, e.opts, opts)
	return err
}

// Describe returns the options the engine registered as name declares, in declaration order.
func Describe(name string) ([]Option, error) {
	regMu.RLock()
	defer regMu.RUnlock()
	e, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("engines: unknown engine %q", name)
	}
	return slices.Clone(e.opts), nil
}

// Names lists the registered engines, sorted.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
