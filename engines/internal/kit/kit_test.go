package kit

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/pushwire/pushwire/engines"
)

// lineHandler consumes whole lines and records what it was offered.
type lineHandler struct {
	offered [][]byte
	lines   []string
	consume func(in []byte) (int, error) // overrides the line rule when set
}

func (h *lineHandler) OnOpen(engines.Conn)         {}
func (h *lineHandler) OnClose(engines.Conn, error) {}
func (h *lineHandler) OnData(_ engines.Conn, in []byte) (int, error) {
	h.offered = append(h.offered, bytes.Clone(in))
	if h.consume != nil {
		return h.consume(in)
	}
	i := bytes.LastIndexByte(in, '\n')
	if i < 0 {
		return 0, nil
	}
	for _, l := range bytes.SplitAfter(in[:i+1], []byte("\n")) {
		if len(l) > 0 {
			h.lines = append(h.lines, string(l))
		}
	}
	return i + 1, nil
}

func newTestReader(h engines.Handler, size, maxFrame int) *Reader {
	return NewReader(engines.Config{ReadBufferSize: size, MaxFrame: maxFrame}, h)
}

func TestFeedKeepsTailAndReleases(t *testing.T) {
	h := &lineHandler{}
	r := newTestReader(h, 16, 64)
	var in Input
	if err := r.Feed(nil, &in, []byte("ab\ncd"), nil); err != nil {
		t.Fatal(err)
	}
	if in.Pending() != 2 {
		t.Fatalf("pending %d, want 2", in.Pending())
	}
	if err := r.Feed(nil, &in, []byte("e\nf"), nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Feed(nil, &in, []byte("g\n"), nil); err != nil {
		t.Fatal(err)
	}
	if got := h.lines; len(got) != 3 || got[0] != "ab\n" || got[1] != "cde\n" || got[2] != "fg\n" {
		t.Fatalf("lines %q", got)
	}
	if in.p != nil {
		t.Fatal("buffer kept after everything was consumed")
	}
}

func TestGrowAndShrink(t *testing.T) {
	h := &lineHandler{}
	r := newTestReader(h, 16, 256)
	var in Input
	long := append(bytes.Repeat([]byte("x"), 100), '\n')
	for i := 0; i < len(long)-1; i += 10 { // a 101-byte line in pieces: the buffer grows
		if err := r.Feed(nil, &in, long[i:min(i+10, len(long)-1)], nil); err != nil {
			t.Fatal(err)
		}
	}
	if c := cap(*in.p); c < 100 || c > 256 {
		t.Fatalf("grown to cap %d, want 100..256", c)
	}
	if err := r.Feed(nil, &in, []byte("\nyy"), nil); err != nil { // end the line, keep a small tail
		t.Fatal(err)
	}
	if in.Pending() != 2 || cap(*in.p) != 16 {
		t.Fatalf("after the large frame: pending %d cap %d, want 2 and back to 16", in.Pending(), cap(*in.p))
	}
}

func TestWindowsAndLimits(t *testing.T) {
	// Offered at most MaxFrame bytes at a time; a full window consumed in part moves on.
	h := &lineHandler{}
	r := newTestReader(h, 16, 8)
	n, err := r.Offer(nil, []byte("aaa\nbbb\nccc\n"), nil)
	if err != nil || n != 12 {
		t.Fatalf("offer: %d, %v", n, err)
	}
	for _, o := range h.offered {
		if len(o) > 8 {
			t.Fatalf("offered %d bytes with MaxFrame 8", len(o))
		}
	}
	// Nothing consumed of a full window: ErrFrameTooLarge, also through Feed and Commit.
	var in Input
	if err := r.Feed(nil, &in, []byte("12345678"), nil); !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("feed: %v", err)
	}
	in = Input{}
	if err := r.Feed(nil, &in, []byte("1234"), nil); err != nil {
		t.Fatal(err)
	}
	if err := r.Feed(nil, &in, []byte("5678"), nil); !errors.Is(err, engines.ErrFrameTooLarge) {
		t.Fatalf("feed of a pending frame to MaxFrame: %v", err)
	}
	// A count out of range: ErrBadConsume.
	for _, bad := range []int{-1, 9} {
		h := &lineHandler{consume: func([]byte) (int, error) { return bad, nil }}
		if _, err := newTestReader(h, 16, 64).Offer(nil, []byte("x\n"), nil); !errors.Is(err, engines.ErrBadConsume) {
			t.Errorf("consumed %d: %v, want ErrBadConsume", bad, err)
		}
	}
	// The handler's error is returned as is; stopped stops after the window.
	herr := errors.New("quit")
	h2 := &lineHandler{consume: func([]byte) (int, error) { return 0, herr }}
	if _, err := newTestReader(h2, 16, 64).Offer(nil, []byte("x"), nil); err != herr {
		t.Fatalf("handler error: %v", err)
	}
	h3 := &lineHandler{}
	if n, err := newTestReader(h3, 16, 4).Offer(nil, []byte("a\nb\nc\n"), func() bool { return true }); err != nil || len(h3.offered) != 1 || n != 4 {
		t.Fatalf("stopped: %d offers, consumed %d, %v", len(h3.offered), n, err)
	}
}

func TestSpaceAndCommit(t *testing.T) {
	h := &lineHandler{}
	r := newTestReader(h, 8, 64)
	r.Keep = true
	var in Input
	read := func(s string) {
		t.Helper()
		for len(s) > 0 {
			sp := r.Space(&in)
			n := copy(sp, s)
			s = s[n:]
			if err := r.Commit(nil, &in, n, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	read("hello world, a line longer than the buffer\nok\n")
	if len(h.lines) != 2 || h.lines[1] != "ok\n" {
		t.Fatalf("lines %q", h.lines)
	}
	if in.p == nil || cap(*in.p) != 8 || in.Pending() != 0 {
		t.Fatal("Keep: the emptied buffer should stay, back at Size")
	}
}

func TestQueue(t *testing.T) {
	var q Queue
	if err := q.Push([]byte("ab"), []byte("cd"), 5, 0); err != nil {
		t.Fatal(err)
	}
	if err := q.Push([]byte("ef"), nil, 5, 0); !errors.Is(err, engines.ErrQueueFull) {
		t.Fatalf("over the bound: %v", err)
	}
	if err := q.Push([]byte("e"), nil, 5, 1); !errors.Is(err, engines.ErrQueueFull) {
		t.Fatalf("over the bound with held bytes: %v", err)
	}
	if err := q.Push(nil, nil, 5, 0); err != nil {
		t.Fatal(err)
	}
	bufs := q.Take()
	if len(bufs) != 2 || q.Queued() != 4 {
		t.Fatalf("took %d, queued %d", len(bufs), q.Queued())
	}
	rest := Consume(bufs, 3)
	if len(rest) != 1 || string(rest[0]) != "d" {
		t.Fatalf("rest %q", rest)
	}
	q.Written(3)
	q.Requeue(rest)
	if q.Empty() || q.Queued() != 1 {
		t.Fatal("requeue")
	}
	var o Outbox
	if wake, err := o.Push([]byte("x"), nil, 10); !wake || err != nil {
		t.Fatalf("first push: %v %v", wake, err)
	}
	if wake, _ := o.Push([]byte("y"), nil, 10); wake {
		t.Fatal("second push woke a busy writer")
	}
	o.Closed = true
	if _, err := o.Push([]byte("z"), nil, 10); !errors.Is(err, engines.ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}

func TestGate(t *testing.T) {
	g := NewGate(engines.Config{MaxConns: 2, RefuseMessage: []byte("bye")}, slog.Default())
	for i := range 2 {
		if !g.Admit() {
			t.Fatalf("admission %d refused under the cap", i)
		}
	}
	if g.Admit() {
		t.Fatal("admitted past the cap")
	}
	g.Leave()
	if !g.Admit() || g.Refused() != 1 || g.Open() != 2 {
		t.Fatalf("open %d refused %d", g.Open(), g.Refused())
	}
	free := NewGate(engines.Config{}, slog.Default())
	for range 1000 {
		if !free.Admit() {
			t.Fatal("no cap refused")
		}
	}
}

func TestBackoff(t *testing.T) {
	b := Backoff{Min: time.Millisecond, Max: 4 * time.Millisecond}
	var got []time.Duration
	for range 4 {
		got = append(got, b.Next())
	}
	if got[0] != time.Millisecond || got[2] != 4*time.Millisecond || got[3] != 4*time.Millisecond {
		t.Fatalf("%v", got)
	}
	long := Backoff{Min: time.Hour}
	stop := make(chan struct{})
	close(stop)
	if long.Wait(stop) {
		t.Fatal("Wait ran out with stop closed")
	}
}
