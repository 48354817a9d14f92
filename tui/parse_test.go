package tui

import (
	"context"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The testdata files are /metrics pages captured from a running deployment (pushwire bench,
// one std gateway, 300 connections): a gateway idle, a gateway pushing (twice, a second apart),
// and the load generator pushing (twice, a second apart).

func readFamilies(t *testing.T, name string) Families {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }() // read only: nothing to lose
	fams, err := ParseMetrics(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return fams
}

func TestGatewaySampleFromCapturedMetrics(t *testing.T) {
	idle := gatewaySample(readFamilies(t, "gateway-idle.txt"))
	checks := []struct {
		name      string
		got, want float64
	}{
		{"conns", idle.Conns, 300},
		{"sessions", idle.Sessions, 300},
		{"logins ok", idle.Logins, 300},
		{"requests", idle.Requests, 0},
		{"delivered (no pushes yet: family absent)", idle.Delivered, 0},
		{"rss", idle.RSS, 1.6785408e+07},
		{"heap", idle.Heap, 2.09516e+06},
		{"goroutines", idle.Goroutines, 317},
		{"gc cpu", idle.GCCPU, 0.000837204},
		{"gomaxprocs", idle.GOMAXPROCS, 2},
		{"gc pauses", idle.GCPauses.Total(), 2},
		{"gc pause max", idle.GCPauseMax, 0.000412564},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if idle.Node != "gw0" || idle.Engine != "std" || idle.Transport != "tcp" || idle.Draining {
		t.Errorf("labels = %q %q %q draining=%v", idle.Node, idle.Engine, idle.Transport, idle.Draining)
	}
	if len(idle.GCPauses.Bounds) != 8 || !math.IsInf(idle.GCPauses.Bounds[7], 1) {
		t.Errorf("gc pause bounds = %v", idle.GCPauses.Bounds)
	}

	push := gatewaySample(readFamilies(t, "gateway-push.txt"))
	if push.Delivered != 2534 {
		t.Errorf("delivered = %v, want 2534", push.Delivered)
	}
}

func TestLoadgenSampleFromCapturedMetrics(t *testing.T) {
	s := loadgenSample(readFamilies(t, "loadgen-push.txt"))
	if s.Target != 400 || s.Connected != 400 || s.Connects != 400 || s.Phase != "push" {
		t.Errorf("sample = %+v", s)
	}
	if s.Delivered <= 0 || !s.P50.Known() || !s.P99.Known() || s.P99 < s.P50 {
		t.Errorf("delivered %v p50 %v p99 %v", s.Delivered, s.P50, s.P99)
	}
	if len(s.Errors) != 0 || len(s.Reconnects) != 0 {
		t.Errorf("errors %v reconnects %v, want none", s.Errors, s.Reconnects)
	}

	text := `# TYPE pushwire_loadgen_errors_total counter
pushwire_loadgen_errors_total{reason="refused"} 7
pushwire_loadgen_errors_total{reason="timeout"} 2
# TYPE pushwire_loadgen_reconnects_total counter
pushwire_loadgen_reconnects_total{reason="reset"} 3
# TYPE pushwire_loadgen_push_latency_window_seconds gauge
pushwire_loadgen_push_latency_window_seconds{quantile="0.5"} NaN
`
	f, err := ParseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	s = loadgenSample(f)
	if s.Errors["refused"] != 7 || s.Errors["timeout"] != 2 || s.Reconnects["reset"] != 3 {
		t.Errorf("by reason: errors %v reconnects %v", s.Errors, s.Reconnects)
	}
	if s.P50.Known() || s.P99.Known() {
		t.Errorf("p50 %v p99 %v, want unknown", s.P50, s.P99)
	}
}

func TestParseMetricsRejectsGarbage(t *testing.T) {
	if _, err := ParseMetrics(strings.NewReader("<html>not metrics</html>\n")); err == nil {
		t.Fatal("no error for HTML")
	}
}

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	h := Histogram{Bounds: []float64{0.001, 0.01, 0.1, inf}, Counts: []float64{50, 90, 100, 100}}
	tests := []struct {
		q, want float64
	}{
		{0.5, 0.001},                // exactly the first bucket's top
		{0.25, 0.0005},              // interpolated from 0
		{0.7, 0.001 + 0.009*20/40},  // inside the second bucket
		{0.99, 0.01 + 0.09*9/10},    // inside the third
		{1, 0.1},                    // the top
		{math.NaN(), math.NaN()},    // no quantile
		{0.999, 0.01 + 0.09*9.9/10}, // still the third
	}
	for _, tt := range tests {
		got := h.Quantile(tt.q)
		if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tt.want) > 1e-12) {
			t.Errorf("Quantile(%v) = %v, want %v", tt.q, got, tt.want)
		}
	}
	if got := (Histogram{}).Quantile(0.99); !math.IsNaN(got) {
		t.Errorf("empty: %v, want NaN", got)
	}
	top := Histogram{Bounds: []float64{0.001, inf}, Counts: []float64{0, 10}}
	if got := top.Quantile(0.99); got != 0.001 {
		t.Errorf("open top bucket: %v, want the highest finite bound", got)
	}
	later := Histogram{Bounds: h.Bounds, Counts: []float64{60, 100, 111, 112}}
	d := later.Sub(h)
	if d.Total() != 12 || d.Counts[0] != 10 {
		t.Errorf("Sub = %v", d.Counts)
	}
	restarted := Histogram{Bounds: h.Bounds, Counts: []float64{1, 1, 1, 1}}
	if got := restarted.Sub(h); got.Total() != 1 {
		t.Errorf("Sub after a restart = %v, want the new histogram", got.Counts)
	}
}

func TestMetricsURL(t *testing.T) {
	tests := []struct {
		in, want string
		bad      bool
	}{
		{in: "127.0.0.1:7080", want: "http://127.0.0.1:7080/metrics"},
		{in: "http://127.0.0.1:7080", want: "http://127.0.0.1:7080/metrics"},
		{in: "http://127.0.0.1:7080/", want: "http://127.0.0.1:7080/metrics"},
		{in: "http://h:1/custom/metrics", want: "http://h:1/custom/metrics"},
		{in: " https://h:1 ", want: "https://h:1/metrics"},
		{in: "", bad: true},
		{in: "ftp://h:1", bad: true},
		{in: "http://", bad: true},
	}
	for _, tt := range tests {
		got, err := MetricsURL(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("MetricsURL(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("MetricsURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// TestPollerMarksDeadTargets polls a live server (serving captured metrics), a closed port and a
// server that never answers: the poll completes within its timeout, with errors for the two.
func TestPollerMarksDeadTargets(t *testing.T) {
	page, err := os.ReadFile(filepath.Join("testdata", "gateway-push.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lgPage, err := os.ReadFile(filepath.Join("testdata", "loadgen-push.txt"))
	if err != nil {
		t.Fatal(err)
	}
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/lg" {
			_, _ = w.Write(lgPage)
			return
		}
		_, _ = w.Write(page)
	}))
	defer live.Close()
	stuck := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-stuck }))
	defer slow.Close()
	defer close(stuck)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/metrics"
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}

	p := &Poller{Gateways: []string{live.URL + "/metrics", closed, slow.URL + "/metrics"}, Loadgen: live.URL + "/lg",
		Interval: 300 * time.Millisecond}
	start := time.Now()
	s := p.Poll(context.Background())
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("poll took %v", d)
	}
	if s.Gateways[0].Err != nil || s.Gateways[0].Gateway == nil || s.Gateways[0].Gateway.Conns != 300 {
		t.Errorf("live target: %+v", s.Gateways[0])
	}
	if s.Gateways[1].Err == nil || shortErr(s.Gateways[1].Err) != "connection refused" {
		t.Errorf("closed port: err %v", s.Gateways[1].Err)
	}
	if s.Gateways[2].Err == nil || shortErr(s.Gateways[2].Err) != "timeout" {
		t.Errorf("stuck server: err %v", s.Gateways[2].Err)
	}
	if s.Loadgen == nil || s.Loadgen.Loadgen == nil || s.Loadgen.Loadgen.Target != 400 {
		t.Errorf("loadgen: %+v", s.Loadgen)
	}
}
