package kit

import (
	"log/slog"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/engines"
)

// Gate is an engine's connection cap (engines.Config.MaxConns): it counts the connections open
// and refuses one past the cap before the handler sees it, writing Config.RefuseMessage to it
// without blocking and closing it. An engine admits at accept (Admit), lets go when the
// connection is closed (Leave), and reports Refused through engines.Counter.
type Gate struct {
	max     int64 // <= 0: no cap
	msg     []byte
	log     *slog.Logger
	open    atomic.Int64
	refused atomic.Uint64
	logged  atomic.Int64 // unix nanoseconds of the last refusal logged
}

// NewGate returns the gate for cfg's MaxConns and RefuseMessage.
func NewGate(cfg engines.Config, log *slog.Logger) *Gate {
	return &Gate{max: int64(cfg.MaxConns), msg: cfg.RefuseMessage, log: log}
}

// Admit counts one more open connection and reports true, or, at the cap, counts a refusal and
// reports false; the caller then refuses the connection (RefuseFD, RefuseConn, or its library's
// way of writing Message and closing).
func (g *Gate) Admit() bool {
	if g.max <= 0 {
		g.open.Add(1)
		return true
	}
	for {
		n := g.open.Load()
		if n >= g.max {
			g.refuse()
			return false
		}
		if g.open.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (g *Gate) refuse() {
	total := g.refused.Add(1)
	// One line a second at most: a crowd at the cap must not flood the log.
	now := time.Now().UnixNano()
	if last := g.logged.Load(); now-last >= int64(time.Second) && g.logged.CompareAndSwap(last, now) {
		g.log.Warn("connection refused: at the connection cap", "max_conns", g.max, "refused_total", total)
	}
}

// Leave counts an admitted connection closed.
func (g *Gate) Leave() { g.open.Add(-1) }

// Open is the number of admitted connections not yet closed.
func (g *Gate) Open() int64 { return g.open.Load() }

// Refused is the number of connections refused so far.
func (g *Gate) Refused() uint64 { return g.refused.Load() }

// Message is what a refused connection is sent (may be empty).
func (g *Gate) Message() []byte { return g.msg }

// RefuseFD writes the refuse message to the socket fd once, without waiting (what the socket
// does not take is dropped), and closes it.
func (g *Gate) RefuseFD(fd int) {
	g.send(fd)
	_ = unix.Close(fd)
}

// RefuseConn is RefuseFD for a socket the caller holds as a net.Conn (or anything with a raw
// descriptor): it writes the message without waiting and closes c.
func (g *Gate) RefuseConn(c interface {
	syscall.Conn
	Close() error
}) {
	if len(g.msg) > 0 {
		if rc, err := c.SyscallConn(); err == nil {
			_ = rc.Control(func(fd uintptr) { g.send(int(fd)) })
		}
	}
	_ = c.Close()
}

func (g *Gate) send(fd int) {
	if len(g.msg) > 0 {
		_ = unix.Sendto(fd, g.msg, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
	}
}
