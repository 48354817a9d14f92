package floor

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
)

const (
	testApp = "app1"
	testKey = "key-app1"
)

// testServer is a started floor with its API and admin handlers on real loopback listeners.
type testServer struct {
	s     *Server
	addr  string
	api   string
	admin string
}

func startServer(t testing.TB, mod func(*Config)) *testServer {
	t.Helper()
	cfg := Config{
		Node:   "fl1",
		Listen: "127.0.0.1:0",
		Apps:   []App{{ID: testApp, PushKey: testKey}, {ID: "app2", PushKey: "key-app2"}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(s.Handler())
	admin := httptest.NewServer(s.AdminHandler())
	t.Cleanup(func() {
		api.Close()
		admin.Close()
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return &testServer{s: s, addr: s.Addr().String(), api: api.URL, admin: admin.URL}
}

// client is a hand-driven connection.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *frame.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	return &client{t: t, nc: nc, r: frame.NewReader(nc, frame.Limits{})}
}

func (c *client) write(b []byte) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

func (c *client) send(h frame.Header, meta frame.Meta) {
	c.t.Helper()
	c.write(frame.Append(nil, &frame.Frame{Header: h, Meta: meta}))
}

// next reads one frame; its Meta and Body are copies.
func (c *client) next() frame.Frame {
	c.t.Helper()
	f, err := c.nextErr()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return f
}

func (c *client) nextErr() (frame.Frame, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	f, err := c.r.Next()
	if err != nil {
		return f, err
	}
	f.Meta = bytes.Clone(f.Meta)
	f.Body = bytes.Clone(f.Body)
	return f, nil
}

// expectEOF reads until the server closes the stream.
func (c *client) expectEOF() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c.nc); err != nil {
		c.t.Fatalf("want the server to close the connection, got %v", err)
	}
}

func loginFrame(device string) []byte {
	m := frame.AppendMetaString(nil, "token", "any")
	m = frame.AppendMetaString(m, "device", device)
	m = frame.AppendMetaString(m, "app", testApp)
	return frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypeLogin, Seq: 1}, Meta: m})
}

// login logs c in as device and checks the LOGIN_ACK.
func (c *client) login(device string) frame.Frame {
	c.t.Helper()
	c.write(loginFrame(device))
	ack := c.next()
	if ack.Type != frame.TypeLoginAck || ack.Code != frame.CodeOK || ack.Seq != 1 {
		c.t.Fatalf("login %s: got %s code %s seq %d (msg %q)", device, ack.Type, ack.Code, ack.Seq, ack.Meta.GetString("msg"))
	}
	return ack
}

// call makes one API call and decodes the answer into out (when not nil); it returns the status.
func call(t testing.TB, method, url, key string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = bytes.NewBufferString(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %q: %v", method, url, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

// push calls POST /v1/push with the test app's key and wants 200.
func (ts *testServer) push(t testing.TB, body map[string]any) PushResult {
	t.Helper()
	var res PushResult
	if st := call(t, http.MethodPost, ts.api+"/v1/push", testKey, body, &res); st != http.StatusOK {
		t.Fatalf("push %v: status %d", body, st)
	}
	if res.Targets != res.Delivered+res.Forwarded+res.Offline+res.Failed {
		t.Fatalf("push %v: %+v does not add up", body, res)
	}
	return res
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func device(i int) string { return "d" + strconv.Itoa(i) }
