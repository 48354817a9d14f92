package wsproto

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func TestAcceptKeyRFCExample(t *testing.T) {
	// RFC 6455 §1.3.
	if got := AcceptKey("dGhlIHNhbXBsZSBub25jZQ=="); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Fatalf("AcceptKey = %q", got)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 1, 125, 126, 127, 0xFFFF, 0x10000, 1 << 40} {
		for _, masked := range []bool{false, true} {
			h := Header{Fin: n%2 == 0, Rsv: 0, Op: OpBinary, Masked: masked, Length: n}
			if masked {
				h.Mask = [4]byte{1, 2, 3, 4}
			}
			b := AppendHeader(nil, h)
			if len(b) != HeaderLen(int(n), masked) {
				t.Fatalf("len %d: encoded %d bytes, HeaderLen %d", n, len(b), HeaderLen(int(n), masked))
			}
			for i := 0; i < len(b); i++ {
				if _, k, err := ParseHeader(b[:i]); k != 0 || err != nil {
					t.Fatalf("len %d: prefix %d: n=%d err=%v", n, i, k, err)
				}
			}
			got, k, err := ParseHeader(b)
			if err != nil || k != len(b) || got != h {
				t.Fatalf("len %d: got %+v n=%d err=%v, want %+v", n, got, k, err, h)
			}
		}
	}
}

func TestHeaderMalformed(t *testing.T) {
	for name, b := range map[string][]byte{
		"16-bit length under 126": {0x82, 126, 0, 125},
		"64-bit length under 64K": {0x82, 127, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF},
		"64-bit length top bit":   {0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0},
	} {
		if _, _, err := ParseHeader(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMaskBytes(t *testing.T) {
	key := [4]byte{0xA1, 0xB2, 0xC3, 0xD4}
	src := make([]byte, 100)
	for i := range src {
		src[i] = byte(i * 7)
	}
	want := bytes.Clone(src)
	for i := range want {
		want[i] ^= key[i%4]
	}
	// In pieces of every size, the offset carried across.
	for step := 1; step < 20; step++ {
		b := bytes.Clone(src)
		pos := 0
		for i := 0; i < len(b); i += step {
			pos = MaskBytes(key, pos, b[i:min(i+step, len(b))])
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("step %d: wrong mask", step)
		}
	}
}

func TestClosePayload(t *testing.T) {
	p := AppendClosePayload(nil, 1000, "bye")
	code, reason, err := ParseClosePayload(p)
	if err != nil || code != 1000 || reason != "bye" {
		t.Fatalf("got %d %q %v", code, reason, err)
	}
	if code, _, err := ParseClosePayload(nil); err != nil || code != CloseNoStatus {
		t.Fatalf("empty: %d %v", code, err)
	}
	for _, bad := range [][]byte{{3}, {0x03, 0xED}, {0x03, 0xE8, 0xFF}, AppendClosePayload(nil, 1005, ""), AppendClosePayload(nil, 999, "")} {
		if _, _, err := ParseClosePayload(bad); err == nil {
			t.Errorf("%x: no error", bad)
		}
	}
	long := AppendClosePayload(nil, 1000, string(bytes.Repeat([]byte("é"), 100)))
	if len(long) > MaxControlPayload {
		t.Fatalf("close payload %d bytes", len(long))
	}
	if _, _, err := ParseClosePayload(long); err != nil {
		t.Fatalf("cut reason not UTF-8: %v", err)
	}
}

const goodReq = "GET /ws?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n" +
	"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://a.example\r\n\r\n"

func TestParseRequest(t *testing.T) {
	b := []byte(goodReq + "trailing")
	for i := 0; i < len(goodReq); i++ {
		if _, n, err := ParseRequest(b[:i], 8192); n != 0 || err != nil {
			t.Fatalf("prefix %d: n=%d err=%v", i, n, err)
		}
	}
	req, n, err := ParseRequest(b, 8192)
	if err != nil || n != len(goodReq) {
		t.Fatalf("n=%d err=%v", n, err)
	}
	if req.Path != "/ws" || req.Origin != "https://a.example" || req.Host != "h" || req.Key != "dGhlIHNhbXBsZSBub25jZQ==" {
		t.Fatalf("req %+v", req)
	}
}

func TestParseRequestRefusals(t *testing.T) {
	repl := func(old, new string) string {
		return string(bytes.Replace([]byte(goodReq), []byte(old), []byte(new), 1))
	}
	cases := []struct {
		name   string
		req    string
		status int
	}{
		{"missing key", repl("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""), 400},
		{"short key", repl("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="), 400},
		{"no upgrade", repl("Upgrade: websocket\r\n", ""), 400},
		{"no connection upgrade", repl("keep-alive, Upgrade", "keep-alive"), 400},
		{"wrong version", repl("Version: 13", "Version: 8"), 426},
		{"no version", repl("Sec-WebSocket-Version: 13\r\n", ""), 426},
		{"POST", repl("GET", "POST"), 405},
		{"HTTP/1.0", repl("HTTP/1.1", "HTTP/1.0"), 400},
		{"no host", repl("Host: h\r\n", ""), 400},
		{"garbage line", repl("Host: h\r\n", "Host h\r\n"), 400},
		{"folding", repl("Host: h\r\n", "Host: h\r\n continued\r\n"), 400},
	}
	for _, c := range cases {
		_, n, err := ParseRequest([]byte(c.req), 8192)
		var he *HandshakeError
		if !errors.As(err, &he) || he.Status != c.status || n != 0 {
			t.Errorf("%s: n=%d err=%v, want status %d", c.name, n, err, c.status)
			continue
		}
		ans := AppendRefusal(nil, he)
		if !bytes.HasPrefix(ans, []byte("HTTP/1.1 ")) || !bytes.Contains(ans, []byte("Connection: close")) {
			t.Errorf("%s: answer %q", c.name, ans)
		}
		if c.status == 426 && !bytes.Contains(ans, []byte("Sec-WebSocket-Version: 13\r\n")) {
			t.Errorf("%s: 426 without the version: %q", c.name, ans)
		}
	}
	// Too large: with and without the end.
	big := "GET /ws HTTP/1.1\r\nX: " + string(bytes.Repeat([]byte("a"), 200))
	for _, b := range []string{big, big + "\r\n\r\n"} {
		_, _, err := ParseRequest([]byte(b), 100)
		var he *HandshakeError
		if !errors.As(err, &he) || he.Status != 431 {
			t.Errorf("oversized: %v", err)
		}
	}
}

// serve answers one upgrade on a real socket by hand and runs fn on the raw server side.
func serve(t *testing.T, fn func(nc net.Conn, rest []byte)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = nc.Close() }()
		var buf []byte
		tmp := make([]byte, 1024)
		for {
			k, err := nc.Read(tmp)
			if err != nil {
				return
			}
			buf = append(buf, tmp[:k]...)
			req, n, err := ParseRequest(buf, 8192)
			if err != nil {
				return
			}
			if n > 0 {
				if _, err := nc.Write(AppendAccept(nil, req.Key)); err != nil {
					return
				}
				fn(nc, buf[n:])
				return
			}
		}
	}()
	return ln.Addr().String()
}

func TestClientEcho(t *testing.T) {
	addr := serve(t, func(nc net.Conn, rest []byte) {
		// Echo each masked binary frame back unmasked, split in two fragments, with a ping between.
		buf := rest
		tmp := make([]byte, 4096)
		for {
			h, hn, err := ParseHeader(buf)
			if err == nil && hn > 0 && len(buf) >= hn+int(h.Length) {
				p := buf[hn : hn+int(h.Length)]
				MaskBytes(h.Mask, 0, p)
				if h.Op == OpClose {
					_, _ = nc.Write(AppendFrame(nil, OpClose, p))
					return
				}
				if h.Op != OpBinary {
					buf = buf[hn+int(h.Length):]
					continue
				}
				half := len(p) / 2
				out := AppendHeader(nil, Header{Op: OpBinary, Length: int64(half)})
				out = append(out, p[:half]...)
				out = AppendFrame(out, OpPing, []byte("pp"))
				out = AppendHeader(out, Header{Fin: true, Op: OpContinuation, Length: int64(len(p) - half)})
				out = append(out, p[half:]...)
				_, _ = nc.Write(out)
				buf = buf[hn+int(h.Length):]
				continue
			}
			k, err := nc.Read(tmp)
			if err != nil {
				return
			}
			buf = append(buf, tmp[:k]...)
		}
	})
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Client(ctx, nc, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, size := range []int{1, 100, 70000} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, size)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, msg) {
			t.Fatalf("size %d: echo differs", size)
		}
	}
	_ = c.(*Conn).sendClose(CloseNormal)
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after close: %v", err)
	}
	if code, _ := c.(*Conn).CloseStatus(); code != CloseNormal {
		t.Fatalf("close status %d", code)
	}
}

func TestClientRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer func() { _ = nc.Close() }()
		_, _ = nc.Write(AppendRefusal(nil, &HandshakeError{Status: 404, Reason: "no such path"}))
		_, _ = io.Copy(io.Discard, nc)
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = nc.Close() }()
	_, err = Client(context.Background(), nc, ClientOptions{Path: "/nope"})
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("404")) {
		t.Fatalf("err %v", err)
	}
}
