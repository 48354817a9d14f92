package forward_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/forward"
)

// sink is a notify target recording the batches it accepted.
type sink struct {
	mu      sync.Mutex
	batches [][]forward.Event
	posts   atomic.Int32
	// status, when set, answers each POST (attempt counts from 1); 0 accepts it.
	status func(attempt int32) int
}

func (s *sink) handler(t testing.TB) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		attempt := s.posts.Add(1)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("notify request %s with Content-Type %q", r.Method, r.Header.Get("Content-Type"))
		}
		var b forward.Batch
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			t.Errorf("notify body: %v", err)
			http.Error(w, err.Error(), 400)
			return
		}
		if s.status != nil {
			if code := s.status(attempt); code != 0 {
				w.WriteHeader(code)
				return
			}
		}
		s.mu.Lock()
		s.batches = append(s.batches, b.Events)
		s.mu.Unlock()
	}
}

func (s *sink) sizes() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for _, b := range s.batches {
		out = append(out, len(b))
	}
	return out
}

func (s *sink) events() []forward.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []forward.Event
	for _, b := range s.batches {
		out = append(out, b...)
	}
	return out
}

func newNotifier(t testing.TB, cfg forward.NotifyConfig) *forward.Notifier {
	t.Helper()
	cfg.Logger = quiet
	n, err := forward.NewNotifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Close(ctx)
	})
	return n
}

func event(i int) forward.Event {
	typ := forward.EventConnect
	reason := ""
	if i%2 == 1 {
		typ, reason = forward.EventDisconnect, "IDLE_TIMEOUT"
	}
	return forward.Event{Type: typ, App: "demo", Device: fmt.Sprint("d-", i/2), User: "u", Conn: uint64(i),
		Node: "gw-1", Gen: 1<<60 + uint64(i/2), Reason: reason, At: 1_700_000_000_000 + int64(i)}
}

func TestNotifyBatchBySize(t *testing.T) {
	var s sink
	srv := backend(t, s.handler(t))
	n := newNotifier(t, forward.NotifyConfig{URLs: []string{srv.URL}, BatchSize: 10, FlushInterval: time.Hour})
	for i := range 25 {
		n.Notify(event(i))
	}
	waitFor(t, "two full batches", func() bool { return len(s.sizes()) == 2 })
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.sizes()); got != "[10 10 5]" {
		t.Fatalf("batch sizes %s, want [10 10 5] (the last flushed by Close)", got)
	}
	for i, ev := range s.events() {
		if ev != event(i) {
			t.Fatalf("event %d: got %+v, want %+v", i, ev, event(i))
		}
	}
	st := n.Stats()[0]
	if st.Sent != 25 || st.Batches != 3 || st.Failed != 0 || st.Dropped != 0 || st.Retries != 0 || st.Buffered != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNotifyBatchByTime(t *testing.T) {
	var s sink
	srv := backend(t, s.handler(t))
	n := newNotifier(t, forward.NotifyConfig{URLs: []string{srv.URL}, BatchSize: 100, FlushInterval: 20 * time.Millisecond})
	for i := range 3 {
		n.Notify(event(i))
	}
	waitFor(t, "a batch flushed by time", func() bool { return len(s.sizes()) == 1 })
	n.Notify(event(3))
	waitFor(t, "a second batch flushed by time", func() bool { return len(s.sizes()) == 2 })
	if got := fmt.Sprint(s.sizes()); got != "[3 1]" {
		t.Fatalf("batch sizes %s, want [3 1]", got)
	}
}

func TestNotifyRetry(t *testing.T) {
	for _, tc := range []struct {
		name                          string
		status                        func(int32) int
		maxRetries                    int
		posts                         int32
		sent, failed, retries, batchs uint64
	}{
		{"recovers", func(a int32) int { return map[int32]int{1: 503, 2: 500}[a] }, 0, 3, 4, 0, 2, 1},
		{"429 retried", func(a int32) int { return map[int32]int{1: 429}[a] }, 0, 2, 4, 0, 1, 1},
		{"gives up", func(int32) int { return 503 }, 2, 3, 0, 4, 2, 0},
		{"no retries", func(int32) int { return 503 }, -1, 1, 0, 4, 0, 0},
		{"400 is final", func(int32) int { return 400 }, 0, 1, 0, 4, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sink{status: tc.status}
			srv := backend(t, s.handler(t))
			n := newNotifier(t, forward.NotifyConfig{URLs: []string{srv.URL}, BatchSize: 4, MaxRetries: tc.maxRetries, RetryBackoff: time.Millisecond})
			for i := range 4 {
				n.Notify(event(i))
			}
			if err := n.Close(context.Background()); err != nil {
				t.Fatal(err)
			}
			st := n.Stats()[0]
			if s.posts.Load() != tc.posts || st.Sent != tc.sent || st.Failed != tc.failed || st.Retries != tc.retries || st.Batches != tc.batchs {
				t.Fatalf("posts %d, stats %+v; want posts %d sent %d failed %d retries %d batches %d",
					s.posts.Load(), st, tc.posts, tc.sent, tc.failed, tc.retries, tc.batchs)
			}
		})
	}
}

func TestNotifyDropWhenFull(t *testing.T) {
	release := make(chan struct{})
	var s sink
	h := s.handler(t)
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) {
		<-release
		h(w, r)
	})
	n := newNotifier(t, forward.NotifyConfig{URLs: []string{srv.URL}, BatchSize: 1, BufferLen: 4})
	start := time.Now()
	for i := range 100 {
		n.Notify(event(i)) // never blocks, though the target is stuck
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("100 Notify calls took %v", el)
	}
	close(release)
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.Notify(event(100)) // after Close: dropped
	st := n.Stats()[0]
	// Four buffered, at most two more in the sender's hands (the one it posts, one it took
	// while that POST was starting), the rest dropped.
	if st.Sent+st.Dropped != 101 || st.Sent < 4 || st.Sent > 6 || st.Failed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNotifyCloseDeadline(t *testing.T) {
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) { hang(r, 10*time.Second) })
	n := newNotifier(t, forward.NotifyConfig{URLs: []string{srv.URL}, BatchSize: 2})
	for i := range 5 {
		n.Notify(event(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := n.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want DeadlineExceeded", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Close took %v past its deadline", el)
	}
	if st := n.Stats()[0]; st.Failed != 5 || st.Sent != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestNotifierTargets(t *testing.T) {
	var a, b sink
	sa, sb := backend(t, a.handler(t)), backend(t, b.handler(t))
	n := newNotifier(t, forward.NotifyConfig{URLs: []string{sb.URL, sa.URL, sb.URL}, FlushInterval: time.Millisecond})
	n.Notify(event(0))
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	st := n.Stats()
	if len(st) != 2 || st[0].URL > st[1].URL || st[0].Sent != 1 || st[1].Sent != 1 {
		t.Fatalf("stats %+v", st)
	}
	if len(a.events()) != 1 || len(b.events()) != 1 {
		t.Fatal("each target gets each event once")
	}
	if _, err := forward.NewNotifier(forward.NotifyConfig{URLs: []string{"localhost:80"}}); err == nil {
		t.Fatal("NewNotifier accepted a relative URL")
	}
	// No target: Notify is a no-op.
	none := newNotifier(t, forward.NotifyConfig{})
	none.Notify(event(0))
	if len(none.Stats()) != 0 {
		t.Fatal("targets without URLs")
	}
}

// BenchmarkNotify is the connection path's cost of one event: a non-blocking hand-off (the
// sink drops nothing it can keep up with; what it cannot is dropped and counted).
func BenchmarkNotify(b *testing.B) {
	srv := backend(b, func(w http.ResponseWriter, r *http.Request) {})
	n := newNotifier(b, forward.NotifyConfig{URLs: []string{srv.URL}})
	e := event(1)
	b.ReportAllocs()
	for b.Loop() {
		n.Notify(e)
	}
	b.StopTimer()
	st := n.Stats()[0]
	b.ReportMetric(float64(st.Dropped)/float64(b.N), "dropped/op")
}
