// Package enginetest is test support for engine packages (engines/std, engines/gnet, ...): a
// recording line-echo Handler and helpers that start an engine and dial it over loopback. It
// holds the scaffolding of engine-specific tests only; the cases every engine must pass live in
// the conformance suite (engines/conformance), which has its own frame-speaking handler.
package enginetest

import (
	"bytes"
	"context"
	"maps"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/engines"
)

// wait is how long the helpers wait for an OnOpen or an OnClose before failing the test.
const wait = 10 * time.Second

// closedBuffer is the capacity of the queue behind WaitClosed.
const closedBuffer = 1000

// Handler consumes whole lines only (as the core consumes whole frames) and echoes them; a
// partial line stays with the engine. It records each connection's open, close count and close
// reason, and reports through the test's Errorf any call that breaks the seam's callback order
// (OnOpen first, no two calls for one connection at once, nothing after OnClose).
//
// The IDs of closed connections are queued for WaitClosed, up to 1000 not yet received: beyond
// that OnClose blocks, so a test that closes more connections than that must drain them.
type Handler struct {
	t      testing.TB
	opens  atomic.Int64
	closed chan uint64

	mu     sync.Mutex
	conns  map[uint64]engines.Conn // open, by ID
	state  map[uint64]int          // 1 open, 2 closed
	busy   map[uint64]bool         // inside a callback
	closes map[uint64]int          // OnClose calls, by ID
	errs   map[uint64]error        // OnClose reason, by ID
}

// NewHandler returns a Handler that reports callback-order violations to t.
func NewHandler(t testing.TB) *Handler {
	return &Handler{t: t, closed: make(chan uint64, closedBuffer), conns: map[uint64]engines.Conn{},
		state: map[uint64]int{}, busy: map[uint64]bool{}, closes: map[uint64]int{}, errs: map[uint64]error{}}
}

// enter checks that c is in state want and in no other callback, and marks it busy.
func (h *Handler) enter(c engines.Conn, want int, what string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.state[c.ID()] != want {
		h.t.Errorf("conn %d: %s in state %d (0 new, 1 open, 2 closed)", c.ID(), what, h.state[c.ID()])
	}
	if h.busy[c.ID()] {
		h.t.Errorf("conn %d: %s concurrent with another callback", c.ID(), what)
	}
	h.busy[c.ID()] = true
}

func (h *Handler) leave(c engines.Conn) {
	h.mu.Lock()
	h.busy[c.ID()] = false
	h.mu.Unlock()
}

// OnOpen records c as open.
func (h *Handler) OnOpen(c engines.Conn) {
	h.enter(c, 0, "OnOpen")
	defer h.leave(c)
	h.mu.Lock()
	h.conns[c.ID()] = c
	h.state[c.ID()] = 1
	h.mu.Unlock()
	h.opens.Add(1)
}

// OnData echoes every whole line in in and consumes them; the rest waits for more input.
func (h *Handler) OnData(c engines.Conn, in []byte) (int, error) {
	h.enter(c, 1, "OnData")
	defer h.leave(c)
	i := bytes.LastIndexByte(in, '\n')
	if i < 0 {
		return 0, nil
	}
	if err := c.Write(append([]byte(nil), in[:i+1]...)); err != nil {
		return 0, err
	}
	return i + 1, nil
}

// OnClose records the close and its reason, then queues c's ID for WaitClosed.
func (h *Handler) OnClose(c engines.Conn, err error) {
	h.enter(c, 1, "OnClose")
	defer h.leave(c)
	h.mu.Lock()
	h.closes[c.ID()]++
	h.errs[c.ID()] = err
	h.state[c.ID()] = 2
	delete(h.conns, c.ID())
	h.mu.Unlock()
	h.closed <- c.ID()
}

// Opens is the number of OnOpen calls so far.
func (h *Handler) Opens() int64 { return h.opens.Load() }

// Conn waits for the server side of client to open (the open connection whose RemoteAddr is
// client's local address) and returns it.
func (h *Handler) Conn(t testing.TB, client net.Conn) engines.Conn {
	t.Helper()
	want := client.LocalAddr().String()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		h.mu.Lock()
		for _, c := range h.conns {
			if c.RemoteAddr() == want {
				h.mu.Unlock()
				return c
			}
		}
		h.mu.Unlock()
	}
	t.Fatalf("no open connection with RemoteAddr %s after %v", want, wait)
	return nil
}

// WaitClosed waits for the next OnClose not yet received and returns that connection's ID.
func (h *Handler) WaitClosed(t testing.TB) uint64 {
	t.Helper()
	select {
	case id := <-h.closed:
		return id
	case <-time.After(wait):
		t.Fatalf("no OnClose within %v", wait)
		return 0
	}
}

// Reason is the error OnClose got for connection id (nil for a local Close, or if not closed).
func (h *Handler) Reason(id uint64) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.errs[id]
}

// Reasons returns a copy of every OnClose reason so far, by connection ID.
func (h *Handler) Reasons() map[uint64]error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.errs)
}

// Closes returns a copy of how many times OnClose ran, by connection ID.
func (h *Handler) Closes() map[uint64]int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.closes)
}

// Start builds the engine registered as name with cfg and h (the engine's package must be linked
// in, as it is in its own tests) and starts it. Cleanup shuts it down within 10 seconds and fails
// the test if that returns an error.
func Start(t testing.TB, name string, cfg engines.Config, h engines.Handler) engines.Engine {
	t.Helper()
	e, err := engines.New(name, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e
}

// Dial connects to e over TCP. Cleanup closes the connection.
func Dial(t testing.TB, e engines.Engine) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}
