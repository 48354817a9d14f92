package forward_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
)

// TestMain fails the package if any test leaves a goroutine behind: Close must stop the workers,
// the senders and the keep-alive connections they opened.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestLifecycle: constructors start nothing; Close without Start answers what was queued and
// counts what was buffered; Start after Close and a second Close are harmless.
func TestLifecycle(t *testing.T) {
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{1: {BackendURL: srv.URL, PoolSize: 8}}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := forward.NewNotifier(forward.NotifyConfig{URLs: []string{srv.URL + "/notify"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, goleak.IgnoreCurrent()) // New and NewNotifier started nothing
	r := newResult()
	if err := f.Submit(&forward.Request{Biz: 1, Body: []byte("x"), Done: r.done}); err != nil {
		t.Fatal(err)
	}
	n.Notify(event(1))
	for range 2 {
		if err := f.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := n.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if resp := r.wait(t, 5*time.Second); resp.Code != frame.CodeBackendError || resp.Msg != forward.MsgShuttingDown {
		t.Fatalf("queued request answered %+v", resp)
	}
	if st := n.Stats(); st[0].Dropped != 1 {
		t.Fatalf("notifier stats %+v", st)
	}
	f.Start()
	n.Start()
	if err := f.Submit(&forward.Request{Biz: 1}); err != forward.ErrClosed {
		t.Fatalf("Submit after Close: %v", err)
	}
}

// TestNoGoroutineLeak runs requests and notifications through started pools and senders, then
// closes them; TestMain checks that nothing is left.
func TestNoGoroutineLeak(t *testing.T) {
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{
		1: {BackendURL: srv.URL, PoolSize: 8}, 2: {BackendURL: srv.URL, PoolSize: 8},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	n, err := forward.NewNotifier(forward.NotifyConfig{URLs: []string{srv.URL + "/notify"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	for i := range 50 {
		n.Notify(event(i))
		if err := f.Submit(&forward.Request{Biz: uint16(1 + i%2), Body: []byte("x")}); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	srv.CloseClientConnections()
}
