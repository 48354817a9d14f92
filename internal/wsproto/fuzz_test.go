package wsproto

import (
	"bytes"
	"errors"
	"testing"
)

func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(goodReq), 8192)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), 100)
	f.Add([]byte("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n"), 8192)
	f.Add([]byte("\r\n\r\n"), 10)
	f.Fuzz(func(t *testing.T, b []byte, maxHeader int) {
		if maxHeader < 0 || maxHeader > 1<<20 {
			maxHeader = 8192
		}
		req, n, err := ParseRequest(b, maxHeader)
		switch {
		case err != nil:
			var he *HandshakeError
			if !errors.As(err, &he) || n != 0 {
				t.Fatalf("error %v (n=%d) is not a HandshakeError", err, n)
			}
			switch he.Status {
			case 400, 405, 426, 431:
			default:
				t.Fatalf("status %d", he.Status)
			}
			ans := AppendRefusal(nil, he)
			if bytes.Count(ans, []byte("\r\n\r\n")) != 1 || bytes.ContainsAny(ans[bytes.Index(ans, []byte("\r\n\r\n"))+4:len(ans)-1], "\r\n") {
				t.Fatalf("refusal not one header block and one body line: %q", ans)
			}
		case n == 0:
			if bytes.Contains(b, []byte("\r\n\r\n")) || len(b) > maxHeader {
				t.Fatalf("incomplete, yet the end is there or the bound passed")
			}
		default:
			if n > len(b) || n > maxHeader || !bytes.HasSuffix(b[:n], []byte("\r\n\r\n")) {
				t.Fatalf("n=%d of %d", n, len(b))
			}
			if req.Method != "GET" || req.Version != "13" || len(req.Path) == 0 || req.Path[0] != '/' {
				t.Fatalf("accepted %+v", req)
			}
			_ = AppendAccept(nil, req.Key)
		}
	})
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{0x82, 0x85, 1, 2, 3, 4})
	f.Add([]byte{0x82, 126, 1, 0})
	f.Add([]byte{0x02, 127, 0, 0, 0, 0, 0, 1, 0, 0})
	f.Add([]byte{0x88, 0x80, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := ParseHeader(b)
		if err != nil || n == 0 {
			if n != 0 {
				t.Fatalf("n=%d with error %v", n, err)
			}
			return
		}
		if n > len(b) || n != HeaderLen(int(h.Length), h.Masked) || h.Length < 0 {
			t.Fatalf("n=%d len=%d header %+v", n, len(b), h)
		}
		// A header decodes to what it re-encodes to.
		if enc := AppendHeader(nil, h); !bytes.Equal(enc, b[:n]) {
			t.Fatalf("re-encoded %x, was %x", enc, b[:n])
		}
	})
}
