package control

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock(t time.Time) *fakeClock { return &fakeClock{t: t} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// limitedServer serves testConfig with the given limits section and clock.
func limitedServer(t *testing.T, limits string, clk *fakeClock, opts ...Option) (*httptest.Server, *Server) {
	t.Helper()
	c := testConfig(t)
	cfg, err := ParseConfig([]byte(`
token: {keys: [{id: k1, secret: "token-secret-0123456789"}]}
apps:
  - {id: demo, secret: ` + demoSecret + `, push_key: demo-push}
endpoints: [{protocol: tcp, addr: "gw1:7000"}]
limits: ` + limits + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	c.Limits = cfg.Limits
	s, err := NewServer(c, append([]Option{WithClock(clk.Now), WithLogger(slog.New(slog.DiscardHandler))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts, s
}

func checkLimited(t *testing.T, a answer, retryAfter string) {
	t.Helper()
	checkAnswer(t, a, http.StatusTooManyRequests, CodeRateLimited)
	if got := a.header.Get("Retry-After"); got != retryAfter {
		t.Fatalf("Retry-After %q, want %q", got, retryAfter)
	}
}

func TestConnectLimitPerDevice(t *testing.T) {
	clk := newFakeClock(now)
	reg := prometheus.NewRegistry()
	ts, _ := limitedServer(t, "{connect_per_device: {rate: 1/s, burst: 2}, connect_per_source: {rate: 0}}", clk, WithMetrics(reg))
	url := ts.URL + "/v1/connect"
	dev1 := signed(demoSecret, req("demo", "dev-1", "alice", "native", now.Unix()))

	for i := range 2 {
		if a := do(t, "POST", url, dev1); a.status != http.StatusOK {
			t.Fatalf("connect %d: %d %s", i, a.status, a.body)
		}
	}
	checkLimited(t, do(t, "POST", url, dev1), "1")
	// Another device of the same app, and the same device ID in a request whose sign is wrong,
	// are not limited by dev-1's allowance, and the forgeries use none of dev-2's.
	forged := signed("not-the-secret", req("demo", "dev-2", "", "native", now.Unix()))
	for range 5 {
		checkAnswer(t, do(t, "POST", url, forged), http.StatusUnauthorized, CodeBadSign)
	}
	dev2 := signed(demoSecret, req("demo", "dev-2", "", "native", now.Unix()))
	for i := range 2 {
		if a := do(t, "POST", url, dev2); a.status != http.StatusOK {
			t.Fatalf("dev-2 connect %d after forgeries: %d %s", i, a.status, a.body)
		}
	}

	// Refused connects take nothing: one interval later exactly one more is allowed.
	clk.Add(999 * time.Millisecond)
	checkLimited(t, do(t, "POST", url, dev1), "1")
	clk.Add(time.Millisecond)
	connectOK(t, ts.URL, req("demo", "dev-1", "alice", "native", now.Unix()))
	checkLimited(t, do(t, "POST", url, dev1), "1")

	if got := connectsCounted(t, reg, CodeRateLimited); got != 3 {
		t.Fatalf("rate_limited connects counted %v, want 3", got)
	}
}

// connectsCounted is pushwire_control_connects_total{result}.
func connectsCounted(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "pushwire_control_connects_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no connects counter with result %q", result)
	return 0
}

func TestConnectLimitPerSource(t *testing.T) {
	clk := newFakeClock(now)
	ts, _ := limitedServer(t, "{connect_per_source: {rate: 60/m, burst: 3}, connect_per_device: {rate: 0}}", clk)
	url := ts.URL + "/v1/connect"
	for range 3 {
		// Any request counts, even one that is refused for what it says.
		checkAnswer(t, do(t, "POST", url, "{"), http.StatusBadRequest, CodeMalformed)
	}
	// The fourth is refused before its body is read: a good one and a malformed one alike.
	checkLimited(t, do(t, "POST", url, signed(demoSecret, req("demo", "dev-1", "", "native", now.Unix()))), "1")
	checkLimited(t, do(t, "POST", url, "{"), "1")
	clk.Add(time.Second)
	connectOK(t, ts.URL, req("demo", "dev-1", "", "native", now.Unix()))

	// X-Forwarded-For is not trusted unless configured: it does not open a new allowance.
	hr, _ := http.NewRequest("POST", url, strings.NewReader("{}"))
	hr.Header.Set("X-Forwarded-For", "198.51.100.7")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("untrusted X-Forwarded-For: %d, want 429", resp.StatusCode)
	}
}

func TestConnectLimitForwardedFor(t *testing.T) {
	clk := newFakeClock(now)
	ts, _ := limitedServer(t, "{connect_per_source: {rate: 1/m, burst: 1}, connect_per_device: {rate: 0}, trust_forwarded_for: true}", clk)
	url := ts.URL + "/v1/connect"
	post := func(xff ...string) answer {
		t.Helper()
		hr, _ := http.NewRequest("POST", url, strings.NewReader(signed(demoSecret, req("demo", "dev-1", "", "native", now.Unix()))))
		for _, v := range xff {
			hr.Header.Add("X-Forwarded-For", v)
		}
		resp, err := http.DefaultClient.Do(hr)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return answer{resp.StatusCode, resp.Header, nil}
	}
	if a := post("203.0.113.1"); a.status != 200 {
		t.Fatalf("first from 203.0.113.1: %d", a.status)
	}
	// The last address is the one the proxy appended; what the client wrote before it is ignored.
	if a := post("203.0.113.9, 203.0.113.1"); a.status != 429 || a.header.Get("Retry-After") != "60" {
		t.Fatalf("second from 203.0.113.1: %d, Retry-After %q", a.status, a.header.Get("Retry-After"))
	}
	if a := post("203.0.113.1", "203.0.113.2"); a.status != 200 {
		t.Fatalf("first from 203.0.113.2 (second header line): %d", a.status)
	}
	clk.Add(30*time.Second + 500*time.Millisecond)
	if a := post("203.0.113.2"); a.status != 429 || a.header.Get("Retry-After") != "30" {
		t.Fatalf("29.5 s early: %d, Retry-After %q (want rounded up to 30)", a.status, a.header.Get("Retry-After"))
	}
	// No usable address in the header: the peer's address counts.
	if a := post("garbage"); a.status != 200 {
		t.Fatalf("first from the peer: %d", a.status)
	}
	if a := post(""); a.status != 429 {
		t.Fatalf("second from the peer: %d", a.status)
	}
}

// TestLimiterStaleCaller: a caller that read the clock and then waited (descheduled, a GC pause)
// before the limiter counted it brings a time older than events already counted; it is counted
// at the latest time, not refused as if it came early.
func TestLimiterStaleCaller(t *testing.T) {
	l := newLimiter(RateLimit{Rate: Rate{1000, time.Second}, Burst: 1000}, 1024)
	t0 := now
	for i := range 500 { // half the burst, 2 s after t0
		if ok, _ := l.allow("k", t0.Add(2*time.Second+time.Duration(i)*time.Microsecond)); !ok {
			t.Fatalf("event %d refused", i)
		}
	}
	if ok, retry := l.allow("k", t0); !ok { // read the clock 2 s before the others
		t.Fatalf("a caller with a stale time refused (retry %v)", retry)
	}
}

func TestLimiterGCRA(t *testing.T) {
	l := newLimiter(RateLimit{Rate: Rate{10, time.Second}, Burst: 3}, 1024)
	t0 := now
	for i := range 3 {
		if ok, _ := l.allow("k", t0); !ok {
			t.Fatalf("burst event %d refused", i)
		}
	}
	ok, retry := l.allow("k", t0)
	if ok || retry != 100*time.Millisecond {
		t.Fatalf("over the burst: ok %v, retry %v; want refused, 100ms", ok, retry)
	}
	if ok, _ := l.allow("k", t0.Add(99*time.Millisecond)); ok {
		t.Fatal("allowed 1 ms early")
	}
	if ok, _ := l.allow("k", t0.Add(100*time.Millisecond)); !ok {
		t.Fatal("refused on time")
	}
	// Sustained at the rate: always allowed.
	for i := 2; i < 100; i++ {
		if ok, _ := l.allow("k", t0.Add(time.Duration(i)*100*time.Millisecond)); !ok {
			t.Fatalf("event %d at the sustained rate refused", i)
		}
	}
	if ok, _ := (*limiter)(nil).allow("k", t0); !ok {
		t.Fatal("a nil (off) limiter refused")
	}
	if newLimiter(RateLimit{Rate: Rate{0, time.Second}}, 10) != nil {
		t.Fatal("rate 0 is not off")
	}
}

// A flood of distinct keys never grows the limiter past its cap, and never refuses a new key;
// keys still limited survive a flood of keys that are not.
func TestLimiterMemoryBound(t *testing.T) {
	const capKeys = 64 * 16
	l := newLimiter(RateLimit{Rate: Rate{1, time.Minute}, Burst: 1}, capKeys)
	t0 := now
	for i := range 100 * capKeys {
		if ok, _ := l.allow(fmt.Sprintf("flood-%d", i), t0); !ok {
			t.Fatalf("new key %d refused", i)
		}
	}
	if n := l.len(); n > capKeys {
		t.Fatalf("limiter holds %d keys, cap %d", n, capKeys)
	}

	// Idle entries are the first to go, then the ones closest to idle: a key limited further
	// ahead is kept.
	l = newLimiter(RateLimit{Rate: Rate{1, time.Second}, Burst: 2}, capKeys)
	for i := range capKeys - 1 {
		l.allow(fmt.Sprintf("flood-%d", i), t0) // idle from t0+1s
	}
	t1 := t0.Add(2 * time.Second)
	for range 2 {
		if ok, _ := l.allow("victim", t1); !ok {
			t.Fatal("victim refused within its burst")
		}
	}
	for i := range capKeys {
		l.allow(fmt.Sprintf("late-%d", i), t1) // limited until t1+1s: closer to idle than the victim
	}
	if ok, _ := l.allow("victim", t1); ok {
		t.Fatal("the flood evicted the key limited furthest ahead")
	}
	if n := l.len(); n > capKeys {
		t.Fatalf("limiter holds %d keys, cap %d", n, capKeys)
	}
}

func TestSourceKey(t *testing.T) {
	tests := []struct {
		remote, xff string
		trust       bool
		want        string
	}{
		{"127.0.0.9:5000", "", false, "127.0.0.9"},
		{"127.0.0.9:5000", "10.0.0.1", false, "127.0.0.9"},
		{"127.0.0.9:5000", "10.0.0.1", true, "10.0.0.1"},
		{"127.0.0.9:5000", "1.1.1.1, 10.0.0.1 ", true, "10.0.0.1"},
		{"127.0.0.9:5000", "10.0.0.1, nonsense", true, "127.0.0.9"},
		{"[2001:db8:1:2:3:4:5:6]:443", "", false, "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff::1]:443", "", false, "2001:db8:1:2::/64"},
		{"[::ffff:192.0.2.1]:443", "", false, "192.0.2.1"},
		{"[fe80::1%eth0]:443", "", false, "fe80::/64"},
		{"pipe", "", false, ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("POST", "/v1/connect", nil)
		r.RemoteAddr = tt.remote
		if tt.xff != "" {
			r.Header.Set("X-Forwarded-For", tt.xff)
		}
		if got := sourceKey(r, tt.trust); got != tt.want {
			t.Errorf("sourceKey(%q, xff %q, trust %v) = %q, want %q", tt.remote, tt.xff, tt.trust, got, tt.want)
		}
	}
}

// The 429 body is the usual JSON error.
func TestRateLimitedBody(t *testing.T) {
	clk := newFakeClock(now)
	ts, _ := limitedServer(t, "{connect_per_source: {rate: 1/m, burst: 1}}", clk)
	do(t, "POST", ts.URL+"/v1/connect", "{}")
	a := do(t, "POST", ts.URL+"/v1/connect", "{}")
	var e ErrorResponse
	if err := json.Unmarshal(a.body, &e); err != nil || e.Error != CodeRateLimited || !strings.Contains(e.Message, "retry in 60 s") {
		t.Fatalf("429 body %s: %v", a.body, err)
	}
}
