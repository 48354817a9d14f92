package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushwire/pushwire/client"
)

// LatencyWindow is the interval over which the pushwire_loadgen_push_latency_window_seconds
// gauges are computed.
const LatencyWindow = time.Second

// metrics is the load generator's Prometheus registry, served on GET /metrics at
// Config.MetricsAddr (nil when that is empty, and then every method is a no-op):
//
//	pushwire_loadgen_target_connections                  gauge: Config.Conns
//	pushwire_loadgen_connected_clients                   gauge: clients logged in now
//	pushwire_loadgen_connects_total                      counter: logins that succeeded
//	pushwire_loadgen_errors_total{reason}                counter: failed connects and push calls
//	pushwire_loadgen_disconnects_total{reason}           counter: connections lost after login
//	pushwire_loadgen_reconnects_total{reason}            counter: connection attempts after a lost
//	                                                     connection or a failed attempt, by the reason of that earlier failure
//	pushwire_loadgen_delivered_total                     counter: messages received with a measured latency:
//	                                                     pushes (first delivery) or, in the upstream phase, responses
//	pushwire_loadgen_push_latency_seconds                histogram: their end-to-end latency
//	pushwire_loadgen_push_latency_window_seconds{quantile} gauge: 0.5, 0.9, 0.99 over the last
//	                                                     LatencyWindow (NaN when nothing arrived in it)
//	pushwire_loadgen_phase{phase}                        gauge: 1 for the phase running now
//
// plus the Go and process collectors of the load generator itself.
type metrics struct {
	addr        string // the listener's address
	reg         *prometheus.Registry
	errors      *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	reconnects  *prometheus.CounterVec
	connects    prometheus.Counter
	delivered   prometheus.Counter
	latency     prometheus.Histogram
	window      *prometheus.GaugeVec
	phase       *prometheus.GaugeVec

	mu        sync.Mutex
	hist      *hdrhistogram.Histogram // latencies (µs) of the current window
	lastPhase string
}

func newMetrics(g *gen) *metrics {
	m := &metrics{
		reg:  prometheus.NewRegistry(),
		hist: hdrhistogram.New(1, (5 * time.Minute).Microseconds(), 3),
	}
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "pushwire", Subsystem: "loadgen", Name: name, Help: help}
	}
	target := prometheus.NewGauge(prometheus.GaugeOpts(opts("target_connections", "Connections the run opens.")))
	target.Set(float64(g.cfg.Conns))
	connected := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("connected_clients", "Clients logged in now.")),
		func() float64 { return float64(g.connected.Load()) })
	m.connects = prometheus.NewCounter(prometheus.CounterOpts(opts("connects_total", "Logins that succeeded, reconnections included.")))
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts(opts("errors_total", "Failed connects and push API calls by reason.")), []string{"reason"})
	m.disconnects = prometheus.NewCounterVec(prometheus.CounterOpts(opts("disconnects_total", "Connections lost after login, by reason.")), []string{"reason"})
	m.reconnects = prometheus.NewCounterVec(prometheus.CounterOpts(opts("reconnects_total",
		"Connection attempts after a lost connection or a failed attempt, by the reason of that failure.")), []string{"reason"})
	m.delivered = prometheus.NewCounter(prometheus.CounterOpts(opts("delivered_total", "Messages received with a measured latency: pushes (first delivery) or, upstream, responses.")))
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "pushwire", Subsystem: "loadgen", Name: "push_latency_seconds",
		Help:    "End-to-end latency of pushes (or upstream round trips), from the intended send time to receipt.",
		Buckets: prometheus.ExponentialBuckets(100e-6, 2, 19), // 100µs … ~26s
	})
	m.window = prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("push_latency_window_seconds",
		"End-to-end latency quantiles over the last window (NaN when nothing arrived in it).")), []string{"quantile"})
	for _, q := range []string{"0.5", "0.9", "0.99"} {
		m.window.WithLabelValues(q).Set(math.NaN())
	}
	m.phase = prometheus.NewGaugeVec(prometheus.GaugeOpts(opts("phase", "1 for the phase running now.")), []string{"phase"})
	m.reg.MustRegister(target, connected, m.connects, m.errors, m.disconnects, m.reconnects, m.delivered,
		m.latency, m.window, m.phase,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// startMetrics serves the registry on Config.MetricsAddr when it is set and rolls the latency
// window. The returned function stops both and waits for them; it is never nil.
func (g *gen) startMetrics() (stop func(), err error) {
	if g.cfg.MetricsAddr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", g.cfg.MetricsAddr)
	if err != nil {
		return func() {}, fmt.Errorf("loadgen: metrics listener %s: %w", g.cfg.MetricsAddr, err)
	}
	g.m = newMetrics(g)
	g.m.addr = ln.Addr().String()
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g.m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.log.Warn("loadgen: metrics listener stopped", "err", err)
		}
	}()
	done := make(chan struct{})
	go func() {
		defer wg.Done()
		t := time.NewTicker(LatencyWindow)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				g.m.roll()
			}
		}
	}()
	g.log.Info("loadgen: metrics listening", "url", "http://"+ln.Addr().String()+"/metrics")
	return func() {
		close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		wg.Wait()
	}, nil
}

// roll publishes the quantiles of the window that ends now and starts a new one.
func (m *metrics) roll() {
	m.mu.Lock()
	n := m.hist.TotalCount()
	p50, p90, p99 := m.hist.ValueAtQuantile(50), m.hist.ValueAtQuantile(90), m.hist.ValueAtQuantile(99)
	m.hist.Reset()
	m.mu.Unlock()
	set := func(q string, us int64) {
		v := math.NaN()
		if n > 0 {
			v = float64(us) / 1e6
		}
		m.window.WithLabelValues(q).Set(v)
	}
	set("0.5", p50)
	set("0.9", p90)
	set("0.99", p99)
}

func (m *metrics) countErr(reason string) {
	if m != nil {
		m.errors.WithLabelValues(reason).Inc()
	}
}

// onState counts connects, disconnects and reconnection attempts from a client's OnState.
func (m *metrics) onState(st client.State, err error) {
	if m == nil {
		return
	}
	switch st {
	case client.Connecting:
		if err != nil {
			m.reconnects.WithLabelValues(errReason(err)).Inc()
		}
	case client.Connected:
		m.connects.Inc()
	case client.Disconnected:
		reason := "closed"
		if err != nil {
			reason = errReason(err)
		}
		m.disconnects.WithLabelValues(reason).Inc()
	case client.Idle, client.Closed:
		// Idle is before the first attempt; Closed follows a Disconnected already counted.
	}
}

// observeLatency records one message's end-to-end latency in microseconds (a push's delivery or
// an upstream request's response).
func (m *metrics) observeLatency(us int64) {
	if m == nil {
		return
	}
	m.delivered.Inc()
	m.latency.Observe(float64(us) / 1e6)
	m.mu.Lock()
	_ = m.hist.RecordValue(max(us, 1))
	m.mu.Unlock()
}

// setPhase marks name as the phase running now.
func (m *metrics) setPhase(name string) {
	if m == nil {
		return
	}
	m.mu.Lock()
	last := m.lastPhase
	m.lastPhase = name
	m.mu.Unlock()
	if last != "" {
		m.phase.WithLabelValues(last).Set(0)
	}
	m.phase.WithLabelValues(name).Set(1)
}
