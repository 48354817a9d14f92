package gateway

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
)

// call serves one HTTP request on h and decodes the JSON answer into out (when not nil).
func call(t *testing.T, h http.Handler, method, url, body string, out any) int {
	t.Helper()
	req := httptest.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer key")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if out != nil {
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, url, w.Code, w.Body.String(), err)
		}
	}
	return w.Code
}

// TestPushModes: the push API to devices, users, a group and every connection of the app; each
// answer accounts for every target.
func TestPushModes(t *testing.T) {
	n, _ := nodeWithBackends(t, Config{})
	h := n.Handler()
	a1 := n.connect(t, "a1", "alice")
	a2 := n.connect(t, "a2", "alice")
	b1 := n.connect(t, "b1", "bob")
	for _, p := range []*pipe{a1, b1} {
		p.send(frame.Header{Type: frame.TypeJoin, Biz: bizEcho}, frame.AppendMetaString(nil, "group", "room"), nil)
		p.expect(t, frame.TypeResponse, frame.CodeOK)
	}
	cases := []struct {
		name string
		body string
		want PushResult
		to   []*pipe
	}{
		{"devices", `{"biz":1,"devices":["a1","b1","nobody"],"payload":"hi"}`, PushResult{Targets: 3, Delivered: 2, Offline: 1}, []*pipe{a1, b1}},
		{"users", `{"biz":1,"users":["alice","carol"],"payload_b64":"aGk="}`, PushResult{Targets: 3, Delivered: 2, Offline: 1}, []*pipe{a1, a2}},
		{"group", `{"biz":1,"group":"room","payload":"hi"}`, PushResult{Targets: 2, Delivered: 2}, []*pipe{a1, b1}},
		{"broadcast", `{"biz":1,"broadcast":true,"payload":"hi","app":"app"}`, PushResult{Targets: 3, Delivered: 3}, []*pipe{a1, a2, b1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var res PushResult
			if code := call(t, h, http.MethodPost, "/v1/push", tc.body, &res); code != http.StatusOK {
				t.Fatalf("status %d", code)
			}
			id := res.ID
			res.ID = ""
			if res != tc.want {
				t.Fatalf("result %+v, want %+v", res, tc.want)
			}
			for _, p := range tc.to {
				f := p.expect(t, frame.TypePush, frame.CodeOK)
				if f.Meta.GetString("id") != id || string(f.Body) != "hi" || f.Biz != bizEcho {
					t.Fatalf("push id %q body %q biz %d", f.Meta.GetString("id"), f.Body, f.Biz)
				}
			}
			for _, p := range []*pipe{a1, a2, b1} {
				p.silent(t)
			}
		})
	}
	for _, bad := range []struct{ body, code string }{
		{`{"biz":0,"devices":["a"]}`, "bad_request"},
		{`{"biz":1}`, "bad_request"},
		{`{"biz":1,"devices":["a"],"app":"other"}`, "forbidden"},
		{`{"biz":1,"devices":["a"],"payload":"` + strings.Repeat("x", frame.DefaultMaxBody+1) + `"}`, "too_large"},
		{`{"biz":1,"devices":["a"],"ttl_ms":5}`, "bad_request"},
		{`{"biz":1,"devices":["a"],"payload_b64":"!"}`, "bad_request"},
		{`{"biz":1,"group":"` + strings.Repeat("g", 200) + `"}`, "bad_request"},
		{`{"biz":1,"devices":[""]}`, "bad_request"},
		{`{"biz":1,"devices":["a"],"payload":"a","payload_b64":"YQ=="}`, "bad_request"},
		{`{"biz":1,"devices":["a"],"ack":true,"ttl_ms":-1}`, "bad_request"},
		{`{"nope":1}`, "bad_json"},
	} {
		var e apiError
		if code := call(t, h, http.MethodPost, "/v1/push", bad.body, &e); code < 400 || e.Error != bad.code {
			t.Errorf("%s: %d %+v, want %s", bad.body[:min(len(bad.body), 60)], code, e, bad.code)
		}
	}
	var e apiError
	if code := call(t, h, http.MethodGet, "/v1/push", "", &e); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /v1/push: %d", code)
	}
	req := httptest.NewRequest(http.MethodPost, "/v1/push", strings.NewReader(`{"biz":1,"devices":["a1"]}`))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != http.StatusUnauthorized {
		t.Fatalf("no push key: %d", w.Code)
	}
	if _, err := n.Push(&PushRequest{App: "app", Biz: 1}); err != ErrNoTargets {
		t.Fatalf("no targets: %v", err)
	}
	if _, err := n.Push(&PushRequest{App: "app", Devices: []string{"a1"}}); err != ErrBadBiz {
		t.Fatalf("biz 0: %v", err)
	}
	if _, err := n.Push(&PushRequest{App: "app", Biz: 1, Devices: []string{"a1"}, Payload: make([]byte, frame.DefaultMaxBody+1)}); err != ErrPayloadSize {
		t.Fatalf("payload: %v", err)
	}
}

// TestAtLeastOnce: a push with ack is kept until PUSH_ACK, resent to the device's next connection
// while it is not acknowledged, and dropped when its ttl passes on the node's clock.
func TestAtLeastOnce(t *testing.T) {
	n := newNode(t, Config{})
	h := n.Handler()
	p := n.connect(t, "d", "u")
	var res PushResult
	call(t, h, http.MethodPost, "/v1/push", `{"biz":1,"devices":["d"],"payload":"m1","ack":true,"ttl_ms":60000}`, &res)
	if res.Pending != 1 || res.Delivered != 1 {
		t.Fatalf("result %+v", res)
	}
	f := p.expect(t, frame.TypePush, frame.CodeOK)
	if f.Flags&frame.FlagAck == 0 {
		t.Fatal("PUSH without flag ACK")
	}
	// Not acknowledged: the next connection of the device gets it again.
	p.hangUp()
	q := n.connect(t, "d", "u")
	if g := q.expect(t, frame.TypePush, frame.CodeOK); g.Meta.GetString("id") != res.ID {
		t.Fatalf("resent id %q, want %q", g.Meta.GetString("id"), res.ID)
	}
	q.send(frame.Header{Type: frame.TypePushAck, Biz: 1}, frame.AppendMetaString(nil, "id", res.ID), nil)
	q.hangUp()
	r := n.connect(t, "d", "u")
	r.silent(t)
	// Expiry: kept for its ttl only.
	call(t, h, http.MethodPost, "/v1/push", `{"biz":1,"devices":["d"],"payload":"m2","ack":true,"ttl_ms":1000}`, &res)
	r.expect(t, frame.TypePush, frame.CodeOK)
	n.clock.add(2 * time.Second)
	if dropped := n.acks.sweep(n.clock.Now().UnixNano()); dropped != 1 {
		t.Fatalf("sweep dropped %d", dropped)
	}
	r.hangUp()
	n.connect(t, "d", "u").silent(t)
}

// TestMembersAPI: the business adds and removes devices' connections with PUT and DELETE.
func TestMembersAPI(t *testing.T) {
	n := newNode(t, Config{MaxGroupsPerConn: 1})
	h := n.Handler()
	p := n.connect(t, "d1", "u")
	var res membersResult
	call(t, h, http.MethodPut, "/v1/groups/one/members", `{"devices":["d1"]}`, &res)
	call(t, h, http.MethodPut, "/v1/groups/two/members", `{"devices":["d1","d1","gone"]}`, &res)
	// The business's own call is not bound by the per-connection cap of client JOINs.
	if res != (membersResult{Group: "two", Changed: 1, Unchanged: 1, Offline: 1, Size: 1}) {
		t.Fatalf("PUT: %+v", res)
	}
	call(t, h, http.MethodDelete, "/v1/groups/two/members", `{"devices":["d1"]}`, &res)
	if res.Changed != 1 || res.Size != 0 {
		t.Fatalf("DELETE: %+v", res)
	}
	if got := p.client().groupsOf(); len(got) != 1 || got[0] != "one" {
		t.Fatalf("groups %v", got)
	}
	for _, bad := range []struct{ method, url, body string }{
		{http.MethodPost, "/v1/groups/g/members", `{"devices":["d1"]}`},
		{http.MethodPut, "/v1/groups/" + strings.Repeat("g", 200) + "/members", `{"devices":["d1"]}`},
		{http.MethodPut, "/v1/groups/g/members", `{"devices":[]}`},
		{http.MethodPut, "/v1/groups/g/members", `{"devices":[""]}`},
		{http.MethodPut, "/v1/groups/g/members", `{"devices":["d1"]} {}`},
		{http.MethodPut, "/v1/groups/g/members", `{`},
	} {
		var e apiError
		if code := call(t, h, bad.method, bad.url, bad.body, &e); code < 400 || e.Message == "" {
			t.Errorf("%s %s %s: %d %+v", bad.method, bad.url, bad.body, code, e)
		}
	}
}

// TestStatsEndpoints: the public /v1/stats refuses gc=1 (403); the admin handler serves it.
func TestStatsEndpoints(t *testing.T) {
	n := newNode(t, Config{})
	n.connect(t, "d", "u")
	pub, adm := n.Handler(), n.AdminHandler()
	var st Stats
	if code := call(t, pub, http.MethodGet, "/v1/stats", "", &st); code != http.StatusOK || st.Sessions != 1 || st.Conns != 1 || st.State != "serving" {
		t.Fatalf("public stats %d %+v", code, st)
	}
	var e apiError
	if code := call(t, pub, http.MethodGet, "/v1/stats?gc=1", "", &e); code != http.StatusForbidden || e.Error != "forbidden" {
		t.Fatalf("public gc=1: %d %+v", code, e)
	}
	if code := call(t, adm, http.MethodGet, "/v1/stats?gc=1", "", &st); code != http.StatusOK || st.HeapLiveBytes == 0 {
		t.Fatalf("admin gc=1: %d %+v", code, st)
	}
	if code := call(t, adm, http.MethodGet, "/v1/stats?gc=yes", "", &e); code != http.StatusBadRequest {
		t.Fatalf("gc=yes: %d", code)
	}
	if code := call(t, adm, http.MethodPost, "/v1/stats", "", &e); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST stats: %d", code)
	}
	for url, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200} {
		if code := call(t, pub, http.MethodGet, url, "", nil); code != want {
			t.Fatalf("%s: %d", url, code)
		}
	}
	if n.Registry() == nil || n.Config().Node != "t" {
		t.Fatal("registry or config")
	}
}

// TestDrain: every session gets GOAWAY SHUTTING_DOWN and moves to DRAINING, where PING still
// works and REQUEST does not; a new connection is refused with GOAWAY; Drain returns when the
// clients have gone, and a second Drain returns the first's result.
func TestDrain(t *testing.T) {
	n, _ := nodeWithBackends(t, Config{DrainWindow: 100 * time.Millisecond, RetryMs: 1000})
	var clients []*pipe
	for _, d := range []string{"a", "b", "c"} {
		clients = append(clients, n.connect(t, d, "u-"+d))
	}
	done := make(chan error, 1)
	go func() { done <- n.Drain(context.Background()) }()
	for _, p := range clients {
		f := p.expect(t, frame.TypeGoaway, frame.CodeShuttingDown)
		if ms := f.Meta.GetString("retry_ms"); ms == "" || f.Meta.GetString("reason") == "" {
			t.Fatalf("GOAWAY meta %q", f.Meta)
		}
	}
	if !n.draining.Load() || call(t, n.Handler(), http.MethodGet, "/readyz", "", nil) != http.StatusServiceUnavailable {
		t.Fatal("not reported draining")
	}
	p := clients[0]
	if p.state() != session.StateDraining {
		t.Fatalf("state %v", p.state())
	}
	p.send(frame.Header{Type: frame.TypePing}, nil, nil)
	p.expect(t, frame.TypePong, frame.CodeOK)
	p.send(frame.Header{Type: frame.TypeRequest, Biz: bizEcho}, nil, nil)
	p.expect(t, frame.TypeError, frame.CodeBadFrame)
	late := n.dial(0)
	late.expect(t, frame.TypeGoaway, frame.CodeShuttingDown)
	if !late.isClosed() {
		t.Fatal("a connection while draining stays open")
	}
	for _, p := range clients[1:] {
		p.hangUp()
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(wait):
		t.Fatal("Drain did not return when the clients had gone")
	}
	if err := n.Drain(context.Background()); err != nil {
		t.Fatalf("second Drain: %v", err)
	}
}

// TestDrainCanceled: Drain returns ctx.Err() when ctx ends before the clients leave.
func TestDrainCanceled(t *testing.T) {
	n := newNode(t, Config{DrainWindow: time.Hour})
	p := n.connect(t, "a", "u")
	q := n.connect(t, "b", "u")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Drain(ctx) }()
	p.expect(t, frame.TypeGoaway, frame.CodeShuttingDown)
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Drain: %v", err)
	}
	q.hangUp()
}

// TestLoginWhileDraining: a login that completes while the drain's GOAWAYs go out gets its own.
func TestLoginWhileDraining(t *testing.T) {
	n := newNode(t, Config{})
	p := n.dial(0)
	n.draining.Store(true) // the drain began after this connection opened
	p.login(n.token("d", "u"), "d")
	p.expect(t, frame.TypeLoginAck, frame.CodeOK)
	p.expect(t, frame.TypeGoaway, frame.CodeShuttingDown)
	if p.state() != session.StateDraining {
		t.Fatalf("state %v", p.state())
	}
}

// TestNotifications: a business with a notify URL hears of each login and close, with the
// device's generation and the close reason.
func TestNotifications(t *testing.T) {
	var mu sync.Mutex
	var events []forward.Event
	got := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b forward.Batch
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		events = append(events, b.Events...)
		mu.Unlock()
		got <- struct{}{}
	}))
	defer srv.Close()
	n := newNode(t, Config{Businesses: map[uint16]Business{1: {Biz: forwardBiz(srv.URL+"/echo", srv.URL+"/notify")}}})
	p := n.connect(t, "d", "u")
	p.send(frame.Header{Type: frame.TypeLogin}, nil, nil) // a protocol error: LOGIN twice
	p.expect(t, frame.TypeError, frame.CodeBadFrame)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		mu.Lock()
		k := len(events)
		mu.Unlock()
		if k >= 2 {
			break
		}
		select {
		case <-got:
		case <-deadline.C:
			t.Fatalf("%d events", k)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if events[0].Type != forward.EventConnect || events[1].Type != forward.EventDisconnect ||
		events[1].Reason != "BAD_FRAME" || events[0].Gen == 0 || events[0].Gen != events[1].Gen || events[0].Device != "d" {
		t.Fatalf("events %+v", events)
	}
}

// TestLifecycle: New starts nothing; Start starts, a second Start does nothing; Stop stops and
// waits, a second Stop returns at once; Stop without Start works; Start after Stop does nothing.
func TestLifecycle(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) }))
	defer srv.Close()
	cfg := Config{Logger: quiet, Businesses: map[uint16]Business{1: {Biz: forwardBiz(srv.URL, srv.URL)}}}
	n, err := New(cfg, testKey, oneApp{})
	if err != nil {
		t.Fatal(err)
	}
	goleak.VerifyNone(t, goleak.IgnoreCurrent()) // New started nothing
	if err := n.Start(ctxDone()); err != context.Canceled {
		t.Fatalf("Start with an ended context: %v", err)
	}
	for range 2 {
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := n.Stop(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	_ = n.Start(context.Background()) // after Stop: nothing
	m, err := New(cfg, testKey, oneApp{})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Stop(context.Background()); err != nil {
		t.Fatalf("Stop without Start: %v", err)
	}
	if _, err := New(Config{}, nil, oneApp{}); err == nil {
		t.Fatal("New without a verifier")
	}
}

// ctxDone is an already-ended context.
func ctxDone() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}
