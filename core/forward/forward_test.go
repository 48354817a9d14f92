package forward_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
)

// backend starts a real HTTP server running h, closed at the end of the test.
func backend(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// newForwarder starts a forwarder and closes it at the end of the test.
func newForwarder(t testing.TB, bizs map[uint16]forward.Biz) *forward.Forwarder {
	t.Helper()
	f, err := forward.New(forward.Config{Biz: bizs, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = f.Close(ctx)
	})
	return f
}

// result collects the answers of submitted requests and checks each comes exactly once.
type result struct {
	calls atomic.Int32
	ch    chan forward.Response
}

func newResult() *result { return &result{ch: make(chan forward.Response, 1)} }

func (r *result) done(resp forward.Response) {
	if r.calls.Add(1) == 1 {
		r.ch <- resp
	}
}

func (r *result) wait(t testing.TB, within time.Duration) forward.Response {
	t.Helper()
	select {
	case resp := <-r.ch:
		return resp
	case <-time.After(within):
		t.Fatalf("no answer within %v", within)
		return forward.Response{}
	}
}

func submit(t testing.TB, f *forward.Forwarder, biz uint16, body string) *result {
	t.Helper()
	r := newResult()
	if err := f.Submit(&forward.Request{Biz: biz, Body: []byte(body), Done: r.done}); err != nil {
		t.Fatalf("submit: %v", err)
	}
	return r
}

// quiet discards the logs of the failures the tests provoke.
var quiet = slog.New(slog.DiscardHandler)

func TestConfigValidate(t *testing.T) {
	ok := forward.Biz{BackendURL: "http://127.0.0.1:7090/echo"}
	with := func(fn func(*forward.Biz)) forward.Biz { b := ok; fn(&b); return b }
	for _, tc := range []struct {
		name string
		id   uint16
		biz  forward.Biz
		want string // "" = valid
	}{
		{"defaults", 1, ok, ""},
		{"no backend", 3, forward.Biz{}, "forward: biz 3: backend_url is required"},
		{"relative backend", 3, forward.Biz{BackendURL: "x"}, `forward: biz 3: backend_url "x": must be an absolute http(s) URL`},
		{"ftp backend", 3, forward.Biz{BackendURL: "ftp://h/x"}, `backend_url "ftp://h/x": must be an absolute http(s) URL`},
		{"biz 0", 0, ok, "forward: biz 0: biz 0 is the connection itself"},
		{"bad notify", 2, with(func(b *forward.Biz) { b.NotifyURL = "/notify" }), `forward: biz 2: notify_url "/notify"`},
		{"negative timeout", 2, with(func(b *forward.Biz) { b.Timeout = -time.Second }), "forward: biz 2: timeout -1s: must be positive"},
		{"negative pool", 2, with(func(b *forward.Biz) { b.PoolSize = -1 }), "forward: biz 2: pool_size -1: must be 1..4096"},
		{"huge pool", 2, with(func(b *forward.Biz) { b.PoolSize = 1 << 20 }), "pool_size 1048576"},
		{"negative queue", 2, with(func(b *forward.Biz) { b.QueueLen = -5 }), "forward: biz 2: queue_len -5"},
		{"huge max body", 2, with(func(b *forward.Biz) { b.MaxBody = 1 << 30 }), "forward: biz 2: max_body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{tc.id: tc.biz}})
			if tc.want == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				_ = f.Close(context.Background())
				return
			}
			if err == nil {
				_ = f.Close(context.Background())
				t.Fatalf("New accepted %+v", tc.biz)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	bizs := map[uint16]forward.Biz{7: {BackendURL: "http://127.0.0.1:1/", NotifyURL: "http://127.0.0.1:1/n"}}
	f := newForwarder(t, bizs)
	st := f.Stats()
	if len(st) != 1 || st[0].Biz != 7 || st[0].Name != "biz-7" || st[0].Workers != 16 || st[0].QueueLen != 1024 {
		t.Fatalf("effective config %+v", st)
	}
	cfg7 := forward.Config{Biz: map[uint16]forward.Biz{7: bizs[7]}}
	cfg7.SetDefaults()
	want := forward.Biz{
		Name: "biz-7", BackendURL: "http://127.0.0.1:1/", NotifyURL: "http://127.0.0.1:1/n",
		Timeout: 5 * time.Second, PoolSize: 16, QueueLen: 1024, MaxBody: 64 << 10,
	}
	if cfg7.Biz[7] != want {
		t.Fatalf("defaults\n got %+v\nwant %+v", cfg7.Biz[7], want)
	}
	if bizs[7].Name != "" {
		t.Fatal("New changed the caller's map")
	}
	cfg := forward.Config{Biz: map[uint16]forward.Biz{1: bizs[7], 2: bizs[7], 3: {BackendURL: "http://a/"}}}
	if got := cfg.NotifyURLs(); len(got) != 1 || got[0] != "http://127.0.0.1:1/n" {
		t.Fatalf("NotifyURLs = %q", got)
	}
}

func TestForwardHeadersAndBody(t *testing.T) {
	type seen struct {
		method, path string
		header       http.Header
		body         []byte
	}
	got := make(chan seen, 1)
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.Header.Clone(), b}
		_, _ = w.Write(append([]byte("re:"), b...))
	})
	f := newForwarder(t, map[uint16]forward.Biz{42: {BackendURL: srv.URL + "/biz?x=1"}})

	meta := frame.AppendMetaString(nil, "trace", "t-123")
	meta = frame.AppendMetaString(meta, "lang", "zh CN\tok")
	body := []byte("hello backend")
	r := newResult()
	req := &forward.Request{
		App: "demo", Device: "dev-1", User: "u-9", Biz: 42, Conn: 1234567890123, Node: "gw-1", Seq: 77,
		Meta: meta, Body: body, Done: r.done,
	}
	if err := f.Submit(req); err != nil {
		t.Fatal(err)
	}
	// The caller's buffers are only valid during Submit: trash them at once.
	for i := range body {
		body[i] = 'X'
	}
	for i := range meta {
		meta[i] = 0
	}
	resp := r.wait(t, 5*time.Second)
	s := <-got
	if resp.Code != frame.CodeOK || string(resp.Body) != "re:hello backend" || resp.Status != 200 || resp.Msg != "" {
		t.Fatalf("response %+v", resp)
	}
	if s.method != http.MethodPost || s.path != "/biz" || string(s.body) != "hello backend" {
		t.Fatalf("backend saw %s %s %q", s.method, s.path, s.body)
	}
	for k, v := range map[string]string{
		"Pushwire-App": "demo", "Pushwire-Device": "dev-1", "Pushwire-User": "u-9", "Pushwire-Biz": "42",
		"Pushwire-Conn": "1234567890123", "Pushwire-Node": "gw-1",
		"Pushwire-Meta-Trace": "t-123", "Pushwire-Meta-Lang": "zh CN\tok",
	} {
		if g := s.header.Get(k); g != v {
			t.Errorf("header %s = %q, want %q", k, g, v)
		}
	}
}

func TestResponseMapping(t *testing.T) {
	big := bytes.Repeat([]byte("b"), 2048)
	for _, tc := range []struct {
		name     string
		handler  http.HandlerFunc
		code     frame.Code
		msg      string
		body     string
		status   int
		timeout  time.Duration
		maxBody  int
		noServer bool
	}{
		{name: "200", handler: func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) }, code: frame.CodeOK, body: "ok", status: 200},
		{name: "201 chunked", handler: func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(201)
			_, _ = w.Write([]byte("part1,"))
			w.(http.Flusher).Flush()
			_, _ = w.Write([]byte("part2"))
		}, code: frame.CodeOK, body: "part1,part2", status: 201},
		{name: "204", handler: func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(204) }, code: frame.CodeOK, status: 204},
		{name: "500", handler: func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }, code: frame.CodeBackendError, msg: "backend status 500", body: "boom\n", status: 500},
		{name: "404", handler: http.NotFound, code: frame.CodeBackendError, msg: "backend status 404", body: "404 page not found\n", status: 404},
		{name: "302 not followed", handler: func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/" {
				w.Header().Set("Location", "/elsewhere")
				w.WriteHeader(http.StatusFound)
				return
			}
			_, _ = w.Write([]byte("followed"))
		}, code: frame.CodeBackendError, msg: "backend status 302", status: 302},
		{name: "timeout", handler: func(w http.ResponseWriter, r *http.Request) { hang(r, 5*time.Second) }, code: frame.CodeBackendTimeout, msg: "backend timeout", timeout: 100 * time.Millisecond},
		{name: "timeout mid-body", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte("start"))
			w.(http.Flusher).Flush()
			hang(r, 5*time.Second)
		}, code: frame.CodeBackendTimeout, msg: "backend timeout", status: 200, timeout: 100 * time.Millisecond},
		{name: "too large", handler: func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big) }, code: frame.CodeBackendError, msg: "response too large", status: 200, maxBody: 1024},
		{name: "too large chunked", handler: func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write(big[:1000])
			w.(http.Flusher).Flush()
			_, _ = w.Write(big[:1000])
		}, code: frame.CodeBackendError, msg: "response too large", status: 200, maxBody: 1024},
		{name: "exactly max", handler: func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(big[:1024]) }, code: frame.CodeOK, body: string(big[:1024]), status: 200, maxBody: 1024},
		{name: "unreachable", noServer: true, code: frame.CodeBackendError, msg: "backend unreachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			url := "http://127.0.0.1:1/"
			if !tc.noServer {
				url = backend(t, tc.handler).URL + "/"
			}
			f := newForwarder(t, map[uint16]forward.Biz{1: {BackendURL: url, Timeout: tc.timeout, MaxBody: tc.maxBody}})
			resp := submit(t, f, 1, "x").wait(t, 5*time.Second)
			if resp.Code != tc.code || resp.Msg != tc.msg || string(resp.Body) != tc.body || resp.Status != tc.status {
				t.Fatalf("got code=%v msg=%q body=%.40q status=%d; want code=%v msg=%q body=%.40q status=%d",
					resp.Code, resp.Msg, resp.Body, resp.Status, tc.code, tc.msg, tc.body, tc.status)
			}
			st, _ := bizStats(f, 1)
			var counted uint64
			switch tc.code {
			case frame.CodeOK:
				counted = st.OK
			case frame.CodeBackendTimeout:
				counted = st.Timeout
			default:
				counted = st.BackendError
			}
			if st.Submitted != 1 || counted != 1 || st.OK+st.Timeout+st.BackendError != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestSubmitErrors(t *testing.T) {
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) {})
	f := newForwarder(t, map[uint16]forward.Biz{1: {BackendURL: srv.URL}})
	done := func(forward.Response) { t.Error("Done called for a refused request") }
	for _, tc := range []struct {
		name string
		req  forward.Request
		want *forward.Error
	}{
		{"unknown biz", forward.Request{Biz: 2}, forward.ErrUnknownBiz},
		{"biz 0", forward.Request{Biz: 0}, forward.ErrUnknownBiz},
		{"CRLF in value", forward.Request{Biz: 1, Meta: frame.AppendMetaString(nil, "k", "a\r\nX-Evil: 1")}, forward.ErrBadMeta},
		{"space in key", forward.Request{Biz: 1, Meta: frame.AppendMetaString(nil, "a b", "v")}, forward.ErrBadMeta},
		{"colon in key", forward.Request{Biz: 1, Meta: frame.AppendMetaString(nil, "a:b", "v")}, forward.ErrBadMeta},
		{"malformed meta", forward.Request{Biz: 1, Meta: frame.Meta{5, 'a'}}, forward.ErrBadMeta},
		{"duplicate key", forward.Request{Biz: 1, Meta: frame.AppendMetaString(frame.AppendMetaString(nil, "k", "1"), "k", "2")}, forward.ErrBadMeta},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			req.Done = done
			err := f.Submit(&req)
			if err != tc.want {
				t.Fatalf("Submit = %v, want %v", err, tc.want)
			}
			var fe *forward.Error
			if !errors.As(err, &fe) || fe.Code != tc.want.Code || !strings.HasPrefix(err.Error(), "forward: ") {
				t.Fatalf("error %v does not carry code %v", err, tc.want.Code)
			}
		})
	}
}

func TestQueueFullBusy(t *testing.T) {
	release := make(chan struct{})
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		<-release
		_, _ = w.Write([]byte("done"))
	})
	f := newForwarder(t, map[uint16]forward.Biz{1: {BackendURL: srv.URL, PoolSize: 1, QueueLen: 2}})
	first := submit(t, f, 1, "1")
	waitFor(t, "one request in flight", func() bool { s, _ := bizStats(f, 1); return s.InFlight == 1 })
	queued := []*result{submit(t, f, 1, "2"), submit(t, f, 1, "3")}
	for range 3 {
		if err := f.Submit(&forward.Request{Biz: 1, Done: func(forward.Response) { t.Error("Done called for a busy request") }}); err != forward.ErrBusy {
			t.Fatalf("Submit on a full queue = %v, want ErrBusy", err)
		}
	}
	st, _ := bizStats(f, 1)
	if st.Submitted != 3 || st.Busy != 3 || st.Queued != 2 || st.InFlight != 1 || st.Workers != 1 || st.QueueLen != 2 {
		t.Fatalf("stats %+v", st)
	}
	close(release)
	for _, r := range append(queued, first) {
		if resp := r.wait(t, 5*time.Second); resp.Code != frame.CodeOK {
			t.Fatalf("response %+v", resp)
		}
	}
	waitFor(t, "pool idle", func() bool { s, _ := bizStats(f, 1); return s.InFlight == 0 && s.OK == 3 })
}

// TestSlowBizIsolation saturates a business whose backend takes 2 s and checks that another
// business is still answered promptly: a liveness check with a generous margin.
func TestSlowBizIsolation(t *testing.T) {
	slow := backend(t, func(w http.ResponseWriter, r *http.Request) { hang(r, 2*time.Second) })
	fast := backend(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{
		1: {Name: "slow", BackendURL: slow.URL, PoolSize: 2, QueueLen: 2},
		2: {Name: "fast", BackendURL: fast.URL, PoolSize: 2, QueueLen: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	t.Cleanup(func() { _ = f.Close(context.Background()) })
	var slowResults []*result
	for i := range 4 {
		slowResults = append(slowResults, submit(t, f, 1, "slow"))
		if i == 1 {
			waitFor(t, "slow workers busy", func() bool { s, _ := bizStats(f, 1); return s.InFlight == 2 })
		}
	}
	waitFor(t, "slow pool saturated", func() bool { s, _ := bizStats(f, 1); return s.InFlight == 2 && s.Queued == 2 })
	if err := f.Submit(&forward.Request{Biz: 1}); err != forward.ErrBusy {
		t.Fatalf("saturated slow biz: Submit = %v, want ErrBusy", err)
	}

	start := time.Now()
	for i := range 20 {
		body := fmt.Sprint("fast-", i)
		resp := submit(t, f, 2, body).wait(t, 1500*time.Millisecond)
		if resp.Code != frame.CodeOK || string(resp.Body) != body {
			t.Fatalf("fast biz answer %d: %+v", i, resp)
		}
	}
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Fatalf("20 fast requests took %v while the slow biz was saturated", el)
	}
	t.Logf("20 fast-biz round trips in %v while biz 1 was saturated", time.Since(start))
	if st, _ := bizStats(f, 1); st.InFlight != 2 || st.Queued != 2 || st.OK+st.BackendError+st.Timeout != 0 {
		t.Fatalf("the slow biz is not saturated any more: %+v", st)
	}

	// Closing with a short deadline aborts the slow calls and still answers each exactly once.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := f.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want DeadlineExceeded", err)
	}
	for _, r := range slowResults {
		if resp := r.wait(t, time.Second); resp.Code != frame.CodeBackendError || resp.Msg != forward.MsgShuttingDown {
			t.Fatalf("aborted slow request: %+v", resp)
		}
		if n := r.calls.Load(); n != 1 {
			t.Fatalf("Done called %d times", n)
		}
	}
}

func TestCloseDrains(t *testing.T) {
	var served atomic.Int32
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(10 * time.Millisecond)
		served.Add(1)
		_, _ = io.Copy(w, r.Body)
	})
	f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{1: {BackendURL: srv.URL, PoolSize: 2, QueueLen: 20}}})
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	var rs []*result
	for i := range 20 {
		rs = append(rs, submit(t, f, 1, fmt.Sprint(i)))
	}
	if err := f.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// Close returned: every request was answered already, in order per request.
	for i, r := range rs {
		select {
		case resp := <-r.ch:
			if resp.Code != frame.CodeOK || string(resp.Body) != fmt.Sprint(i) {
				t.Fatalf("request %d: %+v", i, resp)
			}
		default:
			t.Fatalf("request %d not answered when Close returned", i)
		}
	}
	if served.Load() != 20 {
		t.Fatalf("backend served %d, want 20", served.Load())
	}
	if err := f.Submit(&forward.Request{Biz: 1}); err != forward.ErrClosed {
		t.Fatalf("Submit after Close = %v, want ErrClosed", err)
	}
	if err := f.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestDoneExactlyOnce races submitters of every outcome against Close.
func TestDoneExactlyOnce(t *testing.T) {
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("Pushwire-Meta-Mode") {
		case "fail":
			http.Error(w, "no", http.StatusServiceUnavailable)
		case "slow":
			hang(r, time.Second)
		}
	})
	f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{
		1: {BackendURL: srv.URL, PoolSize: 4, QueueLen: 64, Timeout: 50 * time.Millisecond},
		2: {BackendURL: srv.URL, PoolSize: 1, QueueLen: 1},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	const n = 400
	var (
		calls    [n]atomic.Int32
		accepted [n]bool
		wg       sync.WaitGroup
	)
	modes := []string{"ok", "fail", "slow"}
	for g := range 4 {
		wg.Go(func() {
			for i := g; i < n; i += 4 {
				meta := frame.AppendMetaString(nil, "mode", modes[i%3])
				err := f.Submit(&forward.Request{Biz: uint16(1 + i%2), Meta: meta, Done: func(forward.Response) { calls[i].Add(1) }})
				accepted[i] = err == nil
				if i == 3*n/4 && g == 0 {
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
						defer cancel()
						_ = f.Close(ctx)
					}()
				}
			}
		})
	}
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_ = f.Close(ctx)
	total := 0
	for i := range n {
		want := int32(0)
		if accepted[i] {
			want = 1
			total++
		}
		if got := calls[i].Load(); got != want {
			t.Fatalf("request %d (accepted %v): Done called %d times", i, accepted[i], got)
		}
	}
	var answered uint64
	for _, s := range f.Stats() {
		answered += s.OK + s.BackendError + s.Timeout
		if s.Queued != 0 || s.InFlight != 0 {
			t.Fatalf("after Close: %+v", s)
		}
	}
	if answered != uint64(total) {
		t.Fatalf("stats count %d answers, %d requests accepted", answered, total)
	}
	t.Logf("%d of %d requests accepted and answered once", total, n)
}

// hang is a slow backend: it reads the request, so the server notices the client giving up, and
// answers after d or when the client gave up.
func hang(r *http.Request, d time.Duration) {
	_, _ = io.Copy(io.Discard, r.Body)
	select {
	case <-time.After(d):
	case <-r.Context().Done():
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkRoundTrip is one Submit→Done through a local keep-alive backend, one at a time and
// from parallel callers.
func BenchmarkRoundTrip(b *testing.B) {
	srv := backend(b, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	f := newForwarder(b, map[uint16]forward.Biz{1: {BackendURL: srv.URL, PoolSize: 16, QueueLen: 1024}})
	body := bytes.Repeat([]byte("p"), 128)
	meta := frame.AppendMetaString(nil, "trace", "t-0123456789")
	b.Run("serial", func(b *testing.B) {
		done := make(chan forward.Response, 1)
		b.ReportAllocs()
		for b.Loop() {
			req := &forward.Request{App: "demo", Device: "d-1", User: "u-1", Biz: 1, Conn: 1, Node: "n", Meta: meta, Body: body,
				Done: func(r forward.Response) { done <- r }}
			if err := f.Submit(req); err != nil {
				b.Fatal(err)
			}
			if r := <-done; r.Code != frame.CodeOK {
				b.Fatal(r)
			}
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			done := make(chan forward.Response, 1)
			for pb.Next() {
				req := &forward.Request{App: "demo", Device: "d-1", User: "u-1", Biz: 1, Conn: 1, Node: "n", Meta: meta, Body: body,
					Done: func(r forward.Response) { done <- r }}
				if err := f.Submit(req); err != nil {
					b.Fatal(err)
				}
				if r := <-done; r.Code != frame.CodeOK {
					b.Fatal(r)
				}
			}
		})
	})
}

// BenchmarkSubmitBusy is the refusal of a request to a saturated business: the overload path.
func BenchmarkSubmitBusy(b *testing.B) {
	release := make(chan struct{})
	srv := backend(b, func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body); <-release })
	f := newForwarder(b, map[uint16]forward.Biz{1: {BackendURL: srv.URL, PoolSize: 1, QueueLen: 1, Timeout: time.Minute}})
	meta := frame.AppendMetaString(nil, "trace", "t-0123456789")
	body := bytes.Repeat([]byte("p"), 128)
	b.Cleanup(func() { close(release) }) // before the forwarder's Close: cleanups run last first
	submit(b, f, 1, "in flight")
	waitFor(b, "the worker busy", func() bool { s, _ := bizStats(f, 1); return s.InFlight == 1 })
	submit(b, f, 1, "queued")
	req := &forward.Request{Biz: 1, Meta: meta, Body: body}
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Submit(req); err != forward.ErrBusy {
			b.Fatal(err)
		}
	}
}

func TestObserve(t *testing.T) {
	srv := backend(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Pushwire-Meta-Fail") != "" {
			w.WriteHeader(502)
		}
	})
	type obs struct {
		biz  uint16
		code frame.Code
	}
	seen := make(chan obs, 2)
	f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{5: {BackendURL: srv.URL}},
		Observe: func(biz uint16, code frame.Code, d time.Duration) {
			if d <= 0 {
				t.Errorf("latency %v", d)
			}
			seen <- obs{biz, code}
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	submit(t, f, 5, "a").wait(t, 5*time.Second)
	r := newResult()
	if err := f.Submit(&forward.Request{Biz: 5, Meta: frame.AppendMetaString(nil, "fail", "1"), Done: r.done}); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 5*time.Second)
	if err := f.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a, b := <-seen, <-seen; a != (obs{5, frame.CodeOK}) || b != (obs{5, frame.CodeBackendError}) {
		t.Fatalf("observed %v then %v", a, b)
	}
}

// bizStats is business id's counters, from Stats.
func bizStats(f *forward.Forwarder, id uint16) (forward.Stats, bool) {
	for _, st := range f.Stats() {
		if st.Biz == id {
			return st, true
		}
	}
	return forward.Stats{}, false
}
