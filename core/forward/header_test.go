package forward

import (
	"net/http"
	"testing"
)

// TestMetaHeader checks the hand-made canonical names against net/http's for every kind of
// token key the gateway lets through.
func TestMetaHeader(t *testing.T) {
	for _, k := range []string{
		"trace", "TRACE", "trace_id", "delay-ms", "Delay-MS", "x--y", "-lead", "trail-", "a.b", "9lives",
		"k!#$%&'*+.^_`|~z", "ümlaut",
	} {
		want := http.CanonicalHeaderKey(HeaderMetaPrefix + k)
		if got := metaHeader([]byte(k)); isToken(k) && got != want {
			t.Errorf("metaHeader(%q) = %q, want %q", k, got, want)
		}
	}
}

func isToken(s string) bool {
	for i := range len(s) {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

func TestHeadersAllocs(t *testing.T) {
	req := &Request{App: "demo", Device: "d", User: "u", Biz: 3, Conn: 99, Node: "n"}
	req.Meta = appendMeta(appendMeta(nil, "trace", "t-1"), "delay-ms", "5")
	h := headers(req)
	if h.Get("Pushwire-Meta-Delay-Ms") != "5" || h.Get("Pushwire-Meta-Trace") != "t-1" || h.Get("Pushwire-Conn") != "99" || len(h) != 9 {
		t.Fatalf("headers %v", h)
	}
	// The map, the shared value array, two numbers, and a name and a value per meta entry.
	if a := testing.AllocsPerRun(100, func() { _ = headers(req) }); a > 9 {
		t.Fatalf("%v allocations to build the headers", a)
	}
}

func appendMeta(m []byte, k, v string) []byte {
	m = append(m, byte(len(k)))
	m = append(m, k...)
	m = append(m, byte(len(v)>>8), byte(len(v)))
	return append(m, v...)
}
