package forward

import (
	"bufio"
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/pushwire/pushwire/core/frame"
)

// FuzzMetaHeaders feeds a client's meta, hostile input, to the header builder: whatever Submit
// accepts must make a request that net/http writes and parses back with every entry intact (no
// header injection, no request the transport refuses), and nothing else is accepted.
func FuzzMetaHeaders(f *testing.F) {
	seed := func(kv ...string) []byte {
		var m frame.Meta
		for i := 0; i+1 < len(kv); i += 2 {
			m = frame.AppendMetaString(m, kv[i], kv[i+1])
		}
		return m
	}
	f.Add(seed("trace", "t-123", "delay-ms", "5", "fail", "1"))
	f.Add(seed("lang", "zh CN\tok", "Trace", "x", "trace", "y"))
	f.Add(seed("k", "a\r\nX-Evil: 1"))
	f.Add(seed("a b", "v", "ü", "\x80\xff"))
	f.Add(seed("empty", "", "sp", "  padded  "))
	f.Add([]byte{3, 'a', 'b'})
	f.Fuzz(func(t *testing.T, meta []byte) {
		m := frame.Meta(meta)
		if !validMeta(m) {
			return
		}
		req, err := http.NewRequest(http.MethodPost, "http://backend.test/echo", strings.NewReader("body"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header = headers(&Request{App: "a", Device: "d", Biz: 1, Meta: m})
		var wire bytes.Buffer
		if err := req.Write(&wire); err != nil {
			t.Fatalf("net/http refuses the request of an accepted meta %q: %v", meta, err)
		}
		back, err := http.ReadRequest(bufio.NewReader(&wire))
		if err != nil {
			t.Fatalf("the request of meta %q does not parse: %v\n%s", meta, err, wire.Bytes())
		}
		want := http.Header{}
		m.Range(func(k, v []byte) bool {
			want.Add(HeaderMetaPrefix+string(k), strings.Trim(string(v), " \t"))
			return true
		})
		for name, vals := range back.Header {
			if strings.HasPrefix(name, HeaderMetaPrefix) {
				if strings.Join(vals, "\x00") != strings.Join(want[name], "\x00") {
					t.Fatalf("header %s = %q, want %q", name, vals, want[name])
				}
				delete(want, name)
			} else if !strings.HasPrefix(name, "Pushwire-") && name != "Content-Type" && name != "Content-Length" && name != "User-Agent" {
				t.Fatalf("meta %q produced the header %s", meta, name)
			}
		}
		if len(want) != 0 {
			t.Fatalf("headers lost: %v", want)
		}
	})
}
