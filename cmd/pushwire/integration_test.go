package main

// Integration tests: the real pushwire binary runs as separate processes (control and a gateway,
// through bench.Deploy), and the tests talk to them over loopback sockets, both with the Go SDK and
// with hand-made frames for the hostile cases. Run only these: go test -run Integration ./cmd/pushwire/

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/client"
	"github.com/pushwire/pushwire/control"
	"github.com/pushwire/pushwire/control/token"
	"github.com/pushwire/pushwire/core/frame"
)

// testBinary is the pushwire binary built once for the package's tests.
var testBinary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pushwire-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testBinary = filepath.Join(dir, "pushwire")
	out, err := exec.Command("go", "build", "-o", testBinary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building pushwire: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// deploy starts control and one gateway with short timeouts and stops them when the test ends.
func deploy(t *testing.T, engine string, gatewayArgs ...string) *bench.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := bench.Deploy(ctx, bench.DeployConfig{
		Binary:      testBinary,
		Engine:      engine,
		Heartbeat:   time.Second,
		GatewayArgs: gatewayArgs,
		LogDir:      t.TempDir(),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stopping the deployment: %v", err)
		}
	})
	return d
}

// signer returns a token signer with the deployment's own key, to mint expired or foreign tokens.
func signer(t *testing.T, d *bench.Deployment) *token.Signer {
	t.Helper()
	cfg, err := control.LoadConfig(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	k := cfg.Token.Keys[0]
	s, err := token.NewSigner(token.Key{ID: k.ID, Secret: []byte(k.Secret)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawConn is a hand-driven client connection.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	r  *frame.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() }) // a test may have closed it already
	return &rawConn{t: t, nc: nc, r: frame.NewReader(nc, frame.Limits{})}
}

func (c *rawConn) send(typ frame.Type, biz uint16, seq uint32, meta frame.Meta) {
	c.t.Helper()
	f := frame.Frame{Header: frame.Header{Type: typ, Biz: biz, Seq: seq}, Meta: meta}
	c.write(frame.Append(nil, &f))
}

func (c *rawConn) write(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next reads the next frame within d.
func (c *rawConn) next(d time.Duration) frame.Frame {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	f, err := c.r.Next()
	if err != nil {
		c.t.Fatalf("reading a frame: %v", err)
	}
	// The reader's buffers are reused: copy what the test looks at.
	f.Meta = append(frame.Meta(nil), f.Meta...)
	f.Body = append([]byte(nil), f.Body...)
	return f
}

// expectClosed checks that the gateway closes the connection within d.
func (c *rawConn) expectClosed(d time.Duration) {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(d))
	for {
		_, err := c.r.Next()
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after %v", d)
		}
		return
	}
}

// expectError reads frames until an ERROR and checks its code, then that the connection closes.
func (c *rawConn) expectError(code frame.Code, d time.Duration) {
	c.t.Helper()
	f := c.next(d)
	if f.Type != frame.TypeError || f.Code != code {
		c.t.Fatalf("got %v code %v (msg %q), want ERROR %v", f.Type, f.Code, f.Meta.GetString("msg"), code)
	}
	c.expectClosed(5 * time.Second)
}

func (c *rawConn) login(tok, device string) frame.Frame {
	c.t.Helper()
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "token", tok)
	if device != "" {
		meta = frame.AppendMetaString(meta, "device", device)
	}
	c.send(frame.TypeLogin, 0, 1, meta)
	return c.next(5 * time.Second)
}

// push calls POST /v1/push on the gateway.
func push(t *testing.T, d *bench.Deployment, key string, body any) (int, map[string]any) {
	t.Helper()
	return apiCall(t, http.MethodPost, d.GatewayHTTP[0]+"/v1/push", key, body)
}

// stats reads the first gateway's /v1/stats from its admin listener, after a forced collection.
func stats(t *testing.T, d *bench.Deployment) map[string]any {
	t.Helper()
	resp, err := http.Get(d.GatewayAdmin[0] + "/v1/stats?gc=1") // a forced collection: the admin listener only
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// sdkClient connects a real SDK client through control and collects its pushes.
type sdkClient struct {
	*client.Client
	mu     sync.Mutex
	pushes []client.Push
	next   int // the next push waitPush returns: pushes come back in arrival order
	got    chan struct{}
}

func newSDKClient(t *testing.T, d *bench.Deployment, device string) *sdkClient {
	t.Helper()
	sc := &sdkClient{got: make(chan struct{}, 100)}
	c, err := client.New(client.Config{
		ControlURL: d.ControlURL, App: d.App, Secret: d.Secret, Device: device, User: "u-" + device,
		OnPush: func(p client.Push) {
			sc.mu.Lock()
			sc.pushes = append(sc.pushes, p)
			sc.mu.Unlock()
			sc.got <- struct{}{}
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	sc.Client = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect %s: %v", device, err)
	}
	t.Cleanup(func() { _ = c.Close() }) // a test may have closed it already
	return sc
}

func (sc *sdkClient) waitPush(t *testing.T, d time.Duration) client.Push {
	t.Helper()
	select {
	case <-sc.got:
	case <-time.After(d):
		t.Fatal("no push received")
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	p := sc.pushes[sc.next]
	sc.next++
	return p
}

func TestIntegrationGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	d := deploy(t, "std", "--login-timeout=1s", "--idle-timeout=2s", "--wheel-tick=100ms", "--max-body=65536")
	sign := signer(t, d)

	// A well-behaved SDK client stays connected through every hostile case below and still gets
	// its pushes at the end: one bad peer never hurts another.
	good := newSDKClient(t, d, "good-1")
	if good.Node() != "gw0" {
		t.Fatalf("LOGIN_ACK node %q, want gw0", good.Node())
	}
	if hb := good.Heartbeat(); hb != time.Second {
		t.Fatalf("heartbeat %v, want the configured 1s", hb)
	}

	t.Run("push", func(t *testing.T) {
		status, ans := push(t, d, d.PushKey, map[string]any{"biz": 7, "devices": []string{"good-1", "nobody"}, "payload": "hello"})
		if status != http.StatusOK || ans["delivered"] != 1.0 || ans["offline"] != 1.0 || ans["targets"] != 2.0 {
			t.Fatalf("push answer %d %v", status, ans)
		}
		p := good.waitPush(t, 5*time.Second)
		if string(p.Payload) != "hello" || p.Biz != 7 || p.ID == "" || p.ID != ans["id"] {
			t.Fatalf("push %+v, answer %v", p, ans)
		}
	})

	t.Run("push API bad input", func(t *testing.T) {
		cases := []struct {
			name   string
			key    string
			body   any
			status int
		}{
			{"wrong key", "nope", map[string]any{"biz": 1, "devices": []string{"good-1"}, "payload": "x"}, http.StatusUnauthorized},
			{"no targets", d.PushKey, map[string]any{"biz": 1, "payload": "x"}, http.StatusBadRequest},
			{"biz 0", d.PushKey, map[string]any{"biz": 0, "devices": []string{"good-1"}, "payload": "x"}, http.StatusBadRequest},
			{"unknown field", d.PushKey, map[string]any{"biz": 1, "devices": []string{"good-1"}, "payload": "x", "bogus": 1}, http.StatusBadRequest},
			{"payload too large", d.PushKey, map[string]any{"biz": 1, "devices": []string{"good-1"}, "payload": strings.Repeat("x", 65537)}, http.StatusRequestEntityTooLarge},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				status, ans := push(t, d, tc.key, tc.body)
				if status != tc.status || ans["error"] == nil || ans["message"] == nil {
					t.Fatalf("status %d %v, want %d with {error, message}", status, ans, tc.status)
				}
			})
		}
	})

	t.Run("heartbeat", func(t *testing.T) {
		// The idle timeout is 2s; the SDK pings every second and stays up well past it. The sleep
		// is the test: 3s pass, longer than the idle timeout, and the connection must survive them.
		before := good.Stats()
		time.Sleep(3 * time.Second)
		after := good.Stats()
		if after.Pongs <= before.Pongs || after.Reconnects != before.Reconnects {
			t.Fatalf("pongs %d -> %d, reconnects %d -> %d", before.Pongs, after.Pongs, before.Reconnects, after.Reconnects)
		}
	})

	t.Run("forged token", func(t *testing.T) {
		c := dialRaw(t, d.GatewayAddrs[0])
		other, _ := token.NewSigner(token.Key{ID: "bench1", Secret: []byte("not-the-deployment-secret")})
		tok, _ := other.Sign(token.Claims{App: d.App, Device: "forger", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
		ack := c.login(tok, "forger")
		if ack.Type != frame.TypeLoginAck || ack.Code != frame.CodeAuthFailed {
			t.Fatalf("got %v %v, want LOGIN_ACK AUTH_FAILED", ack.Type, ack.Code)
		}
		c.expectClosed(5 * time.Second)
	})

	t.Run("expired token", func(t *testing.T) {
		c := dialRaw(t, d.GatewayAddrs[0])
		tok, err := sign.Sign(token.Claims{App: d.App, Device: "late", IssuedAt: time.Now().Add(-2 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		ack := c.login(tok, "late")
		if ack.Code != frame.CodeAuthFailed || !strings.Contains(ack.Meta.GetString("msg"), "expired") {
			t.Fatalf("got %v %v %q, want AUTH_FAILED for an expired token", ack.Type, ack.Code, ack.Meta.GetString("msg"))
		}
		c.expectClosed(5 * time.Second)
	})

	t.Run("token for another device", func(t *testing.T) {
		c := dialRaw(t, d.GatewayAddrs[0])
		tok, _ := sign.Sign(token.Claims{App: d.App, Device: "a", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
		if ack := c.login(tok, "b"); ack.Code != frame.CodeAuthFailed {
			t.Fatalf("got %v, want AUTH_FAILED", ack.Code)
		}
	})

	t.Run("garbage bytes", func(t *testing.T) {
		c := dialRaw(t, d.GatewayAddrs[0])
		c.write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
		c.expectError(frame.CodeBadFrame, 5*time.Second)
	})

	t.Run("frame before login", func(t *testing.T) {
		c := dialRaw(t, d.GatewayAddrs[0])
		c.send(frame.TypePing, 0, 1, nil)
		c.expectError(frame.CodeNotLoggedIn, 5*time.Second)
	})

	t.Run("oversized length claim", func(t *testing.T) {
		before := stats(t, d)["heap_live_bytes"].(float64)
		c := dialRaw(t, d.GatewayAddrs[0])
		h := frame.AppendHeader(nil, frame.Header{Type: frame.TypeLogin, MetaLen: 0, BodyLen: 0})
		binary.BigEndian.PutUint32(h[14:18], 0xFFFFFFF0) // a 4 GB body claim
		c.write(h)
		c.expectError(frame.CodeFrameTooLarge, 5*time.Second)
		after := stats(t, d)["heap_live_bytes"].(float64)
		if after-before > 8<<20 {
			t.Fatalf("live heap grew %.0f bytes after a 4 GB claim", after-before)
		}
	})

	t.Run("login timeout", func(t *testing.T) {
		c := dialRaw(t, d.GatewayAddrs[0])
		start := time.Now()
		c.expectError(frame.CodeLoginTimeout, 5*time.Second)
		if el := time.Since(start); el < 900*time.Millisecond {
			t.Fatalf("closed after %v, before the 1s login timeout", el)
		}
	})

	t.Run("idle timeout", func(t *testing.T) {
		c := dialRaw(t, d.GatewayAddrs[0])
		tok, _ := sign.Sign(token.Claims{App: d.App, Device: "silent", IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
		if ack := c.login(tok, "silent"); ack.Type != frame.TypeLoginAck || ack.Code != frame.CodeOK {
			t.Fatalf("login: %v %v %q", ack.Type, ack.Code, ack.Meta.GetString("msg"))
		}
		start := time.Now()
		c.expectError(frame.CodeIdleTimeout, 6*time.Second)
		if el := time.Since(start); el < 1900*time.Millisecond {
			t.Fatalf("closed after %v, before the 2s idle timeout", el)
		}
	})

	t.Run("still serving", func(t *testing.T) {
		status, ans := push(t, d, d.PushKey, map[string]any{"biz": 9, "devices": []string{"good-1"}, "payload": "after"})
		if status != http.StatusOK || ans["delivered"] != 1.0 {
			t.Fatalf("push answer %d %v", status, ans)
		}
		if p := good.waitPush(t, 5*time.Second); string(p.Payload) != "after" {
			t.Fatalf("payload %q", p.Payload)
		}
		if st := good.Stats(); st.Reconnects != 0 {
			t.Fatalf("the good client reconnected %d times", st.Reconnects)
		}
		if s := stats(t, d); s["sessions"] != 1.0 {
			t.Fatalf("sessions %v, want only the good client", s["sessions"])
		}
	})
}
