package backend_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/backend"
	"github.com/pushwire/pushwire/core/forward"
)

var quiet = slog.New(slog.DiscardHandler)

func newServer(t testing.TB, cfg backend.Config) (*backend.Server, *httptest.Server) {
	t.Helper()
	cfg.Logger = quiet
	s, err := backend.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(hs.Close)
	return s, hs
}

func do(t testing.TB, method, url string, header map[string]string, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// jsonError checks that body is the JSON error {error, message} with the given kind and a
// message containing want.
func jsonError(t testing.TB, body string, h http.Header, kind, want string) {
	t.Helper()
	var e struct{ Error, Message string }
	if err := json.Unmarshal([]byte(body), &e); err != nil || h.Get("Content-Type") != "application/json" {
		t.Fatalf("not a JSON error (%v, %s): %q", err, h.Get("Content-Type"), body)
	}
	if e.Error != kind || !strings.Contains(e.Message, want) {
		t.Fatalf("error %+v, want %s containing %q", e, kind, want)
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  backend.Config
		want string
	}{
		{backend.Config{}, ""},
		{backend.Config{Delay: time.Second, ErrorRate: 1}, ""},
		{backend.Config{Delay: -time.Second}, "backend: delay -1s: must be 0..1m0s"},
		{backend.Config{Delay: time.Hour}, "backend: delay 1h0m0s"},
		{backend.Config{ErrorRate: 1.5}, "backend: error rate 1.5: must be 0..1"},
		{backend.Config{ErrorRate: -0.1}, "backend: error rate -0.1"},
	} {
		_, err := backend.New(tc.cfg)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestEcho(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      backend.Config
		query    string
		header   map[string]string
		body     string
		status   int
		want     string // the body, or for errors the JSON message part
		minDelay time.Duration
	}{
		{name: "echo", body: "hello", status: 200, want: "hello"},
		{name: "empty", status: 200},
		{name: "binary", body: "\x00\x01\xff", status: 200, want: "\x00\x01\xff"},
		{name: "configured delay", cfg: backend.Config{Delay: 30 * time.Millisecond}, body: "x", status: 200, want: "x", minDelay: 30 * time.Millisecond},
		{name: "query delay", query: "?delay=30ms", body: "x", status: 200, want: "x", minDelay: 30 * time.Millisecond},
		{name: "meta delay", header: map[string]string{"Pushwire-Meta-Delay-Ms": "30"}, body: "x", status: 200, want: "x", minDelay: 30 * time.Millisecond},
		{name: "meta fail", header: map[string]string{"Pushwire-Meta-Fail": "1"}, body: "x", status: 500, want: "injected failure\n"},
		{name: "query fail", query: "?fail=true", body: "x", status: 500, want: "injected failure\n"},
		{name: "error rate 1", cfg: backend.Config{ErrorRate: 1}, body: "x", status: 500, want: "injected failure\n"},
		{name: "query error rate", query: "?error_rate=1", body: "x", status: 500, want: "injected failure\n"},
		{name: "meta fail=0 beats rate", cfg: backend.Config{ErrorRate: 1}, header: map[string]string{"Pushwire-Meta-Fail": "false"}, body: "x", status: 200, want: "x"},
		{name: "bad query delay", query: "?delay=abc", status: 400, want: `query delay "abc"`},
		{name: "negative query delay", query: "?delay=-1s", status: 400, want: `query delay "-1s"`},
		{name: "huge query delay", query: "?delay=1h", status: 400, want: `query delay "1h"`},
		{name: "bad error rate", query: "?error_rate=2", status: 400, want: `query error_rate "2"`},
		{name: "NaN error rate", query: "?error_rate=NaN", status: 400, want: `query error_rate "NaN"`},
		{name: "bad query fail", query: "?fail=maybe", status: 400, want: `query fail "maybe"`},
		{name: "bad meta delay", header: map[string]string{"Pushwire-Meta-Delay-Ms": "-5"}, status: 400, want: `Pushwire-Meta-Delay-Ms "-5"`},
		{name: "huge meta delay", header: map[string]string{"Pushwire-Meta-Delay-Ms": "60001"}, status: 400, want: `Pushwire-Meta-Delay-Ms "60001"`},
		{name: "overflowing meta delay", header: map[string]string{"Pushwire-Meta-Delay-Ms": "99999999999999999999"}, status: 400, want: "want milliseconds"},
		{name: "bad meta fail", header: map[string]string{"Pushwire-Meta-Fail": "yes please"}, status: 400, want: `Pushwire-Meta-Fail "yes please"`},
		{name: "body too large", cfg: backend.Config{MaxBody: 10}, body: strings.Repeat("b", 11), status: 413, want: "body over 10 bytes"},
		{name: "body at max", cfg: backend.Config{MaxBody: 10}, body: strings.Repeat("b", 10), status: 200, want: strings.Repeat("b", 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, hs := newServer(t, tc.cfg)
			start := time.Now()
			status, body, h := do(t, http.MethodPost, hs.URL+"/echo"+tc.query, tc.header, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d (body %q)", status, tc.status, body)
			}
			st := s.Stats()
			switch status {
			case 200, 500:
				if body != tc.want {
					t.Fatalf("body %q, want %q", body, tc.want)
				}
				if el := time.Since(start); el < tc.minDelay {
					t.Fatalf("answered after %v, want at least %v", el, tc.minDelay)
				}
				failed := uint64(0)
				if status == 500 {
					failed = 1
				}
				if st.Requests != 1 || st.Errors != failed || st.BadRequests != 0 {
					t.Fatalf("stats %+v", st)
				}
			case 400:
				jsonError(t, body, h, "bad_request", tc.want)
			case 413:
				jsonError(t, body, h, "too_large", tc.want)
			}
			if status >= 400 && status != 500 && (st.BadRequests != 1 || st.Requests != 0) {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	_, hs := newServer(t, backend.Config{})
	for _, tc := range []struct {
		method, path string
		status       int
		contains     string
	}{
		{"GET", "/healthz", 200, "ok"},
		{"GET", "/stats", 200, `"requests": 0`},
		{"GET", "/metrics", 200, "pushwire_backend_out_of_order_total"},
		{"GET", "/echo", 405, ""},
		{"GET", "/notify", 405, ""},
		{"POST", "/stats", 405, ""},
		{"GET", "/nope", 404, ""},
	} {
		status, body, _ := do(t, tc.method, hs.URL+tc.path, nil, "")
		if status != tc.status || !strings.Contains(body, tc.contains) {
			t.Errorf("%s %s: %d %q, want %d containing %q", tc.method, tc.path, status, body, tc.status, tc.contains)
		}
	}
}

func batch(events ...forward.Event) string {
	b, _ := json.Marshal(forward.Batch{Events: append([]forward.Event{}, events...)})
	return string(b)
}

func ev(typ, device string, gen uint64) forward.Event {
	return forward.Event{Type: typ, App: "demo", Device: device, User: "u", Conn: gen, Node: "gw-1", Gen: gen, At: 1_700_000_000_000}
}

func TestNotifyBadInput(t *testing.T) {
	good := ev("connect", "d", 1)
	many := make([]forward.Event, backend.MaxBatchEvents+1)
	for i := range many {
		many[i] = good
	}
	for _, tc := range []struct {
		name   string
		body   string
		status int
		want   string
	}{
		{"empty body", "", 400, "malformed batch"},
		{"not JSON", "hello", 400, "malformed batch"},
		{"truncated", `{"events":[{"type":"connect"`, 400, "malformed batch"},
		{"array", `[]`, 400, "malformed batch"},
		{"no events", `{}`, 400, `no "events" array`},
		{"null events", `{"events":null}`, 400, `no "events" array`},
		{"events not array", `{"events":{}}`, 400, "malformed batch"},
		{"trailing data", batch(good) + `{}`, 400, "data after the JSON object"},
		{"bad type", `{"events":[{"type":"login","app":"a","device":"d"}]}`, 400, `event 0: type "login"`},
		{"no app", `{"events":[{"type":"connect","device":"d"}]}`, 400, "event 0: app missing"},
		{"no device", batch(good, forward.Event{Type: "disconnect", App: "a"}), 400, "event 1: device missing"},
		{"negative at", `{"events":[{"type":"connect","app":"a","device":"d","at":-1}]}`, 400, "event 0: at -1"},
		{"negative gen", `{"events":[{"type":"connect","app":"a","device":"d","gen":-1}]}`, 400, "malformed batch"},
		{"float gen", `{"events":[{"type":"connect","app":"a","device":"d","gen":1.5}]}`, 400, "malformed batch"},
		{"gen past uint64", `{"events":[{"type":"connect","app":"a","device":"d","gen":18446744073709551616}]}`, 400, "malformed batch"},
		{"string conn", `{"events":[{"type":"connect","app":"a","device":"d","conn":"1"}]}`, 400, "malformed batch"},
		{"too many events", batch(many...), 400, "at most 10000"},
		{"too large", `{"events":[],"pad":"` + strings.Repeat("x", backend.MaxNotifyBody) + `"}`, 413, "batch over"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, hs := newServer(t, backend.Config{})
			status, body, h := do(t, http.MethodPost, hs.URL+"/notify", map[string]string{"Content-Type": "application/json"}, tc.body)
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			kind := "bad_request"
			if status == 413 {
				kind = "too_large"
			}
			jsonError(t, body, h, kind, tc.want)
			st := s.Stats()
			if st.Notifications.Rejected != 1 || st.Notifications.Batches != 0 || st.Notifications.Connect != 0 || st.Devices != 0 {
				t.Fatalf("a refused batch was counted: %+v", st)
			}
		})
	}
}

func TestNotifyCounts(t *testing.T) {
	s, hs := newServer(t, backend.Config{MaxDevices: 3})
	post := func(events ...forward.Event) {
		t.Helper()
		if status, body, _ := do(t, http.MethodPost, hs.URL+"/notify", nil, batch(events...)); status != 200 || body != fmt.Sprintf("{\"accepted\":%d}\n", len(events)) {
			t.Fatalf("notify: %d %s", status, body)
		}
	}
	other := ev("connect", "d-x", 1)
	other.App = "chat"
	post(ev("connect", "a", 5), ev("connect", "a", 7), ev("disconnect", "a", 5)) // a late disconnect of gen 5: in order
	post(ev("connect", "a", 6))                                                  // below 7: out of order
	post(ev("connect", "a", 7))                                                  // a replay: out of order
	post(ev("disconnect", "a", 9))                                               // a disconnect of an unseen connect: out of order
	post(ev("disconnect", "b", 3), ev("connect", "b", 4), other)                 // b's first event is a disconnect: not checked
	post(ev("connect", "c", 1))                                                  // a fourth device: past MaxDevices
	post(forward.Event{Type: "connect", App: "demo", Device: "a", Gen: 10, Reason: "ignored", At: 0}, ev("disconnect", "a", 10))
	post() // an empty batch is fine

	st := s.Stats()
	want := backend.Stats{
		Requests: 0,
		Notifications: backend.NotifyStats{
			Batches: 8, Connect: 8, Disconnect: 4, Untracked: 1,
		},
		Apps:       map[string]backend.AppStats{"demo": {Connect: 7, Disconnect: 4}, "chat": {Connect: 1}},
		OutOfOrder: 3,
		Devices:    3,
	}
	got, _ := json.Marshal(st)
	exp, _ := json.Marshal(want)
	if !bytes.Equal(got, exp) {
		t.Fatalf("stats\n got %s\nwant %s", got, exp)
	}
	// /stats serves the same.
	_, body, _ := do(t, http.MethodGet, hs.URL+"/stats", nil, "")
	var served backend.Stats
	if err := json.Unmarshal([]byte(body), &served); err != nil {
		t.Fatal(err)
	}
	if got2, _ := json.Marshal(served); !bytes.Equal(got2, exp) {
		t.Fatalf("/stats %s", body)
	}
	_, metrics, _ := do(t, http.MethodGet, hs.URL+"/metrics", nil, "")
	for _, line := range []string{
		`pushwire_backend_notify_events_total{type="connect"} 8`,
		`pushwire_backend_notify_events_total{type="disconnect"} 4`,
		`pushwire_backend_out_of_order_total 3`,
		`pushwire_backend_devices 3`,
		`pushwire_backend_notify_batches_total{result="ok"} 8`,
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("metrics lack %q", line)
		}
	}
}

// TestWithForward runs the gateway's side of the contract, package forward, against this server.
func TestWithForward(t *testing.T) {
	s, hs := newServer(t, backend.Config{})
	f, err := forward.New(forward.Config{Logger: quiet, Biz: map[uint16]forward.Biz{
		1: {BackendURL: hs.URL + "/echo", Timeout: 200 * time.Millisecond},
	}})
	if err != nil {
		t.Fatal(err)
	}
	f.Start()
	n, err := forward.NewNotifier(forward.NotifyConfig{URLs: []string{hs.URL + "/notify"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	n.Start()
	for i, tc := range []struct {
		meta map[string]string
		code string
		body string
	}{
		{nil, "OK", "payload"},
		{map[string]string{"fail": "1"}, "BACKEND_ERROR", "injected failure\n"},
		{map[string]string{"delay-ms": "1000"}, "BACKEND_TIMEOUT", ""},
		{map[string]string{"delay-ms": "10"}, "OK", "payload"},
	} {
		var meta []byte
		for k, v := range tc.meta {
			meta = append(meta, byte(len(k)))
			meta = append(meta, k...)
			meta = append(meta, byte(len(v)>>8), byte(len(v)))
			meta = append(meta, v...)
		}
		done := make(chan forward.Response, 1)
		if err := f.Submit(&forward.Request{App: "demo", Device: "d", Biz: 1, Meta: meta, Body: []byte("payload"), Done: func(r forward.Response) { done <- r }}); err != nil {
			t.Fatal(err)
		}
		r := <-done
		if r.Code.String() != tc.code || string(r.Body) != tc.body {
			t.Errorf("case %d: %v %q %q, want %s %q", i, r.Code, r.Msg, r.Body, tc.code, tc.body)
		}
		n.Notify(ev("connect", fmt.Sprint("dev-", i), uint64(i+1)))
		n.Notify(ev("disconnect", fmt.Sprint("dev-", i), uint64(i+1)))
	}
	ctx := t.Context()
	if err := f.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ns := n.Stats()[0]; ns.Sent != 8 || ns.Failed+ns.Dropped != 0 {
		t.Fatalf("notifier stats %+v", ns)
	}
	st := s.Stats()
	if st.Notifications.Connect != 4 || st.Notifications.Disconnect != 4 || st.OutOfOrder != 0 || st.Devices != 4 || st.Errors != 1 {
		t.Fatalf("backend stats %+v", st)
	}
}
