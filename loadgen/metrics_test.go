package loadgen

import (
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/pushwire/pushwire/client"
)

func TestMetricsCounts(t *testing.T) {
	m := newMetrics(500, func() int64 { return 0 })

	m.onState(client.Connecting, nil) // a first attempt: not a reconnect
	m.onState(client.Connected, nil)
	m.onState(client.Disconnected, syscall.ECONNRESET)
	m.onState(client.Connecting, syscall.ECONNRESET) // the reconnect after it
	m.onState(client.Connected, nil)
	m.onState(client.Disconnected, nil)
	m.countErr("refused")
	m.countErr("refused")

	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"connects", value(t, m.connects), 2},
		{"disconnects reset", value(t, m.disconnects.WithLabelValues("reset")), 1},
		{"disconnects closed", value(t, m.disconnects.WithLabelValues("closed")), 1},
		{"reconnects reset", value(t, m.reconnects.WithLabelValues("reset")), 1},
		{"errors refused", value(t, m.errors.WithLabelValues("refused")), 2},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if n := count(m.reconnects); n != 1 {
		t.Errorf("reconnect series: %d, want 1 (a first attempt is not a reconnect)", n)
	}
}

func TestMetricsLatencyWindow(t *testing.T) {
	m := newMetrics(1, func() int64 { return 0 })
	q := func(s string) float64 { return value(t, m.window.WithLabelValues(s)) }
	if !math.IsNaN(q("0.5")) {
		t.Fatal("window quantile set before any delivery")
	}
	for us := int64(1); us <= 1000; us++ { // 1µs … 1ms
		m.observeLatency(us)
	}
	m.roll()
	if p50, p99 := q("0.5"), q("0.99"); math.Abs(p50-500e-6) > 2e-6 || math.Abs(p99-990e-6) > 2e-6 {
		t.Errorf("p50 %v p99 %v", p50, p99)
	}
	if got := value(t, m.delivered); got != 1000 {
		t.Errorf("delivered %v", got)
	}
	m.roll() // an empty window: unknown again
	if !math.IsNaN(q("0.99")) {
		t.Errorf("empty window p99 %v, want NaN", q("0.99"))
	}

	var none *metrics // no --metrics: every hook is a no-op
	none.countErr("x")
	none.onState(client.Connected, nil)
	none.observeLatency(1)
	var noCoord *coordMetrics
	noCoord.setPhase("ramp")
}

// The coordinator's /metrics sums its workers' families (the window quantiles take the highest
// worker's) and adds the phase gauge.
func TestCoordinatorMetricsMerge(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	var urls []string
	for _, n := range []int64{3, 4} {
		m := newMetrics(10*int(n), func() int64 { return n })
		m.countErr("refused")
		for us := int64(1); us <= 1000*n; us++ {
			m.observeLatency(us)
		}
		m.roll()
		srv := httptest.NewServer(promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
		defer srv.Close()
		urls = append(urls, srv.URL+"/metrics")
	}
	cm, stop, err := serveMetrics("127.0.0.1:0", func() []string { return urls }, http.DefaultClient, log)
	if err != nil {
		t.Fatal(err)
	}
	cm.setPhase("ramp")
	cm.setPhase("push")
	resp, err := http.Get("http://" + cm.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"pushwire_loadgen_target_connections 70",
		"pushwire_loadgen_connected_clients 7",
		`pushwire_loadgen_errors_total{reason="refused"} 2`,
		"pushwire_loadgen_delivered_total 7000",
		"pushwire_loadgen_push_latency_seconds_count 7000",
		`pushwire_loadgen_phase{phase="push"} 1`,
		`pushwire_loadgen_phase{phase="ramp"} 0`,
		"process_resident_memory_bytes",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// p99 of the worker with 1…4000µs is ~3.96ms, above the other's ~2.97ms: the highest wins
	if !strings.Contains(string(body), `pushwire_loadgen_push_latency_window_seconds{quantile="0.99"} 0.0039`) {
		t.Errorf("window p99 is not the highest worker's:\n%s", grepLines(string(body), "window"))
	}
	stop()
	if resp, err := http.Get("http://" + cm.addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("still serving after stop")
	}
	if _, _, err := serveMetrics("256.0.0.1:1", nil, http.DefaultClient, log); err == nil {
		t.Error("no error for a bad address")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// value is the value of a collector holding one counter or gauge.
func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	ch := make(chan prometheus.Metric, 16)
	c.Collect(ch)
	close(ch)
	var out []float64
	for m := range ch {
		var d dto.Metric
		if err := m.Write(&d); err != nil {
			t.Fatal(err)
		}
		switch {
		case d.Counter != nil:
			out = append(out, d.GetCounter().GetValue())
		case d.Gauge != nil:
			out = append(out, d.GetGauge().GetValue())
		}
	}
	if len(out) != 1 {
		t.Fatalf("%d values, want 1", len(out))
	}
	return out[0]
}

// count is the number of series a collector holds.
func count(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 64)
	c.Collect(ch)
	close(ch)
	n := 0
	for range ch {
		n++
	}
	return n
}
