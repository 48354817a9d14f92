// Package kit is what every engine does at the seam, written once: the inbound buffer that keeps
// a partial frame across reads and checks the handler's consumed count (Reader, Input), the
// bounded write queue and its byte accounting (Queue), the downlink task group of writer workers
// (Group), the connection cap and its refusals (Gate), accept back-off (Backoff), the context
// slot (Slot), listening with SO_REUSEADDR (Listen), socket-address conversion (SockaddrToAddr)
// and typed access to options that engines.New has validated (Int, Duration, Bool). An engine
// package keeps only the glue to its I/O library.
package kit

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
)

// Slot is the seam's per-connection context slot; embed it in a connection to give it Context
// and SetContext.
type Slot struct{ p atomic.Pointer[any] }

// Context returns what SetContext stored, nil before.
func (s *Slot) Context() any {
	if p := s.p.Load(); p != nil {
		return *p
	}
	return nil
}

// SetContext stores v; safe from any goroutine.
func (s *Slot) SetContext(v any) { s.p.Store(&v) }

// Workers is the size of a writer task group: cfg.Workers, or 2×GOMAXPROCS when it is zero.
func Workers(cfg engines.Config) int {
	if cfg.Workers > 0 {
		return cfg.Workers
	}
	return 2 * runtime.GOMAXPROCS(0)
}

// Int returns the int option key of cfg. engines.New has validated it and filled in its default,
// so a failure here is a declaration out of step with the engine's code: it panics.
func Int(cfg engines.Config, key string) int {
	n, err := strconv.Atoi(cfg.Options[key])
	if err != nil {
		panic(fmt.Sprintf("kit: option %s=%q not validated: %v", key, cfg.Options[key], err))
	}
	return n
}

// Duration returns the duration option key of cfg (see Int).
func Duration(cfg engines.Config, key string) time.Duration {
	d, err := time.ParseDuration(cfg.Options[key])
	if err != nil {
		panic(fmt.Sprintf("kit: option %s=%q not validated: %v", key, cfg.Options[key], err))
	}
	return d
}

// Bool returns the bool option key of cfg (see Int).
func Bool(cfg engines.Config, key string) bool {
	b, err := strconv.ParseBool(cfg.Options[key])
	if err != nil {
		panic(fmt.Sprintf("kit: option %s=%q not validated: %v", key, cfg.Options[key], err))
	}
	return b
}

// Listen binds a TCP listener on addr with SO_REUSEADDR (a restart must not fail on the
// previous process's TIME_WAIT sockets).
func Listen(addr string) (*net.TCPListener, error) {
	lc := net.ListenConfig{Control: ReuseAddr}
	ln, err := lc.Listen(context.Background(), "tcp", addr)
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}

// ReuseAddr is a net.ListenConfig.Control that sets SO_REUSEADDR.
func ReuseAddr(_, _ string, rc syscall.RawConn) error {
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	}); err != nil {
		return err
	}
	return serr
}

// SockaddrToAddr converts a TCP socket address to a *net.TCPAddr (nil for other families). An
// IPv6 zone is the interface's name where it is known, else its index.
func SockaddrToAddr(sa unix.Sockaddr) net.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(append([]byte(nil), sa.Addr[:]...)), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifi.Name
			} else {
				a.Zone = strconv.Itoa(int(sa.ZoneId))
			}
		}
		return a
	}
	return nil
}

// Backoff paces retries after accept errors (EMFILE, ENFILE): the first wait is Min, each
// next one doubles, up to Max. The zero value waits 5ms doubling to 1s, as net/http does.
type Backoff struct {
	Min, Max time.Duration
	d        time.Duration
}

// Next returns the next wait.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 5 * time.Millisecond
	}
	if hi <= 0 {
		hi = time.Second
	}
	if b.d == 0 {
		b.d = lo
	} else {
		b.d = min(2*b.d, hi)
	}
	return b.d
}

// Reset starts the next failure over at Min.
func (b *Backoff) Reset() { b.d = 0 }

// Wait waits the next wait, or until stop is closed; it reports whether the wait ran out.
func (b *Backoff) Wait(stop <-chan struct{}) bool {
	t := time.NewTimer(b.Next())
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// WaitOr waits for wait to return. If ctx ends first it calls abort (close what is left without
// flushing), waits on, and returns ctx.Err(). Shutdown uses it after closing every connection.
func WaitOr(ctx context.Context, wait func(), abort func()) error {
	done := make(chan struct{})
	go func() {
		wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		abort()
		<-done
		return ctx.Err()
	}
}
