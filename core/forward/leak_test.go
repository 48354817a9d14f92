package forward_test

import (
	"context"
	"io"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/forward"
)

// TestNoGoroutineLeak checks that Close leaves none of the workers, senders or keep-alive
// connections behind.
func TestNoGoroutineLeak(t *testing.T) {
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) { io.Copy(w, r.Body) })
	before := runtime.NumGoroutine()
	f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{
		1: {BackendURL: srv.URL, PoolSize: 8}, 2: {BackendURL: srv.URL, PoolSize: 8},
	}})
	if err != nil {
		t.Fatal(err)
	}
	n, err := forward.NewNotifier(forward.NotifyConfig{URLs: []string{srv.URL + "/notify"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
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
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}
