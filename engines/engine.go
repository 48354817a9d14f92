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
	"errors"
	"fmt"
	"net"
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
	// Options are engine-specific settings, "key=value", documented by each engine.
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
)

// Factory builds an engine for a handler.
type Factory func(cfg Config, h Handler) (Engine, error)

var (
	regMu    sync.RWMutex
	registry = map[string]Factory{}
)

// Register makes an engine available by name. It panics on a duplicate name; call it from init.
func Register(name string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registry[name]; dup {
		panic("engines: Register called twice for " + name)
	}
	registry[name] = f
}

// New builds the engine registered as name.
func New(name string, cfg Config, h Handler) (Engine, error) {
	regMu.RLock()
	f, ok := registry[name]
	regMu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("engines: unknown engine %q (have %v)", name, Names())
	}
	return f(cfg.WithDefaults(), h)
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
