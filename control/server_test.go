package control

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushwire/pushwire/control/token"
)

// now is the fixed clock of the server tests.
var now = time.Unix(1767225600, 0) // 2026-01-01T00:00:00Z

const demoSecret = "demo-app-secret-0"

func testConfig(t testing.TB) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(`
token:
  ttl: 2h
  keys: [{id: k1, secret: "token-secret-0123456789"}]
heartbeat: 45s
apps:
  - {id: demo, secret: ` + demoSecret + `, push_key: demo-push}
  - {id: off, secret: off-secret, push_key: off-push, disabled: true}
endpoints:
  - {protocol: tcp, addr: "gw1:7000"}
  - {protocol: ws, addr: "gw1:8080"}
  - {protocol: quic, addr: "gw1:7443"}
  - {protocol: wss, addr: "gw1:443"}
limits: # off: these tests connect the same device many times; limits_test.go turns them on
  connect_per_device: {rate: 0}
  connect_per_source: {rate: 0}
`))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newTestServer(t testing.TB, cfg *Config, opts ...Option) *httptest.Server {
	t.Helper()
	opts = append([]Option{WithClock(func() time.Time { return now }),
		WithLogger(slog.New(slog.DiscardHandler))}, opts...)
	s, err := NewServer(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts
}

// req is a connect request; signed fills in a correct sign.
func req(app, device, user, platform string, ts int64) ConnectRequest {
	return ConnectRequest{App: app, Device: device, User: user, Platform: platform,
		Network: "wifi", SDK: "go/1.0", TS: ts}
}

func signed(secret string, r ConnectRequest) string {
	r.Sign = Sign(secret, r.App, r.Device, r.User, r.TS)
	b, _ := json.Marshal(r)
	return string(b)
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, method, url, body string) answer {
	t.Helper()
	hr, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func TestConnectStatus(t *testing.T) {
	ts := newTestServer(t, testConfig(t))
	url := ts.URL + "/v1/connect"
	good := req("demo", "dev-1", "alice", "native", now.Unix())
	with := func(f func(*ConnectRequest)) ConnectRequest { r := good; f(&r); return r }

	tests := []struct {
		name   string
		method string
		body   string
		status int
		code   string
	}{
		{"ok", "POST", signed(demoSecret, good), 200, ""},
		{"ok anonymous", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.User = "" })), 200, ""},
		{"ok longest device", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.Device = strings.Repeat("d", 128) })), 200, ""},
		{"ok unicode ids", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.Device, r.User = "设备-1", "ユーザー" })), 200, ""},
		{"ok ts 5 min old", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.TS = now.Unix() - 300 })), 200, ""},
		{"ok ts 5 min ahead", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.TS = now.Unix() + 300 })), 200, ""},
		{"ok whitespace around", "POST", " \n" + signed(demoSecret, good) + "\n\t ", 200, ""},

		{"GET", "GET", "", 405, CodeMethodNotAllowed},
		{"PUT", "PUT", signed(demoSecret, good), 405, CodeMethodNotAllowed},
		{"DELETE", "DELETE", "", 405, CodeMethodNotAllowed},

		{"empty body", "POST", "", 400, CodeMalformed},
		{"not json", "POST", "app=demo", 400, CodeMalformed},
		{"truncated json", "POST", signed(demoSecret, good)[:30], 400, CodeMalformed},
		{"array", "POST", "[]", 400, CodeMalformed},
		{"null", "POST", "null", 400, CodeInvalidField},
		{"unknown field", "POST", strings.Replace(signed(demoSecret, good), `{`, `{"admin":true,`, 1), 400, CodeMalformed},
		{"trailing object", "POST", signed(demoSecret, good) + "{}", 400, CodeMalformed},
		{"trailing garbage", "POST", signed(demoSecret, good) + "x", 400, CodeMalformed},
		{"ts as string", "POST", `{"app":"demo","device":"d","ts":"1767225600","sign":"x"}`, 400, CodeMalformed},
		{"ts as float", "POST", `{"app":"demo","device":"d","ts":1.5,"sign":"x"}`, 400, CodeMalformed},
		{"body over 64 KiB", "POST", signed(demoSecret, good)[:10] + strings.Repeat(" ", MaxConnectBody) + signed(demoSecret, good)[10:], 400, CodeBodyTooLarge},
		{"missing app", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.App = "" })), 400, CodeInvalidField},
		{"missing device", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.Device = "" })), 400, CodeInvalidField},
		{"device too long", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.Device = strings.Repeat("d", 129) })), 400, CodeInvalidField},
		{"user too long", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.User = strings.Repeat("u", 129) })), 400, CodeInvalidField},
		{"app too long", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.App = strings.Repeat("a", 65) })), 400, CodeInvalidField},
		{"platform too long", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.Platform = strings.Repeat("p", 65) })), 400, CodeInvalidField},
		{"device with NUL", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.Device = "d\x00" })), 400, CodeInvalidField},
		{"device with DEL", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.Device = "d\x7f" })), 400, CodeInvalidField},
		{"device with C1", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.Device = "d\u0085" })), 400, CodeInvalidField},
		{"user with newline", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.User = "a\nb" })), 400, CodeInvalidField},
		{"device invalid utf-8", "POST", `{"app":"demo","device":"d` + "\xff" + `","ts":1767225600,"sign":"x"}`, 400, CodeInvalidField},
		{"sdk with escape", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.SDK = "\x1b[31m" })), 400, CodeInvalidField},

		{"unknown app", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.App = "nope" })), 401, CodeUnknownApp},
		{"wrong secret", "POST", signed("not-the-secret", good), 401, CodeBadSign},
		{"missing sign", "POST", mustJSON(good), 401, CodeBadSign},
		{"sign not hex", "POST", strings.Replace(mustJSON(good), `"sign":""`, `"sign":"`+strings.Repeat("zz", 32)+`"`, 1), 401, CodeBadSign},
		{"sign for other device", "POST", strings.Replace(signed(demoSecret, good), `"device":"dev-1"`, `"device":"dev-2"`, 1), 401, CodeBadSign},
		{"sign for other user", "POST", strings.Replace(signed(demoSecret, good), `"user":"alice"`, `"user":"bob"`, 1), 401, CodeBadSign},
		{"sign for other ts", "POST", strings.Replace(signed(demoSecret, good), fmt.Sprint(now.Unix()), fmt.Sprint(now.Unix()-1), 1), 401, CodeBadSign},
		{"ts 10 min old", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.TS = now.Unix() - 600 })), 401, CodeStaleTS},
		{"ts 10 min ahead", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.TS = now.Unix() + 600 })), 401, CodeStaleTS},
		{"ts 5 min 1 s old", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.TS = now.Unix() - 301 })), 401, CodeStaleTS},
		{"ts zero", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.TS = 0 })), 401, CodeStaleTS},
		{"ts huge", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.TS = 1<<63 - 1 })), 401, CodeStaleTS},
		{"ts very negative", "POST", signed(demoSecret, with(func(r *ConnectRequest) { r.TS = -1 << 63 })), 401, CodeStaleTS},
		{"disabled app bad sign", "POST", signed("x", with(func(r *ConnectRequest) { r.App = "off" })), 401, CodeBadSign},

		{"disabled app", "POST", signed("off-secret", with(func(r *ConnectRequest) { r.App = "off" })), 403, CodeAppDisabled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := do(t, tt.method, url, tt.body)
			checkAnswer(t, a, tt.status, tt.code)
		})
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// checkAnswer checks the status, that the body is JSON of the right shape, and the error code.
func checkAnswer(t testing.TB, a answer, status int, code string) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d; body %s", a.status, status, a.body)
	}
	if ct := a.header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if status == http.StatusOK {
		var r ConnectResponse
		if err := json.Unmarshal(a.body, &r); err != nil || r.Token == "" || len(r.Endpoints) == 0 {
			t.Fatalf("bad 200 body %s: %v", a.body, err)
		}
		return
	}
	var e ErrorResponse
	dec := json.NewDecoder(bytes.NewReader(a.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Message == "" {
		t.Fatalf("bad error body %s: %v", a.body, err)
	}
	if e.Error != code {
		t.Fatalf("error %q, want %q (message %q)", e.Error, code, e.Message)
	}
	if status == http.StatusMethodNotAllowed && a.header.Get("Allow") != "POST" {
		t.Fatalf("405 without Allow: POST")
	}
}

func TestConnectNoEndpoints(t *testing.T) {
	cfg := testConfig(t)
	good := signed(demoSecret, req("demo", "dev-1", "", "native", now.Unix()))

	cfg.Endpoints = nil
	ts := newTestServer(t, cfg)
	checkAnswer(t, do(t, "POST", ts.URL+"/v1/connect", good), 503, CodeNoEndpoints)

	// Endpoints for native clients only: browsers get 503, native clients connect.
	cfg.Endpoints = []Endpoint{{Protocol: ProtoTCP, Addr: "gw1:7000"}, {Protocol: ProtoQUIC, Addr: "gw1:7443"}}
	ts = newTestServer(t, cfg)
	checkAnswer(t, do(t, "POST", ts.URL+"/v1/connect", good), 200, "")
	web := signed(demoSecret, req("demo", "dev-1", "", "web", now.Unix()))
	checkAnswer(t, do(t, "POST", ts.URL+"/v1/connect", web), 503, CodeNoEndpoints)

	// The auth checks come first: no 503 leaks to unauthenticated callers.
	checkAnswer(t, do(t, "POST", ts.URL+"/v1/connect", signed("wrong", req("demo", "d", "", "web", now.Unix()))), 401, CodeBadSign)
}

func connectOK(t testing.TB, url string, r ConnectRequest) ConnectResponse {
	t.Helper()
	a := do(t, "POST", url+"/v1/connect", signed(demoSecret, r))
	checkAnswer(t, a, 200, "")
	var resp ConnectResponse
	if err := json.Unmarshal(a.body, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestConnectToken(t *testing.T) {
	cfg := testConfig(t)
	ts := newTestServer(t, cfg)
	resp := connectOK(t, ts.URL, req("demo", "dev-1", "alice", "native", now.Unix()-30))

	if want := now.Add(2 * time.Hour).Unix(); resp.ExpiresAt != want {
		t.Errorf("expires_at %d, want now+ttl %d", resp.ExpiresAt, want)
	}
	if resp.HeartbeatS != 45 {
		t.Errorf("heartbeat_s %d, want 45", resp.HeartbeatS)
	}
	v, err := cfg.Verifier()
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(resp.Token, now)
	if err != nil {
		t.Fatalf("token does not verify: %v", err)
	}
	if c.App != "demo" || c.Device != "dev-1" || c.User != "alice" {
		t.Errorf("claims %+v", c)
	}
	if !c.IssuedAt.Equal(now) || c.ExpiresAt.Unix() != resp.ExpiresAt {
		t.Errorf("token times %v..%v, want %v..%d", c.IssuedAt, c.ExpiresAt, now, resp.ExpiresAt)
	}
	if _, err := v.Verify(resp.Token, now.Add(2*time.Hour)); err != token.ErrExpired {
		t.Errorf("token at expiry: %v, want ErrExpired", err)
	}

	// The raw answer has exactly the documented fields, and no node when there is none.
	a := do(t, "POST", ts.URL+"/v1/connect", signed(demoSecret, req("demo", "dev-1", "", "", now.Unix())))
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(a.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"token", "expires_at", "heartbeat_s", "endpoints", "reason"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("answer lacks %q: %s", k, a.body)
		}
	}
	if len(raw) != 5 {
		t.Errorf("answer has extra fields: %s", a.body)
	}
	if cc := a.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q", cc)
	}
}

func TestConnectEndpointPolicy(t *testing.T) {
	ts := newTestServer(t, testConfig(t))
	// The default policy: tcp, tls, quic, ws, wss; browsers and mini-apps ws, wss.
	all := []Endpoint{{Protocol: ProtoTCP, Addr: "gw1:7000"}, {Protocol: ProtoQUIC, Addr: "gw1:7443"}, {Protocol: ProtoWS, Addr: "gw1:8080"}, {Protocol: ProtoWSS, Addr: "gw1:443"}}
	web := []Endpoint{{Protocol: ProtoWS, Addr: "gw1:8080"}, {Protocol: ProtoWSS, Addr: "gw1:443"}}
	for _, tt := range []struct {
		platform string
		want     []Endpoint
	}{
		{"web", web},
		{"Web", web},
		{"native", all},
		{"miniapp", web},
		{"MiniApp", web},
		{"", all},
	} {
		t.Run(tt.platform, func(t *testing.T) {
			got := connectOK(t, ts.URL, req("demo", "dev-1", "", tt.platform, now.Unix())).Endpoints
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("endpoints %v, want %v", got, tt.want)
			}
		})
	}
}

func TestWithEndpoints(t *testing.T) {
	cfg := testConfig(t)
	override := []Endpoint{{Protocol: ProtoWSS, Addr: "edge:443"}, {Protocol: ProtoTCP, Addr: "edge:7000"}}
	ts := newTestServer(t, cfg, WithEndpoints(override))
	got := connectOK(t, ts.URL, req("demo", "dev-1", "", "native", now.Unix())).Endpoints
	if addrsOf(got) != "tcp://edge:7000 wss://edge:443" {
		t.Errorf("endpoints %v, want %v in the policy's order", got, override)
	}
	override[0].Addr = "mutated:1" // the server holds its own copy
	got = connectOK(t, ts.URL, req("demo", "dev-1", "", "native", now.Unix())).Endpoints
	if got[1].Addr != "edge:443" {
		t.Errorf("server shares the caller's slice: %v", got)
	}

	cfg.Endpoints = nil // endpoints only from the option, as from flags
	ts = newTestServer(t, cfg, WithEndpoints([]Endpoint{{Protocol: ProtoTCP, Addr: "flag:7000"}}))
	if got := connectOK(t, ts.URL, req("demo", "d", "", "", now.Unix())).Endpoints; len(got) != 1 || got[0].Addr != "flag:7000" {
		t.Errorf("endpoints %v", got)
	}

	_, err := NewServer(cfg, WithEndpoints([]Endpoint{{Protocol: "http", Addr: "x:1"}}))
	if err == nil || !strings.Contains(err.Error(), `WithEndpoints[0].protocol: "http"`) {
		t.Errorf("bad WithEndpoints: %v", err)
	}
}

func TestNewServerDoesNotModifyConfig(t *testing.T) {
	cfg := &Config{
		Token:     TokenConfig{Keys: []Key{{ID: "k1", Secret: "0123456789abcdef"}}},
		Apps:      []App{{ID: "demo", Secret: demoSecret, PushKey: "p"}},
		Endpoints: []Endpoint{{Protocol: ProtoTCP, Addr: "gw:1"}},
	}
	ts := newTestServer(t, cfg)
	if cfg.Token.TTL != 0 || cfg.Heartbeat != 0 {
		t.Errorf("NewServer applied defaults to the caller's Config: %+v", cfg)
	}
	cfg.Apps[0].Disabled = true // later changes to the caller's Config do not reach the server
	resp := connectOK(t, ts.URL, req("demo", "d", "", "", now.Unix()))
	if resp.HeartbeatS != 60 || resp.ExpiresAt != now.Add(24*time.Hour).Unix() {
		t.Errorf("defaults: %+v", resp)
	}
}

func TestHealthz(t *testing.T) {
	ts := newTestServer(t, testConfig(t))
	a := do(t, "GET", ts.URL+"/healthz", "")
	if a.status != 200 || string(a.body) != "ok" {
		t.Fatalf("healthz: %d %q", a.status, a.body)
	}
	if a := do(t, "GET", ts.URL+"/metrics", ""); a.status != 404 {
		t.Fatalf("metrics without WithMetrics: %d", a.status)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	cfg := testConfig(t)
	ts := newTestServer(t, cfg, WithMetrics(reg))
	ts2 := newTestServer(t, cfg, WithMetrics(reg)) // a second server shares the counter

	connectOK(t, ts.URL, req("demo", "d", "", "", now.Unix()))
	connectOK(t, ts2.URL, req("demo", "d", "", "", now.Unix()))
	do(t, "POST", ts.URL+"/v1/connect", signed("wrong", req("demo", "d", "", "", now.Unix())))
	do(t, "GET", ts.URL+"/v1/connect", "")

	a := do(t, "GET", ts.URL+"/metrics", "")
	if a.status != 200 {
		t.Fatalf("metrics: %d", a.status)
	}
	for _, want := range []string{
		`pushwire_control_connects_total{result="ok"} 2`,
		`pushwire_control_connects_total{result="bad_sign"} 1`,
		`pushwire_control_connects_total{result="method_not_allowed"} 1`,
		`pushwire_control_connects_total{result="stale_ts"} 0`,
	} {
		if !strings.Contains(string(a.body), want) {
			t.Errorf("metrics lack %q:\n%s", want, a.body)
		}
	}

	// A Registerer that cannot gather: metrics are registered, /metrics is not served.
	wrapped := prometheus.WrapRegistererWith(prometheus.Labels{"instance": "x"}, prometheus.NewRegistry())
	ts3 := newTestServer(t, cfg, WithMetrics(wrapped))
	if a := do(t, "GET", ts3.URL+"/metrics", ""); a.status != 404 {
		t.Errorf("metrics on a non-gatherer: %d", a.status)
	}
}

// syncBuffer is a bytes.Buffer for a logger written from server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestLogging(t *testing.T) {
	var buf syncBuffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ts := newTestServer(t, testConfig(t), WithLogger(log))

	good := req("demo", "dev-1", "alice", "native", now.Unix())
	resp := connectOK(t, ts.URL, good)
	rejected := []string{
		signed("wrong-secret", good),
		signed(demoSecret, req("nope", "dev-1", "", "", now.Unix())),
		signed(demoSecret, req("demo", "dev-1", "", "", now.Unix()-3600)),
		signed("off-secret", req("off", "dev-1", "", "", now.Unix())),
		`{"app":"demo","device":"dev-1","sign":"` + strings.Repeat("ab", 32) + `","x":1}`,
		signed(demoSecret, req("demo", "dev\x00", "", "", now.Unix())),
	}
	for _, body := range rejected {
		do(t, "POST", ts.URL+"/v1/connect", body)
	}

	out := buf.String()
	if n := strings.Count(out, "connect rejected"); n != len(rejected) {
		t.Errorf("%d reject lines for %d rejects:\n%s", n, len(rejected), out)
	}
	secrets := []string{demoSecret, "off-secret", "token-secret-0123456789", "demo-push", resp.Token,
		Sign(demoSecret, "demo", "dev-1", "alice", now.Unix()), strings.Repeat("ab", 32)}
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("log contains the secret or token %q:\n%s", s, out)
		}
	}
	for _, code := range []string{CodeBadSign, CodeUnknownApp, CodeStaleTS, CodeAppDisabled, CodeMalformed, CodeInvalidField} {
		if !strings.Contains(out, "code="+code) {
			t.Errorf("no log line with code=%s:\n%s", code, out)
		}
	}
}

// FuzzConnect posts arbitrary bodies from arbitrary X-Forwarded-For values (trusted, with the
// limits on): the answer is always 200 with a token, or a JSON error whose code matches one of the
// documented statuses, with Retry-After on a 429.
func FuzzConnect(f *testing.F) {
	good := req("demo", "dev-1", "alice", "native", now.Unix())
	for _, seed := range []struct{ body, xff string }{
		{signed(demoSecret, good), ""},
		{signed(demoSecret, req("demo", "dev-1", "", "web", now.Unix())), "192.0.2.1"},
		{signed("off-secret", req("off", "dev-1", "", "", now.Unix())), "2001:db8::1, 192.0.2.1"},
		{signed("x", good), "not an address"},
		{signed(demoSecret, req("demo", "dev-1", "", "", now.Unix()-600)), ","},
		{`{"app":"demo","device":"` + strings.Repeat("d", 200) + `"}`, "::ffff:10.0.0.1"},
		{`{"app":"demo","device":"d\u0000"}`, "fe80::1%eth0"},
		{`{"app":1}`, ""},
		{`{"unknown":true}`, ""},
		{`{} {}`, ""},
		{`[`, ""},
		{``, ""},
		{"\xff\xfe", "\xff"},
	} {
		f.Add(seed.body, seed.xff)
	}

	cfg := testConfig(f)
	cfg.Limits = LimitsConfig{
		ConnectPerDevice:  RateLimit{Rate: Rate{1, time.Second}, Burst: 50},
		ConnectPerSource:  RateLimit{Rate: Rate{1, time.Second}, Burst: 500},
		TrustForwardedFor: true,
	}
	s, err := NewServer(cfg, WithClock(func() time.Time { return now }), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		f.Fatal(err)
	}
	h := s.Handler()
	v, err := cfg.Verifier()
	if err != nil {
		f.Fatal(err)
	}
	statusOf := map[string]int{
		CodeMalformed: 400, CodeBodyTooLarge: 400, CodeInvalidField: 400,
		CodeUnknownApp: 401, CodeBadSign: 401, CodeStaleTS: 401,
		CodeAppDisabled: 403, CodeRateLimited: 429, CodeNoEndpoints: 503,
	}
	f.Fuzz(func(t *testing.T, body, xff string) {
		rec := httptest.NewRecorder()
		hr := httptest.NewRequest("POST", "/v1/connect", strings.NewReader(body))
		hr.Header["X-Forwarded-For"] = []string{xff}
		h.ServeHTTP(rec, hr)
		if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type %q", ct)
		}
		if rec.Code == http.StatusOK {
			var r ConnectResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
				t.Fatalf("200 body %q: %v", rec.Body, err)
			}
			if _, err := v.Verify(r.Token, now); err != nil {
				t.Fatalf("issued token does not verify: %v", err)
			}
			return
		}
		var e ErrorResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Message == "" {
			t.Fatalf("status %d, body %q: %v", rec.Code, rec.Body, err)
		}
		if want, ok := statusOf[e.Error]; !ok || want != rec.Code {
			t.Fatalf("status %d with code %q (message %q)", rec.Code, e.Error, e.Message)
		}
		if ra := rec.Header().Get("Retry-After"); (rec.Code == http.StatusTooManyRequests) != (ra != "") {
			t.Fatalf("status %d with Retry-After %q", rec.Code, ra)
		}
	})
}

// fakeGateways serves /v1/stats like gateways: serving or draining, with a session count.
type fakeGateways struct {
	srv      []*httptest.Server
	draining []atomic.Bool
	sessions []atomic.Int64
}

func newFakeGateways(t *testing.T, n int) *fakeGateways {
	f := &fakeGateways{srv: make([]*httptest.Server, n), draining: make([]atomic.Bool, n), sessions: make([]atomic.Int64, n)}
	for i := range n {
		f.srv[i] = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/v1/stats" {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			state := "serving"
			if f.draining[i].Load() {
				state = "draining"
			}
			_ = json.NewEncoder(w).Encode(map[string]any{"state": state, "sessions": f.sessions[i].Load()})
		}))
		t.Cleanup(f.srv[i].Close)
	}
	return f
}

// watchedServer returns a control server watching endpoints, polled every interval, and a
// function answering a connect's endpoint addresses.
func watchedServer(t *testing.T, interval time.Duration, eps []Endpoint) func() []string {
	cfg := testConfig(t)
	cfg.Endpoints = eps
	s, err := NewServer(cfg, WithClock(func() time.Time { return now }), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Watch(ctx, interval) }()
	t.Cleanup(func() { cancel(); <-done })
	return func() []string {
		a := do(t, http.MethodPost, ts.URL+"/v1/connect", signed(demoSecret, req("demo", "d1", "", "native", now.Unix())))
		if a.status != http.StatusOK {
			return []string{strconv.Itoa(a.status)}
		}
		var r ConnectResponse
		if err := json.Unmarshal(a.body, &r); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range r.Endpoints {
			out = append(out, e.Addr)
		}
		return out
	}
}

func eventuallyEndpoints(t *testing.T, addrs func() []string, want []string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := addrs()
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoints %v, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Endpoints whose gateway drains or stops answering leave the connect answers, and come back
// when serving again.
func TestWatchLeavesOutDrainingGateways(t *testing.T) {
	gws := newFakeGateways(t, 2)
	addrs := watchedServer(t, 20*time.Millisecond, []Endpoint{
		{Protocol: ProtoTCP, Addr: "gw0:7000", Health: gws.srv[0].URL},
		{Protocol: ProtoTCP, Addr: "gw1:7000", Health: gws.srv[1].URL},
		{Protocol: ProtoTCP, Addr: "unwatched:7000"},
	})
	gws.sessions[0].Store(1 << 40) // gw1 stays the least loaded through the test
	eventuallyEndpoints(t, addrs, []string{"gw1:7000", "gw0:7000", "unwatched:7000"})
	gws.draining[0].Store(true)
	eventuallyEndpoints(t, addrs, []string{"gw1:7000", "unwatched:7000"})
	gws.srv[1].Close() // gw1 is gone
	eventuallyEndpoints(t, addrs, []string{"unwatched:7000"})
	gws.draining[0].Store(false)
	eventuallyEndpoints(t, addrs, []string{"gw0:7000", "unwatched:7000"})
}

// New connections go to the least loaded gateway, counting the ones sent there since the last
// probe: a burst of connects spreads instead of landing on one instance.
func TestDispatchByLoad(t *testing.T) {
	gws := newFakeGateways(t, 3)
	gws.sessions[0].Store(500)
	gws.sessions[1].Store(100)
	gws.sessions[2].Store(103)
	// Probes every 2s: the 20 connects below fall between two probes.
	addrs := watchedServer(t, 2*time.Second, []Endpoint{
		{Protocol: ProtoTCP, Addr: "gw0:7000", Health: gws.srv[0].URL},
		{Protocol: ProtoTCP, Addr: "gw1:7000", Health: gws.srv[1].URL},
		{Protocol: ProtoTCP, Addr: "gw2:7000", Health: gws.srv[2].URL},
	})
	eventuallyEndpoints(t, addrs, []string{"gw1:7000", "gw2:7000", "gw0:7000"})
	// Before any probe every watched gateway counts as empty, and connects still spread.
	first := map[string]int{}
	for range 20 {
		first[addrs()[0]]++
	}
	if first["gw0:7000"] != 0 || first["gw1:7000"] == 0 || first["gw2:7000"] == 0 {
		t.Fatalf("first endpoints of 20 connects %v: want gw1 and gw2 shared, gw0 none", first)
	}
}

func TestEndpointHealthValidated(t *testing.T) {
	cfg := testConfig(t)
	_, err := NewServer(cfg, WithEndpoints([]Endpoint{{Protocol: ProtoTCP, Addr: "gw:1", Health: "gw:7080"}}))
	if err == nil || !strings.Contains(err.Error(), ".health") {
		t.Fatalf("NewServer: %v, want an error naming .health", err)
	}
}

// The admin port's /v1/instances lists the watched gateways with what the probes saw.
func TestInstancesHandler(t *testing.T) {
	gws := newFakeGateways(t, 2)
	gws.sessions[1].Store(42)
	gws.draining[0].Store(true)
	cfg := testConfig(t)
	cfg.Endpoints = []Endpoint{
		{Protocol: ProtoTCP, Addr: "gw0:7000", Health: gws.srv[0].URL},
		{Protocol: ProtoTCP, Addr: "gw1:7000", Health: gws.srv[1].URL},
		{Protocol: ProtoTCP, Addr: "unwatched:7000"},
	}
	s, err := NewServer(cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Watch(ctx, 20*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	ts := httptest.NewServer(s.InstancesHandler())
	defer ts.Close()
	want := []Instance{
		{Protocol: ProtoTCP, Addr: "gw0:7000", Health: gws.srv[0].URL, Serving: false, Sessions: -1},
		{Protocol: ProtoTCP, Addr: "gw1:7000", Health: gws.srv[1].URL, Serving: true, Sessions: 42},
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		a := do(t, http.MethodGet, ts.URL+"/v1/instances", "")
		var got struct{ Instances []Instance }
		if err := json.Unmarshal(a.body, &got); err != nil {
			t.Fatal(err)
		}
		if a.status == http.StatusOK && reflect.DeepEqual(got.Instances, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances %d %+v, want %+v", a.status, got.Instances, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if a := do(t, http.MethodPost, ts.URL+"/v1/instances", ""); a.status != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", a.status)
	}
}

// Connects that come before the first probe (control starting with its gateways) spread over the
// watched gateways instead of all landing on the first.
func TestDispatchBeforeFirstProbe(t *testing.T) {
	cfg := testConfig(t)
	cfg.Endpoints = []Endpoint{
		{Protocol: ProtoTCP, Addr: "gw0:7000", Health: "http://127.0.0.1:1"},
		{Protocol: ProtoTCP, Addr: "gw1:7000", Health: "http://127.0.0.1:1"},
	}
	s, err := NewServer(cfg, WithClock(func() time.Time { return now }), WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]int{}
	for range 100 {
		eps, _ := s.dispatch(now, &ConnectRequest{App: "demo", Device: "d", Platform: "native"})
		first[eps[0].Addr]++
	}
	if first["gw0:7000"] != 50 || first["gw1:7000"] != 50 {
		t.Fatalf("first endpoints %v, want 50 each", first)
	}
}
