package loadgen

import (
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pushwire/pushwire/client"
)

func TestMetricsCounts(t *testing.T) {
	g := &gen{cfg: Config{Conns: 500}}
	m := newMetrics(g)

	m.onState(client.Connecting, nil) // a first attempt: not a reconnect
	m.onState(client.Connected, nil)
	m.onState(client.Disconnected, syscall.ECONNRESET)
	m.onState(client.Connecting, syscall.ECONNRESET) // the reconnect after it
	m.onState(client.Connected, nil)
	m.onState(client.Disconnected, nil)
	m.countErr("refused")
	m.countErr("refused")
	m.setPhase("ramp")
	m.setPhase("idle")

	for _, c := range []struct {
		name      string
		got, want float64
	}{
		{"connects", value(t, m.connects), 2},
		{"disconnects reset", value(t, m.disconnects.WithLabelValues("reset")), 1},
		{"disconnects closed", value(t, m.disconnects.WithLabelValues("closed")), 1},
		{"reconnects reset", value(t, m.reconnects.WithLabelValues("reset")), 1},
		{"errors refused", value(t, m.errors.WithLabelValues("refused")), 2},
		{"phase ramp", value(t, m.phase.WithLabelValues("ramp")), 0},
		{"phase idle", value(t, m.phase.WithLabelValues("idle")), 1},
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
	m := newMetrics(&gen{cfg: Config{Conns: 1}})
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
	none.setPhase("ramp")
}

func TestStartMetricsServes(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	g := &gen{cfg: Config{Conns: 7, MetricsAddr: "127.0.0.1:0"}, log: log}
	g.connected.Store(5)
	stop, err := g.startMetrics()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + g.m.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"pushwire_loadgen_target_connections 7", "pushwire_loadgen_connected_clients 5",
		`pushwire_loadgen_push_latency_window_seconds{quantile="0.99"} NaN`, "process_resident_memory_bytes"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	stop()
	if resp, err := http.Get("http://" + g.m.addr + "/metrics"); err == nil {
		resp.Body.Close()
		t.Error("still serving after stop")
	}

	bad := &gen{cfg: Config{MetricsAddr: "256.0.0.1:1"}, log: log}
	if _, err := bad.startMetrics(); err == nil {
		t.Error("no error for a bad address")
	}
	off := &gen{log: log}
	s, err := off.startMetrics()
	if err != nil || off.m != nil {
		t.Errorf("off: err %v, metrics %v", err, off.m)
	}
	s()
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
