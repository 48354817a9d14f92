package client

// Tests over real loopback sockets. The fixtures at the top — a fake control layer (httptest) and a
// fake gateway (TCP on 127.0.0.1:0) speaking the frame codec — are just enough of the real ones for
// the SDK's tests.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/core/frame"
)

const testSecret = "s3cret"

// controlRequest is the body of POST /v1/connect as the fake control decodes it (independently of
// the SDK's own type).
type controlRequest struct {
	App      string `json:"app"`
	Device   string `json:"device"`
	User     string `json:"user"`
	Platform string `json:"platform"`
	Network  string `json:"network"`
	SDK      string `json:"sdk"`
	TS       int64  `json:"ts"`
	Sign     string `json:"sign"`
}

type fakeControl struct {
	srv   *httptest.Server
	calls atomic.Int32

	mu        sync.Mutex
	reqs      []controlRequest // accepted (well-signed) requests
	fail      []int            // statuses answered, in order, before any success
	endpoints []Endpoint
}

func newControl(t *testing.T, endpoints ...Endpoint) *fakeControl {
	t.Helper()
	fc := &fakeControl{endpoints: endpoints}
	fc.srv = httptest.NewServer(http.HandlerFunc(fc.serve))
	t.Cleanup(fc.srv.Close)
	return fc
}

func (fc *fakeControl) failWith(statuses ...int) {
	fc.mu.Lock()
	fc.fail = append(fc.fail, statuses...)
	fc.mu.Unlock()
}

func (fc *fakeControl) requests() []controlRequest {
	fc.mu.Lock()
	defer fc.mu.Unlock()
	return append([]controlRequest(nil), fc.reqs...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (fc *fakeControl) serve(w http.ResponseWriter, r *http.Request) {
	fc.calls.Add(1)
	if r.Method != http.MethodPost || r.URL.Path != "/v1/connect" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not_found"})
		return
	}
	var req controlRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "bad_request", "message": err.Error()})
		return
	}
	// The sign, computed here independently of the SDK.
	m := hmac.New(sha256.New, []byte(testSecret))
	_, _ = fmt.Fprintf(m, "%s\n%s\n%s\n%d", req.App, req.Device, req.User, req.TS) // a hash.Hash's Write never fails
	if want := hex.EncodeToString(m.Sum(nil)); req.Sign != want {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "bad_sign", "message": "signature mismatch"})
		return
	}
	fc.mu.Lock()
	fc.reqs = append(fc.reqs, req)
	n := len(fc.reqs)
	status := 0
	if len(fc.fail) > 0 {
		status, fc.fail = fc.fail[0], fc.fail[1:]
	}
	eps := fc.endpoints
	fc.mu.Unlock()
	if status != 0 {
		writeJSON(w, status, map[string]string{"error": fmt.Sprintf("code_%d", status), "message": "refused"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"token":       fmt.Sprintf("tok-%s-%d", req.Device, n),
		"expires_at":  time.Now().Add(time.Hour).Unix(),
		"heartbeat_s": 60,
		"endpoints":   eps,
	})
}

// fakeGateway accepts connections and runs handle for each on its own goroutine.
type fakeGateway struct {
	ln     net.Listener
	proto  string
	handle func(*gwConn)
	wg     sync.WaitGroup

	mu    sync.Mutex
	conns []*gwConn
}

// gwConn is the gateway's side of one connection.
type gwConn struct {
	n   int // 1-based, in accept order
	nc  net.Conn
	rd  *frame.Reader
	wmu sync.Mutex
}

func newGateway(t *testing.T, handle func(*gwConn)) *fakeGateway {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return newGatewayOn(t, "tcp", ln, handle)
}

// newGatewayOn is a fake gateway speaking proto on ln (a TLS or QUIC listener for those).
func newGatewayOn(t *testing.T, proto string, ln net.Listener, handle func(*gwConn)) *fakeGateway {
	t.Helper()
	gw := &fakeGateway{ln: ln, proto: proto, handle: handle}
	gw.wg.Add(1)
	go gw.accept()
	t.Cleanup(gw.close)
	return gw
}

func (gw *fakeGateway) endpoint() Endpoint {
	return Endpoint{Protocol: gw.proto, Addr: gw.ln.Addr().String()}
}

func (gw *fakeGateway) accept() {
	defer gw.wg.Done()
	for {
		nc, err := gw.ln.Accept()
		if err != nil {
			return
		}
		gw.mu.Lock()
		g := &gwConn{n: len(gw.conns) + 1, nc: nc, rd: frame.NewReader(nc, frame.Limits{})}
		gw.conns = append(gw.conns, g)
		gw.mu.Unlock()
		gw.wg.Add(1)
		go func() {
			defer gw.wg.Done()
			defer func() { _ = nc.Close() }()
			gw.handle(g)
		}()
	}
}

func (gw *fakeGateway) close() {
	_ = gw.ln.Close()
	gw.mu.Lock()
	for _, g := range gw.conns {
		_ = g.nc.Close()
	}
	gw.mu.Unlock()
	gw.wg.Wait()
}

// next reads one frame; its Meta and Body are copies.
func (g *gwConn) next() (frame.Frame, error) {
	f, err := g.rd.Next()
	if err != nil {
		return f, err
	}
	f.Meta = frame.Meta(bytes.Clone([]byte(f.Meta)))
	f.Body = bytes.Clone(f.Body)
	return f, nil
}

// send writes frames back to back in one write.
func (g *gwConn) send(fs ...frame.Frame) error {
	var b []byte
	for i := range fs {
		b = frame.Append(b, &fs[i])
	}
	g.wmu.Lock()
	defer g.wmu.Unlock()
	_, err := g.nc.Write(b)
	return err
}

// login reads LOGIN and accepts it with conn "c<n>", node "n1" and hb.
func (g *gwConn) login(hb string) (frame.Frame, error) {
	f, err := g.next()
	if err != nil {
		return f, err
	}
	if f.Type != frame.TypeLogin {
		return f, fmt.Errorf("first frame %s, want LOGIN", f.Type)
	}
	return f, g.send(frame.Frame{
		Header: frame.Header{Type: frame.TypeLoginAck, Seq: f.Seq},
		Meta:   meta("conn", fmt.Sprintf("c%d", g.n), "hb", hb, "node", "n1"),
	})
}

// serve reads until the connection ends, answering PING with PONG when pong is set and passing
// every other frame to onFrame.
func (g *gwConn) serve(pong bool, onFrame func(frame.Frame)) {
	for {
		f, err := g.next()
		if err != nil {
			return
		}
		if f.Type == frame.TypePing {
			if pong {
				_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypePong}})
			}
			continue
		}
		if onFrame != nil {
			onFrame(f)
		}
	}
}

// loginAndServe is the plain gateway: accept the login, answer pings.
func loginAndServe(g *gwConn) {
	if _, err := g.login("60"); err != nil {
		return
	}
	g.serve(true, nil)
}

func meta(kv ...string) frame.Meta {
	var m frame.Meta
	for i := 0; i+1 < len(kv); i += 2 {
		m = frame.AppendMetaString(m, kv[i], kv[i+1])
	}
	return m
}

// newTestClient makes a client of ctl with short backoff, a private HTTP client and no logs; mod
// may change the config. The client is closed at cleanup, before the fixtures.
func newTestClient(t *testing.T, ctl *fakeControl, mod func(*Config)) *Client {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{}, Timeout: 5 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	cfg := Config{
		ControlURL: ctl.srv.URL,
		App:        "app1",
		Secret:     testSecret,
		Device:     "dev1",
		User:       "u1",
		HTTPClient: hc,
		BackoffMin: time.Millisecond,
		BackoffMax: 10 * time.Millisecond,
		Logger:     slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// stateLog records OnState calls.
type stateLog struct {
	mu     sync.Mutex
	states []State
	errs   []error
}

func (s *stateLog) on(st State, err error) {
	s.mu.Lock()
	s.states = append(s.states, st)
	s.errs = append(s.errs, err)
	s.mu.Unlock()
}

func (s *stateLog) get() ([]State, []error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]State(nil), s.states...), append([]error(nil), s.errs...)
}

// last returns the error of the last call with state st.
func (s *stateLog) last(st State) (error, bool) {
	states, errs := s.get()
	for i := len(states) - 1; i >= 0; i-- {
		if states[i] == st {
			return errs[i], true
		}
	}
	return nil, false
}

func (s *stateLog) count(st State) int {
	states, _ := s.get()
	n := 0
	for _, x := range states {
		if x == st {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds, failing the test after a generous timeout.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// recv receives from ch, failing the test after a generous timeout.
func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewValidation(t *testing.T) {
	ok := Config{ControlURL: "http://127.0.0.1:7100", App: "a", Secret: "s", Device: "d"}
	tests := []struct {
		name string
		mod  func(*Config)
		want string // substring of the error; "" means no error
	}{
		{"complete", func(*Config) {}, ""},
		{"no control URL", func(c *Config) { c.ControlURL = "" }, "ControlURL"},
		{"no app", func(c *Config) { c.App = "" }, "Config.App"},
		{"no secret", func(c *Config) { c.Secret = "" }, "Config.Secret"},
		{"no device", func(c *Config) { c.Device = "" }, "Config.Device"},
		{"bad URL", func(c *Config) { c.ControlURL = "127.0.0.1:7100" }, "ControlURL"},
		{"backoff inverted", func(c *Config) { c.BackoffMin, c.BackoffMax = time.Second, time.Millisecond }, "BackoffMax"},
		{"body too large", func(c *Config) { c.MaxBody = frame.MaxBodyLimit + 1 }, "MaxBody"},
		{"unknown transport", func(c *Config) { c.Transports = []string{"tcp", "http"} }, "Config.Transports"},
		{"repeated transport", func(c *Config) { c.Transports = []string{"ws", "ws"} }, "Config.Transports"},
		{"relative ws path", func(c *Config) { c.WSPath = "ws" }, "Config.WSPath"},
		{"local address not an IP", func(c *Config) { c.LocalAddr = "localhost" }, "Config.LocalAddr"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			c, err := New(cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want == "":
				if c.cfg.Platform != "native" || c.cfg.Network != "wifi" || c.cfg.SDK != "pushwire-go/1" ||
					c.cfg.BackoffMin != 200*time.Millisecond || c.cfg.BackoffMax != 30*time.Second ||
					c.cfg.MaxBody != frame.DefaultMaxBody || c.cfg.HTTPClient == nil || c.cfg.Dial == nil ||
					!reflect.DeepEqual(c.cfg.Transports, []string{"tcp", "tls", "ws", "wss", "quic"}) || c.cfg.WSPath != "/ws" {
					t.Errorf("defaults not applied: %+v", c.cfg)
				}
			case err == nil || !strings.Contains(err.Error(), tc.want):
				t.Fatalf("New: %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestSign(t *testing.T) {
	// Expected values from: printf 'app1\ndev1\nu1\n1700000000' | openssl dgst -sha256 -hmac s3cret
	tests := []struct {
		app, device, user string
		ts                int64
		want              string
	}{
		{"app1", "dev1", "u1", 1700000000, "ddfb1f20d422af00dfb5ea1e100f235442e73d91463da5158bdb21dd0decca22"},
		{"app1", "dev1", "", 1700000000, "19a3d4ae26a23897ef8d3eef435738684e06efef3c96ab0aa8f92698afb71728"},
	}
	for _, tc := range tests {
		if got := sign(testSecret, tc.app, tc.device, tc.user, tc.ts); got != tc.want {
			t.Errorf("sign(%q, %q, %q, %d) = %s, want %s", tc.app, tc.device, tc.user, tc.ts, got, tc.want)
		}
	}
}

func TestFetchToken(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header map[string]string
		body   string
		check  func(t *testing.T, info *ConnectInfo, err error)
	}{
		{"ok", 200, nil,
			`{"token":"tk","expires_at":1900000000,"heartbeat_s":45,"endpoints":[{"protocol":"ws","addr":"a:1"},{"protocol":"tcp","addr":"b:2"}]}`,
			func(t *testing.T, info *ConnectInfo, err error) {
				if err != nil {
					t.Fatal(err)
				}
				want := ConnectInfo{Token: "tk", ExpiresAt: time.Unix(1900000000, 0), Heartbeat: 45 * time.Second,
					Endpoints: []Endpoint{{"ws", "a:1"}, {"tcp", "b:2"}}}
				if !reflect.DeepEqual(*info, want) {
					t.Errorf("got %+v, want %+v", *info, want)
				}
			}},
		{"401 permanent", 401, nil, `{"error":"bad_sign","message":"no"}`,
			func(t *testing.T, _ *ConnectInfo, err error) {
				var ce *ControlError
				if !errors.As(err, &ce) || ce.Status != 401 || ce.Code != "bad_sign" || ce.Message != "no" || ce.Temporary {
					t.Errorf("err = %#v, want permanent 401 bad_sign", err)
				}
			}},
		{"503 temporary with Retry-After", 503, map[string]string{"Retry-After": "2"}, `{"error":"overloaded"}`,
			func(t *testing.T, _ *ConnectInfo, err error) {
				var ce *ControlError
				if !errors.As(err, &ce) || ce.Status != 503 || !ce.Temporary || ce.RetryAfter != 2*time.Second {
					t.Errorf("err = %#v, want temporary 503 retrying after 2s", err)
				}
			}},
		{"429 without JSON", 429, nil, `slow down`,
			func(t *testing.T, _ *ConnectInfo, err error) {
				var ce *ControlError
				if !errors.As(err, &ce) || ce.Status != 429 || !ce.Temporary {
					t.Errorf("err = %#v, want temporary 429", err)
				}
			}},
		{"200 garbage", 200, nil, `<html>`,
			func(t *testing.T, _ *ConnectInfo, err error) {
				var ce *ControlError
				if err == nil || errors.As(err, &ce) || reasonKey(err) != "control" {
					t.Errorf("err = %v, want a malformed-answer error", err)
				}
			}},
		{"200 without token", 200, nil, `{"endpoints":[]}`,
			func(t *testing.T, _ *ConnectInfo, err error) {
				if err == nil || !strings.Contains(err.Error(), "no token") {
					t.Errorf("err = %v, want a missing-token error", err)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				for k, v := range tc.header {
					w.Header().Set(k, v)
				}
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			hc := &http.Client{Transport: &http.Transport{}}
			defer hc.CloseIdleConnections()
			info, err := FetchToken(context.Background(), Config{
				ControlURL: srv.URL + "/", App: "a", Secret: "s", Device: "d", HTTPClient: hc,
			})
			tc.check(t, info, err)
		})
	}
}

func TestConnectLogin(t *testing.T) {
	logins := make(chan frame.Frame, 1)
	gw := newGateway(t, func(g *gwConn) {
		f, err := g.login("45")
		if err != nil {
			t.Error(err)
			return
		}
		logins <- f
		g.serve(true, nil)
	})
	ctl := newControl(t, gw.endpoint())
	var states stateLog
	c := newTestClient(t, ctl, func(cfg *Config) { cfg.OnState = states.on })

	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if c.ConnID() != "c1" || c.Node() != "n1" || c.Heartbeat() != 45*time.Second {
		t.Errorf("ConnID, Node, Heartbeat = %q, %q, %v; want c1, n1, 45s", c.ConnID(), c.Node(), c.Heartbeat())
	}

	login := recv(t, logins, "LOGIN")
	if login.Type != frame.TypeLogin || login.Seq != 1 || login.Biz != 0 || len(login.Body) != 0 {
		t.Errorf("LOGIN header %+v, want type LOGIN, seq 1, biz 0, no body", login.Header)
	}
	for k, want := range map[string]string{
		"token": "tok-dev1-1", "device": "dev1", "app": "app1", "platform": "native", "sdk": "pushwire-go/1", "net": "wifi",
	} {
		if got := login.Meta.GetString(k); got != want {
			t.Errorf("LOGIN meta %s = %q, want %q", k, got, want)
		}
	}

	reqs := ctl.requests() // the fake control accepted it: the sign matched its own computation
	if len(reqs) != 1 {
		t.Fatalf("control saw %d good requests, want 1", len(reqs))
	}
	r := reqs[0]
	if r.App != "app1" || r.Device != "dev1" || r.User != "u1" || r.Platform != "native" || r.Network != "wifi" || r.SDK != "pushwire-go/1" {
		t.Errorf("control request %+v", r)
	}
	if d := time.Since(time.Unix(r.TS, 0)); d < -time.Minute || d > time.Minute {
		t.Errorf("ts %d is not now", r.TS)
	}

	if err := c.Connect(context.Background()); !errors.Is(err, ErrConnected) {
		t.Errorf("second Connect: %v, want ErrConnected", err)
	}
	if s := c.Stats(); s.Connects != 1 || len(s.Errors) != 0 {
		t.Errorf("stats %+v", s)
	}
	if got, _ := states.get(); !reflect.DeepEqual(got, []State{Connecting, Connected}) {
		t.Errorf("states %v, want [connecting connected]", got)
	}
}

func TestEndpointFallback(t *testing.T) {
	gw := newGateway(t, loginAndServe)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	if err := dead.Close(); err != nil { // connection refused from now on
		t.Fatal(err)
	}
	ctl := newControl(t, Endpoint{"sctp", "127.0.0.1:1"}, Endpoint{"tcp", deadAddr}, gw.endpoint())
	c := newTestClient(t, ctl, nil)
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if s := c.Stats(); s.Errors["dial"] != 1 || len(s.Errors) != 1 {
		t.Errorf("errors %v, want one dial failure", s.Errors)
	}

	t.Run("no supported protocol", func(t *testing.T) {
		ctl := newControl(t, Endpoint{"sctp", "127.0.0.1:1"})
		c := newTestClient(t, ctl, nil)
		if err := c.Connect(context.Background()); !errors.Is(err, ErrNoEndpoint) {
			t.Errorf("Connect: %v, want ErrNoEndpoint", err)
		}
	})
}

func TestLoginFailure(t *testing.T) {
	tests := []struct {
		name  string
		reply func(g *gwConn, login frame.Frame)
		check func(t *testing.T, err error)
	}{
		{"auth failed", func(g *gwConn, login frame.Frame) {
			_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypeLoginAck, Seq: login.Seq, Code: frame.CodeAuthFailed},
				Meta: meta("msg", "token expired")})
		}, func(t *testing.T, err error) {
			var se *Error
			if !errors.As(err, &se) || se.Code != frame.CodeAuthFailed || se.Msg != "token expired" || se.Frame != frame.TypeLoginAck {
				t.Errorf("err = %v, want *Error AUTH_FAILED from LOGIN_ACK", err)
			}
		}},
		{"error frame", func(g *gwConn, _ frame.Frame) {
			_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypeError, Code: frame.CodeBadFrame}, Meta: meta("msg", "bad")})
		}, func(t *testing.T, err error) {
			var se *Error
			if !errors.As(err, &se) || se.Code != frame.CodeBadFrame || se.Frame != frame.TypeError {
				t.Errorf("err = %v, want *Error BAD_FRAME from ERROR", err)
			}
		}},
		{"wrong seq", func(g *gwConn, login frame.Frame) {
			_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypeLoginAck, Seq: login.Seq + 1}})
		}, func(t *testing.T, err error) {
			if reasonKey(err) != "protocol" {
				t.Errorf("err = %v, want a protocol error", err)
			}
		}},
		{"closed without answer", func(*gwConn, frame.Frame) {}, func(t *testing.T, err error) {
			var se *Error
			if err == nil || errors.As(err, &se) {
				t.Errorf("err = %v, want an I/O error", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw := newGateway(t, func(g *gwConn) {
				f, err := g.next()
				if err != nil {
					return
				}
				tc.reply(g, f)
			})
			ctl := newControl(t, gw.endpoint())
			var states stateLog
			c := newTestClient(t, ctl, func(cfg *Config) { cfg.OnState = states.on })
			err := c.Connect(context.Background())
			tc.check(t, err)
			if c.ConnID() != "" || states.count(Connected) != 0 || states.count(Disconnected) != 0 {
				got, _ := states.get()
				t.Errorf("failed login left ConnID %q, states %v", c.ConnID(), got)
			}
			if s := c.Stats(); s.Connects != 0 || len(s.Errors) != 1 {
				t.Errorf("stats %+v, want no connect and one error", s)
			}
		})
	}
}

func TestHeartbeat(t *testing.T) {
	tests := []struct {
		name      string
		hb        string        // LOGIN_ACK hb, in hbUnit
		heartbeat time.Duration // Config.Heartbeat
		pong      bool
	}{
		{"gateway hb", "1", 0, true},
		{"config override", "60", 20 * time.Millisecond, true},
		{"silent gateway", "1", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var pings atomic.Int32
			gw := newGateway(t, func(g *gwConn) {
				if _, err := g.login(tc.hb); err != nil {
					return
				}
				for {
					f, err := g.next()
					if err != nil {
						return
					}
					if f.Type == frame.TypePing {
						pings.Add(1)
						if tc.pong {
							_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypePong}})
						}
					}
				}
			})
			ctl := newControl(t, gw.endpoint())
			var states stateLog
			c := newTestClient(t, ctl, func(cfg *Config) {
				cfg.Heartbeat = tc.heartbeat
				cfg.OnState = states.on
			})
			c.hbUnit = 20 * time.Millisecond
			if err := c.Connect(context.Background()); err != nil {
				t.Fatal(err)
			}
			if c.Heartbeat() != 20*time.Millisecond {
				t.Errorf("Heartbeat %v, want 20ms", c.Heartbeat())
			}
			if tc.pong {
				waitFor(t, "3 pings and pongs", func() bool {
					s := c.Stats()
					return pings.Load() >= 3 && s.Pings >= 3 && s.Pongs >= 3
				})
				if states.count(Disconnected) != 0 {
					t.Errorf("disconnected although the gateway answers")
				}
				return
			}
			waitFor(t, "heartbeat timeout", func() bool { return states.count(Disconnected) == 1 })
			if err, _ := states.last(Disconnected); !errors.Is(err, ErrHeartbeatTimeout) {
				t.Errorf("disconnect reason %v, want ErrHeartbeatTimeout", err)
			}
			if s := c.Stats(); s.Errors["heartbeat_timeout"] != 1 || s.Pongs != 0 || pings.Load() < 2 {
				t.Errorf("stats %+v, gateway saw %d pings", s, pings.Load())
			}
		})
	}
}

func TestPushInOrder(t *testing.T) {
	const n = 300
	gw := newGateway(t, func(g *gwConn) {
		if _, err := g.login("60"); err != nil {
			return
		}
		// Two batches, each in one write, so frames share the reader's buffer and later ones
		// overwrite it: a payload that aliased the buffer would change under the test.
		for batch := 0; batch < 2; batch++ {
			var fs []frame.Frame
			for i := batch * n / 2; i < (batch+1)*n/2; i++ {
				m := meta("id", fmt.Sprintf("m%d", i))
				if i%3 == 0 {
					m = frame.AppendMetaString(m, "group", "g1")
				}
				fs = append(fs, frame.Frame{Header: frame.Header{Type: frame.TypePush, Biz: 9, Seq: uint32(i + 1)},
					Meta: m, Body: []byte(fmt.Sprintf("payload-%04d", i))})
			}
			if err := g.send(fs...); err != nil {
				return
			}
		}
		g.serve(true, nil)
	})
	ctl := newControl(t, gw.endpoint())
	var mu sync.Mutex
	var got []Push
	c := newTestClient(t, ctl, func(cfg *Config) {
		cfg.OnPush = func(p Push) {
			mu.Lock()
			got = append(got, p)
			mu.Unlock()
		}
	})
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "all pushes", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for i, p := range got {
		wantGroup := ""
		if i%3 == 0 {
			wantGroup = "g1"
		}
		if p.Biz != 9 || p.Seq != uint32(i+1) || p.ID != fmt.Sprintf("m%d", i) || p.Group != wantGroup ||
			string(p.Payload) != fmt.Sprintf("payload-%04d", i) || p.Received.IsZero() {
			t.Fatalf("push %d = %+v (payload %q)", i, p, p.Payload)
		}
	}
	if s := c.Stats(); s.Pushes != n || s.Duplicates != 0 || s.Gaps != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestPushAckDedup(t *testing.T) {
	type ack struct {
		biz uint16
		id  string
	}
	acks := make(chan ack, 10)
	push := func(seq uint32, biz uint16, id string, flags uint8, body string) frame.Frame {
		return frame.Frame{Header: frame.Header{Type: frame.TypePush, Flags: flags, Biz: biz, Seq: seq},
			Meta: meta("id", id), Body: []byte(body)}
	}
	gw := newGateway(t, func(g *gwConn) {
		if _, err := g.login("60"); err != nil {
			return
		}
		_ = g.send(
			push(1, 7, "a", frame.FlagAck, "one"),
			push(2, 8, "b", frame.FlagAck, "two"),
			push(3, 7, "a", frame.FlagAck, "one again"), // redelivery: acked, not delivered
			push(5, 7, "c", 0, "three"),                 // no ack asked; seq 4 skipped
		)
		g.serve(true, func(f frame.Frame) {
			if f.Type == frame.TypePushAck {
				acks <- ack{f.Biz, f.Meta.GetString("id")}
			}
		})
	})
	ctl := newControl(t, gw.endpoint())
	delivered := make(chan Push, 10)
	c := newTestClient(t, ctl, func(cfg *Config) { cfg.OnPush = func(p Push) { delivered <- p } })
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"a:one", "b:two", "c:three"} {
		p := recv(t, delivered, "push")
		if got := p.ID + ":" + string(p.Payload); got != want {
			t.Errorf("push %d = %s, want %s", i, got, want)
		}
	}
	for i, want := range []ack{{7, "a"}, {8, "b"}, {7, "a"}} {
		if got := recv(t, acks, "PUSH_ACK"); got != want {
			t.Errorf("ack %d = %+v, want %+v", i, got, want)
		}
	}
	select {
	case p := <-delivered:
		t.Errorf("unexpected delivery %+v", p)
	case a := <-acks:
		t.Errorf("unexpected ack %+v", a)
	case <-time.After(20 * time.Millisecond):
	}
	if s := c.Stats(); s.Pushes != 4 || s.Duplicates != 1 || s.Gaps != 1 {
		t.Errorf("stats %+v, want 4 pushes, 1 duplicate, 1 gap", s)
	}
}

func TestDedupRing(t *testing.T) {
	var d dedup
	for i := 0; i < dedupSize; i++ {
		if !d.add([]byte(strconv.Itoa(i))) {
			t.Fatalf("id %d reported seen", i)
		}
	}
	if d.add([]byte("0")) || d.add([]byte(strconv.Itoa(dedupSize-1))) {
		t.Fatal("remembered ids reported new")
	}
	if !d.add([]byte("new")) { // evicts "0"
		t.Fatal("new id reported seen")
	}
	if !d.add([]byte("0")) { // evicted, so new again (and evicts "1")
		t.Error("evicted id still remembered")
	}
	if d.add([]byte("2")) || !d.add([]byte("1")) {
		t.Error("eviction order is not oldest first")
	}
	if len(d.set) != dedupSize || len(d.ring) != dedupSize {
		t.Errorf("set %d, ring %d: want both %d", len(d.set), len(d.ring), dedupSize)
	}
}

func TestRequest(t *testing.T) {
	// The gateway reads two requests, then answers them in reverse order; a third gets an error.
	gw := newGateway(t, func(g *gwConn) {
		if _, err := g.login("60"); err != nil {
			return
		}
		var reqs []frame.Frame
		g.serve(true, func(f frame.Frame) {
			if f.Type != frame.TypeRequest && f.Type != frame.TypeJoin {
				return
			}
			if f.Type == frame.TypeJoin || string(f.Body) == "fail" {
				code, msg := frame.CodeBackendError, "backend said no"
				if f.Type == frame.TypeJoin {
					code, msg = frame.CodeOK, ""
				}
				m := meta("group", f.Meta.GetString("group"))
				if msg != "" {
					m = meta("msg", msg)
				}
				_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypeResponse, Code: code, Biz: f.Biz, Seq: f.Seq}, Meta: m})
				return
			}
			if reqs = append(reqs, f); len(reqs) < 2 {
				return
			}
			for i := len(reqs) - 1; i >= 0; i-- {
				r := reqs[i]
				_ = g.send(frame.Frame{
					Header: frame.Header{Type: frame.TypeResponse, Biz: r.Biz, Seq: r.Seq},
					Meta:   meta("echo", r.Meta.GetString("k")),
					Body:   append([]byte("re:"), r.Body...),
				})
			}
			reqs = nil
		})
	})
	ctl := newControl(t, gw.endpoint())
	c := newTestClient(t, ctl, nil)
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	bodies := []string{"one", "two"}
	resps := make([]*Response, len(bodies))
	errs := make([]error, len(bodies))
	var wg sync.WaitGroup
	for i, b := range bodies {
		wg.Go(func() {
			resps[i], errs[i] = c.Request(ctx, 3, meta("k", b), []byte(b))
		})
	}
	wg.Wait()
	for i, b := range bodies {
		if errs[i] != nil {
			t.Fatalf("request %s: %v", b, errs[i])
		}
		r := resps[i]
		if r.Code != frame.CodeOK || r.Err() != nil || string(r.Body) != "re:"+b || r.Meta.GetString("echo") != b {
			t.Errorf("request %s answered %+v (body %q)", b, r, r.Body)
		}
	}

	r, err := c.Request(ctx, 3, nil, []byte("fail"))
	if err != nil {
		t.Fatal(err)
	}
	var se *Error
	if r.Code != frame.CodeBackendError || r.Msg != "backend said no" || !errors.As(r.Err(), &se) || se.Code != frame.CodeBackendError {
		t.Errorf("failed request answered %+v, Err %v", r, r.Err())
	}

	r, err = c.Join(ctx, 3, "room")
	if err != nil || r.Code != frame.CodeOK || r.Meta.GetString("group") != "room" {
		t.Errorf("Join: %+v, %v", r, err)
	}

	if _, err := c.Request(ctx, 0, nil, nil); err == nil {
		t.Error("Request with biz 0 succeeded")
	}
}

func TestRequestFailures(t *testing.T) {
	gw := newGateway(t, func(g *gwConn) {
		if _, err := g.login("60"); err != nil {
			return
		}
		g.serve(true, func(f frame.Frame) {
			if string(f.Body) == "drop" {
				_ = g.nc.Close() // the connection is lost while the request waits
			}
		})
	})
	ctl := newControl(t, gw.endpoint())
	c := newTestClient(t, ctl, nil)
	if _, err := c.Request(context.Background(), 1, nil, nil); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Request before Connect: %v, want ErrNotConnected", err)
	}
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := c.Request(ctx, 1, nil, []byte("unanswered")); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("unanswered Request: %v, want DeadlineExceeded", err)
	}
	if cn := c.current(); cn == nil {
		t.Fatal("not connected")
	} else {
		cn.mu.Lock()
		n := len(cn.pending)
		cn.mu.Unlock()
		if n != 0 {
			t.Error("a request that gave up is still pending")
		}
	}

	if _, err := c.Request(context.Background(), 1, nil, []byte("drop")); !errors.Is(err, ErrConnLost) || reasonKey(err) != "eof" {
		t.Errorf("Request on a lost connection: %v, want ErrConnLost (eof)", err)
	}
}

func TestErrorFrame(t *testing.T) {
	gw := newGateway(t, func(g *gwConn) {
		if _, err := g.login("60"); err != nil {
			return
		}
		_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypeError, Code: frame.CodeIdleTimeout}, Meta: meta("msg", "idle")})
		g.serve(true, nil)
	})
	ctl := newControl(t, gw.endpoint())
	var states stateLog
	c := newTestClient(t, ctl, func(cfg *Config) { cfg.OnState = states.on })
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "disconnect", func() bool { return states.count(Disconnected) == 1 })
	err, _ := states.last(Disconnected)
	var se *Error
	if !errors.As(err, &se) || se.Code != frame.CodeIdleTimeout || se.Msg != "idle" || se.Frame != frame.TypeError {
		t.Errorf("disconnect reason %v, want *Error IDLE_TIMEOUT", err)
	}
	if s := c.Stats(); s.Errors["IDLE_TIMEOUT"] != 1 {
		t.Errorf("errors %v", s.Errors)
	}
	if c.ConnID() != "" {
		t.Errorf("ConnID %q after disconnect", c.ConnID())
	}
}

// runClient starts c.Run and returns its result channel; the test's cleanup waits for it.
func runClient(t *testing.T, c *Client, ctx context.Context) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(ctx) }()
	return errc
}

func TestRunControlPermanent(t *testing.T) {
	for _, status := range []int{400, 401, 403} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			ctl := newControl(t) // never reached past the failure
			ctl.failWith(status, status, status)
			var states stateLog
			c := newTestClient(t, ctl, func(cfg *Config) { cfg.OnState = states.on })
			err := recv(t, runClient(t, c, context.Background()), "Run to end")
			var ce *ControlError
			if !errors.As(err, &ce) || ce.Status != status || ce.Temporary {
				t.Fatalf("Run: %v, want a permanent ControlError %d", err, status)
			}
			if n := ctl.calls.Load(); n != 1 {
				t.Errorf("control called %d times, want 1", n)
			}
			if err, ok := states.last(Closed); !ok || !errors.As(err, &ce) {
				t.Errorf("no Closed state with the control error: %v", err)
			}
		})
	}
	t.Run("bad secret", func(t *testing.T) {
		ctl := newControl(t)
		c := newTestClient(t, ctl, func(cfg *Config) { cfg.Secret = "wrong" })
		var ce *ControlError
		if err := c.Run(context.Background()); !errors.As(err, &ce) || ce.Code != "bad_sign" {
			t.Fatalf("Run: %v, want bad_sign", err)
		}
	})
}

func TestRunControlRetry(t *testing.T) {
	for _, status := range []int{429, 503} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			gw := newGateway(t, loginAndServe)
			ctl := newControl(t, gw.endpoint())
			ctl.failWith(status, status)
			var states stateLog
			c := newTestClient(t, ctl, func(cfg *Config) { cfg.OnState = states.on })
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := runClient(t, c, ctx)
			waitFor(t, "connected", func() bool { return states.count(Connected) == 1 })
			if n := ctl.calls.Load(); n != 3 {
				t.Errorf("control called %d times, want 3", n)
			}
			key := "control_" + strconv.Itoa(status)
			if s := c.Stats(); s.Errors[key] != 2 || s.Connects != 1 || s.Reconnects != 0 {
				t.Errorf("stats %+v, want 2 %s", s, key)
			}
			// Each retry's Connecting carries the previous failure.
			_, errs := states.get()
			var ce *ControlError
			if !errors.As(errs[1], &ce) || ce.Status != status {
				t.Errorf("second Connecting carries %v", errs[1])
			}
			cancel()
			if err := recv(t, errc, "Run to end"); !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v, want context.Canceled", err)
			}
			if got, _ := states.get(); states.count(Disconnected) != 1 {
				t.Errorf("states %v", got)
			}
		})
	}
}

func TestRunReconnect(t *testing.T) {
	gw := newGateway(t, func(g *gwConn) {
		if _, err := g.login("60"); err != nil || g.n == 1 {
			return // the first connection is closed by the server right after login
		}
		g.serve(true, nil)
	})
	ctl := newControl(t, gw.endpoint())
	var states stateLog
	c := newTestClient(t, ctl, func(cfg *Config) { cfg.OnState = states.on })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := runClient(t, c, ctx)
	waitFor(t, "reconnect", func() bool { return c.Stats().Reconnects == 1 && c.ConnID() == "c2" })
	s := c.Stats()
	if s.Connects != 2 || s.Errors["eof"] != 1 {
		t.Errorf("stats %+v", s)
	}
	if n := len(ctl.requests()); n != 2 {
		t.Errorf("control saw %d requests: a reconnect goes through control", n)
	}
	cancel()
	if err := recv(t, errc, "Run to end"); !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
	want := []State{Connecting, Connected, Disconnected, Connecting, Connected, Disconnected, Closed}
	if got, _ := states.get(); !reflect.DeepEqual(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	if s := c.Stats(); len(s.Errors) != 1 {
		t.Errorf("a local stop was counted as an error: %v", s.Errors)
	}
}

func TestRunGoaway(t *testing.T) {
	const retry = 300 * time.Millisecond
	for _, keepOpen := range []bool{false, true} {
		name := "gateway closes"
		if keepOpen {
			name = "gateway keeps it open"
		}
		t.Run(name, func(t *testing.T) {
			sent := make(chan time.Time, 1)
			second := make(chan time.Time, 1)
			gw := newGateway(t, func(g *gwConn) {
				if _, err := g.login("60"); err != nil {
					return
				}
				if g.n > 1 {
					second <- time.Now()
					g.serve(true, nil)
					return
				}
				sent <- time.Now()
				_ = g.send(frame.Frame{
					Header: frame.Header{Type: frame.TypeGoaway, Code: frame.CodeShuttingDown},
					Meta:   meta("reason", "drain", "retry_ms", strconv.Itoa(int(retry/time.Millisecond))),
				})
				if keepOpen {
					g.serve(true, nil) // until the client leaves
				}
			})
			ctl := newControl(t, gw.endpoint())
			var states stateLog
			// A backoff this short would reconnect at once: only retry_ms makes it wait.
			c := newTestClient(t, ctl, func(cfg *Config) {
				cfg.OnState = states.on
				cfg.BackoffMin, cfg.BackoffMax = time.Millisecond, time.Millisecond
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			errc := runClient(t, c, ctx)
			t0 := recv(t, sent, "GOAWAY sent")
			t1 := recv(t, second, "second login")
			if d := t1.Sub(t0); d < retry/2 {
				t.Errorf("reconnected %v after GOAWAY with retry_ms %v", d, retry)
			}
			err, _ := states.last(Disconnected)
			var se *Error
			if !errors.As(err, &se) || se.Frame != frame.TypeGoaway || se.Code != frame.CodeShuttingDown || se.Msg != "drain" {
				t.Errorf("disconnect reason %v, want the GOAWAY", err)
			}
			waitFor(t, "reconnect counted", func() bool { return c.Stats().Reconnects == 1 })
			if s := c.Stats(); s.Errors["goaway"] != 1 || len(s.Errors) != 1 {
				t.Errorf("errors %v", s.Errors)
			}
			cancel()
			if err := recv(t, errc, "Run to end"); !errors.Is(err, context.Canceled) {
				t.Errorf("Run: %v", err)
			}
		})
	}
}

func TestCloseEndsRun(t *testing.T) {
	gw := newGateway(t, loginAndServe)
	ctl := newControl(t, gw.endpoint())
	var states stateLog
	c := newTestClient(t, ctl, func(cfg *Config) { cfg.OnState = states.on })
	ignore := goleak.IgnoreCurrent() // the fixtures' listeners
	errc := runClient(t, c, context.Background())
	waitFor(t, "connected", func() bool { return states.count(Connected) == 1 })

	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, errc, "Run to end"); !errors.Is(err, ErrClosed) {
		t.Errorf("Run: %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := c.Connect(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Connect after Close: %v", err)
	}
	if err := c.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v", err)
	}
	if _, err := c.Request(context.Background(), 1, nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Request after Close: %v", err)
	}
	got, errs := states.get()
	if want := []State{Connecting, Connected, Disconnected, Closed}; !reflect.DeepEqual(got, want) {
		t.Errorf("states %v, want %v", got, want)
	}
	if !errors.Is(errs[2], ErrClosed) {
		t.Errorf("disconnect reason %v, want ErrClosed", errs[2])
	}
	if s := c.Stats(); len(s.Errors) != 0 {
		t.Errorf("Close counted as an error: %v", s.Errors)
	}
	c.cfg.HTTPClient.CloseIdleConnections()
	goleak.VerifyNone(t, ignore)
}

func TestCloseDuringConnect(t *testing.T) {
	// The gateway never answers LOGIN: Close must cancel the attempt.
	login := make(chan frame.Type, 1)
	gw := newGateway(t, func(g *gwConn) {
		f, _ := g.next()
		login <- f.Type
		_, _ = g.next()
	})
	ctl := newControl(t, gw.endpoint())
	c := newTestClient(t, ctl, nil)
	errc := make(chan error, 1)
	go func() { errc <- c.Connect(context.Background()) }()
	if ft := recv(t, login, "LOGIN at the gateway"); ft != frame.TypeLogin {
		t.Fatalf("first frame %v, want LOGIN", ft)
	}
	_ = c.Close()
	if err := recv(t, errc, "Connect to end"); !errors.Is(err, ErrClosed) {
		t.Errorf("Connect: %v, want ErrClosed", err)
	}
}

func TestBackoff(t *testing.T) {
	c := &Client{cfg: Config{BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second}}
	for attempt, ceiling := range []time.Duration{100, 200, 400, 800, 1000, 1000, 1000} {
		ceiling *= time.Millisecond
		for range 50 {
			if d := c.backoff(attempt); d < 0 || d > ceiling {
				t.Fatalf("backoff(%d) = %v, outside [0, %v]", attempt, d, ceiling)
			}
		}
	}
	if d := c.backoff(1000); d > time.Second {
		t.Errorf("backoff(1000) = %v", d)
	}
	for range 50 {
		if d := jitter(time.Second); d < 750*time.Millisecond || d > 1250*time.Millisecond {
			t.Fatalf("jitter(1s) = %v", d)
		}
	}
}

func TestCloseFromCallback(t *testing.T) {
	gw := newGateway(t, func(g *gwConn) {
		if _, err := g.login("60"); err != nil {
			return
		}
		_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypePush, Flags: frame.FlagAck, Biz: 1, Seq: 1}, Meta: meta("id", "x")})
		g.serve(true, nil)
	})
	ctl := newControl(t, gw.endpoint())
	var states stateLog
	closed := make(chan error, 1)
	var c *Client
	c = newTestClient(t, ctl, func(cfg *Config) {
		cfg.OnState = states.on
		cfg.OnPush = func(Push) { closed <- c.Close() } // must not deadlock waiting for its own reader
	})
	// Run adopts the connection Connect made.
	if err := c.Connect(context.Background()); err != nil {
		t.Fatal(err)
	}
	errc := runClient(t, c, context.Background())
	if err := recv(t, closed, "Close in OnPush"); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, errc, "Run to end"); !errors.Is(err, ErrClosed) {
		t.Errorf("Run: %v, want ErrClosed", err)
	}
	if n := len(ctl.requests()); n != 1 {
		t.Errorf("control saw %d requests: Run did not adopt the connection", n)
	}
	waitFor(t, "disconnect", func() bool { return states.count(Disconnected) == 1 })
}
