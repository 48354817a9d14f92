package forward_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
)

// The gateway's side: submit each REQUEST frame, answer with the Response's code, msg and body,
// or with the *Error's code when Submit refuses.
func Example() {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_, _ = fmt.Fprintf(w, "%s from %s (trace %s)", body, r.Header.Get("Pushwire-Device"), r.Header.Get("Pushwire-Meta-Trace"))
	}))
	defer backend.Close()

	f, err := forward.New(forward.Config{Biz: map[uint16]forward.Biz{
		1: {Name: "chat", BackendURL: backend.URL, PoolSize: 4, QueueLen: 64},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	f.Start()
	done := make(chan struct{})
	err = f.Submit(&forward.Request{
		App: "demo", Device: "dev-1", User: "u-1", Biz: 1, Conn: 7, Node: "gw-1", Seq: 42,
		Meta: frame.AppendMetaString(nil, "trace", "t-1"),
		Body: []byte("hello"),
		Done: func(r forward.Response) {
			fmt.Printf("RESPONSE seq 42: %v %q\n", r.Code, r.Body)
			close(done)
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	<-done

	var fe *forward.Error
	if err := f.Submit(&forward.Request{Biz: 9}); errors.As(err, &fe) {
		fmt.Printf("RESPONSE: %v %q\n", fe.Code, fe.Msg)
	}
	fmt.Println(f.Close(context.Background()))
	// Output:
	// RESPONSE seq 42: OK "hello from dev-1 (trace t-1)"
	// RESPONSE: UNKNOWN_BIZ "unknown biz"
	// <nil>
}
