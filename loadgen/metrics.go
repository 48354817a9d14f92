package loadgen

import (
	"math"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushwire/pushwire/client"
)

// LatencyWindow is the interval over which the pushwire_loadgen_push_latency_window_seconds
// gauges are computed.
const LatencyWindow = time.Second

// metrics is one worker's Prometheus registry, served on its API's GET /metrics; the
// coordinator serves the sum of its workers' families on GET /metrics at Config.MetricsAddr (see
// coordMetrics), with the phase gauge and its own Go and process collectors:
//
//	pushwire_loadgen_target_connections                  gauge: Config.Conns
//	pushwire_loadgen_connected_clients                   gauge: clients logged in now
//	pushwire_loadgen_connects_total                      counter: logins that succeeded
//	pushwire_loadgen_errors_total{reason}                counter: failed connects and requests
//	pushwire_loadgen_disconnects_total{reason}           counter: connections lost after login
//	pushwire_loadgen_reconnects_total{reason}            counter: connection attempts after a lost
//	                                                     connection or a failed attempt, by the reason of that earlier failure
//	pushwire_loadgen_delivered_total                     counter: messages received with a measured latency:
//	                                                     pushes (first delivery) or, in the upstream phase, responses
//	pushwire_loadgen_push_latency_seconds                histogram: their end-to-end latency
//	pushwire_loadgen_push_latency_window_seconds{quantile} gauge: 0.5, 0.9, 0.99 over the last
//	                                                     LatencyWindow (NaN when nothing arrived in it);
//	                                                     over several workers, the highest worker's
//	pushwire_loadgen_phase{phase}                        gauge: 1 for the phase running now (coordinator)
type metrics struct {
	reg         *prometheus.Registry
	errors      *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	reconnects  *prometheus.CounterVec
	connects    prometheus.Counter
	delivered   prometheus.Counter
	latency     prometheus.Histogram
	window      *prometheus.GaugeVec

	mu   sync.Mutex
	hist *hdrhistogram.Histogram // latencies (µs) of the current window
}

func newMetrics(target int, connected func() int64) *metrics {
	m := &metrics{
		reg:  prometheus.NewRegistry(),
		hist: hdrhistogram.New(1, (5 * time.Minute).Microseconds(), 3),
	}
	opts := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "pushwire", Subsystem: "loadgen", Name: name, Help: help}
	}
	tg := prometheus.NewGauge(prometheus.GaugeOpts(opts("target_connections", "Connections the run opens.")))
	tg.Set(float64(target))
	conn := prometheus.NewGaugeFunc(prometheus.GaugeOpts(opts("connected_clients", "Clients logged in now.")),
		func() float64 { return float64(connected()) })
	m.connects = prometheus.NewCounter(prometheus.CounterOpts(opts("connects_total", "Logins that succeeded, reconnections included.")))
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts(opts("errors_total", "Failed connects and requests by reason.")), []string{"reason"})
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
	m.reg.MustRegister(tg, conn, m.connects, m.errors, m.disconnects, m.reconnects, m.delivered, m.latency, m.window)
	return m
}

// rollEvery rolls the latency window every d until the returned function is called.
func (m *metrics) rollEvery(d time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(d)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				m.roll()
			}
		}
	}()
	return func() {
		close(done)
		wg.Wait()
	}
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
