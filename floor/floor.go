// Package floor is the yardstick every engine is measured against: a minimal pushwire server with
// no engine library, built on raw epoll and write(2) through golang.org/x/sys/unix.
//
// It speaks just enough of the protocol (docs/protocol.md) for the workbench's phases: LOGIN is
// answered LOGIN_ACK without verifying the token (the device and app come from the LOGIN's meta),
// PING PONG, JOIN and LEAVE their RESPONSE, REQUEST a RESPONSE UNKNOWN_BIZ (the floor forwards to
// no business), and the push API (unicast, group, broadcast) and membership API of the gateway
// deliver PUSH frames. There are no timeouts, no rate limits, no acknowledged pushes, no users and
// no cluster: what is left is what any server must do to hold connections and push to them.
//
// Shape:
//
//   - One non-blocking listening socket (SO_REUSEADDR, backlog 4096) watched by event loop 0,
//     which accepts (accept4, SOCK_NONBLOCK) and hands connections out round-robin to the loops.
//   - One event loop goroutine per CPU, each with its own epoll instance and its own table of
//     connections: a plain slice indexed by file descriptor, touched only by that loop. A loop
//     reads into one buffer of its own; a connection keeps only the bytes of a partial frame.
//   - Level-triggered epoll. EPOLLIN is read once per wake-up and epoll reports the socket again
//     while data is left, so a loop is fair across connections and never needs the extra read that
//     edge triggering takes to see EAGAIN. EPOLLOUT is armed only while a connection has bytes
//     queued, so idle connections never wake a loop for writability.
//   - Writes go straight to the socket from whoever sends (a loop's replies, the push API's
//     handler goroutine) under the connection's lock. What the socket does not take (EAGAIN, a
//     short write) is appended to the connection's pending buffer, EPOLLOUT is armed, and the
//     owning loop flushes the whole buffer in one write when the socket is writable: several
//     frames queued to one connection go out together. Over WriteQueue bytes pending, the
//     connection is closed as a slow consumer.
//   - A push is encoded once; every target gets the same bytes with its own PUSH seq (the protocol
//     wants increasing seqs per connection) patched into the header just before its write.
//   - Only a connection's own loop closes its descriptor, so a descriptor number is never reused
//     under another goroutine's feet: others shut the socket down and the loop sees the EOF.
//
// Lock order: registry.mu, then conn.mu.
package floor

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/procstats"
)

// Defaults of Config.
const (
	DefaultHeartbeat        = 60 * time.Second
	DefaultWriteQueue       = 256 << 10
	DefaultMaxGroupsPerConn = 256
	listenBacklog           = 4096
)

// App is an application whose business servers may call the push API.
type App struct {
	ID      string
	PushKey string
}

// Config configures a floor server. The zero value of every field but Listen and Apps works.
type Config struct {
	// Node is the instance ID told to clients in LOGIN_ACK and served in /v1/stats. Default
	// "floor".
	Node string
	// Listen is the TCP address clients connect to, host:port (port 0: any free port).
	Listen string
	// Apps are the applications: the push key of each authenticates the push API. At least one.
	Apps []App
	// Heartbeat is the interval told to clients in LOGIN_ACK (meta hb, whole seconds). Default
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// MaxBody is the largest frame body accepted and pushed. Default frame.DefaultMaxBody; at
	// most frame.MaxBodyLimit.
	MaxBody int
	// WriteQueue is the bytes a connection may have pending before it is closed as a slow
	// consumer. Default DefaultWriteQueue.
	WriteQueue int
	// Loops is the number of event loops. Default runtime.NumCPU().
	Loops int
	// MaxGroupsPerConn bounds the groups one connection may JOIN (the membership API is not
	// bounded). Default DefaultMaxGroupsPerConn; negative: no limit.
	MaxGroupsPerConn int
	// Logger receives the server's log. Default slog.Default().
	Logger *slog.Logger
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("floor: server closed")

// check validates c and applies the defaults, naming the field of each error.
func (c *Config) check() error {
	if c.Node == "" {
		c.Node = "floor"
	}
	if c.Listen == "" {
		return errors.New("floor: Listen: an address host:port is required")
	}
	if len(c.Apps) == 0 {
		return errors.New("floor: Apps: at least one app with a push key is required")
	}
	seen := map[string]bool{}
	for i, a := range c.Apps {
		switch {
		case a.ID == "":
			return fmt.Errorf("floor: Apps[%d]: id is empty", i)
		case a.PushKey == "":
			return fmt.Errorf("floor: Apps[%d] (%s): push key is empty", i, a.ID)
		case seen["k"+a.PushKey]:
			return fmt.Errorf("floor: Apps[%d] (%s): push key used by another app", i, a.ID)
		case seen["a"+a.ID]:
			return fmt.Errorf("floor: Apps[%d]: id %q repeated", i, a.ID)
		}
		seen["k"+a.PushKey], seen["a"+a.ID] = true, true
	}
	switch {
	case c.Heartbeat < 0:
		return fmt.Errorf("floor: Heartbeat %v: must not be negative", c.Heartbeat)
	case c.Heartbeat == 0:
		c.Heartbeat = DefaultHeartbeat
	}
	switch {
	case c.MaxBody < 0 || c.MaxBody > frame.MaxBodyLimit:
		return fmt.Errorf("floor: MaxBody %d: want 0..%d bytes", c.MaxBody, frame.MaxBodyLimit)
	case c.MaxBody == 0:
		c.MaxBody = frame.DefaultMaxBody
	}
	switch {
	case c.WriteQueue < 0:
		return fmt.Errorf("floor: WriteQueue %d: must not be negative", c.WriteQueue)
	case c.WriteQueue == 0:
		c.WriteQueue = DefaultWriteQueue
	}
	switch {
	case c.Loops < 0:
		return fmt.Errorf("floor: Loops %d: must not be negative", c.Loops)
	case c.Loops == 0:
		c.Loops = runtime.NumCPU()
	}
	if c.MaxGroupsPerConn == 0 {
		c.MaxGroupsPerConn = DefaultMaxGroupsPerConn
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server is a floor server. New, then Start, then Close.
type Server struct {
	cfg  Config
	log  *slog.Logger
	lim  frame.Limits
	hb   string            // LOGIN_ACK's meta hb
	keys map[string]string // push key → app ID
	reg  registry

	lfd   int // the listening socket; -1 when closed
	addr  net.Addr
	loops []*loop
	rr    atomic.Uint32 // round-robin counter of accepted connections
	wg    sync.WaitGroup

	mu       sync.Mutex // Start and Close
	started  bool
	closed   bool
	stopping atomic.Bool

	connSeq atomic.Uint64 // connection IDs
	msgSeq  atomic.Uint64 // push message IDs

	conns    atomic.Int64 // open connections
	sessions atomic.Int64 // logged in
	closes   atomic.Int64 // connections closed (by the peer or the server)
	pushes   atomic.Int64 // push API calls served
	queued   atomic.Int64 // writes the socket did not wholly take at once (EAGAIN or short)

	slowConsumers  atomic.Int64
	protocolErrors atomic.Int64
	start          time.Time

	meter procstats.Meter // the process's figures, less what forced collections cost
}

// New checks cfg and returns a server that is not listening yet.
func New(cfg Config) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger,
		lim:   frame.Limits{MaxBody: cfg.MaxBody},
		hb:    strconv.Itoa(int((cfg.Heartbeat + time.Second - 1) / time.Second)),
		keys:  make(map[string]string, len(cfg.Apps)),
		lfd:   -1,
		start: time.Now(),
	}
	s.reg.apps = make(map[string]*appState, len(cfg.Apps))
	for _, a := range cfg.Apps {
		s.keys[a.PushKey] = a.ID
		s.reg.apps[a.ID] = newAppState(a.ID)
	}
	return s, nil
}

// Config returns the configuration with its defaults applied.
func (s *Server) Config() Config { return s.cfg }

// Start binds the listener and starts the event loops.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return errors.New("floor: already started")
	}
	lfd, addr, err := listen(s.cfg.Listen)
	if err != nil {
		return err
	}
	s.lfd, s.addr = lfd, addr
	for i := range s.cfg.Loops {
		lp, err := newLoop(s, i)
		if err != nil {
			for _, l := range s.loops {
				l.closeFds()
			}
			s.loops = nil
			_ = unix.Close(lfd)
			s.lfd = -1
			return err
		}
		s.loops = append(s.loops, lp)
	}
	if err := s.loops[0].watchListener(); err != nil {
		for _, l := range s.loops {
			l.closeFds()
		}
		s.loops = nil
		_ = unix.Close(lfd)
		s.lfd = -1
		return fmt.Errorf("floor: epoll: the listener: %w", err)
	}
	for _, lp := range s.loops {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			lp.run()
		}()
	}
	s.started = true
	return nil
}

// Addr is the address clients connect to (nil before Start).
func (s *Server) Addr() net.Addr { return s.addr }

// Close stops the event loops, then closes the listener and every connection. It waits for the
// loops to end.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if !s.started {
		return nil
	}
	s.stopping.Store(true)
	for _, lp := range s.loops {
		lp.wake()
	}
	s.wg.Wait()
	_ = unix.Close(s.lfd)
	s.lfd = -1
	n := 0
	for _, lp := range s.loops {
		n += lp.closeAll()
		lp.closeFds()
	}
	s.log.Info("floor closed", "conns", n)
	return nil
}

// listen opens the non-blocking listening socket of addr.
func listen(addr string) (int, net.Addr, error) {
	ta, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return -1, nil, fmt.Errorf("floor: Listen %q: %w", addr, err)
	}
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ip4 := ta.IP.To4(); ip4 != nil || ta.IP == nil {
		a := &unix.SockaddrInet4{Port: ta.Port}
		if ip4 != nil {
			copy(a.Addr[:], ip4)
		}
		sa = a
	} else {
		a := &unix.SockaddrInet6{Port: ta.Port}
		copy(a.Addr[:], ta.IP.To16())
		sa, family = a, unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
	if err != nil {
		return -1, nil, fmt.Errorf("floor: Listen %s: socket: %w", addr, err)
	}
	fail := func(what string, err error) (int, net.Addr, error) {
		_ = unix.Close(fd)
		return -1, nil, fmt.Errorf("floor: Listen %s: %s: %w", addr, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fail("SO_REUSEADDR", err)
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail("bind", err)
	}
	if err := unix.Listen(fd, listenBacklog); err != nil {
		return fail("listen", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail("getsockname", err)
	}
	var out *net.TCPAddr
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		out = &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
	case *unix.SockaddrInet6:
		out = &net.TCPAddr{IP: net.IP(append([]byte(nil), a.Addr[:]...)), Port: a.Port}
	default:
		return fail("getsockname", fmt.Errorf("unexpected address %T", got))
	}
	return fd, out, nil
}
