package gateway

import (
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pushwire/pushwire/core/frame"
)

type metrics struct {
	reg *prometheus.Registry

	conns          prometheus.Gauge
	logins         *prometheus.CounterVec
	closes         *prometheus.CounterVec
	timeouts       *prometheus.CounterVec
	pushes         *prometheus.CounterVec
	pushRequests   *prometheus.CounterVec
	framesIn       [frame.NumTypes]prometheus.Counter
	framesOut      [frame.NumTypes]prometheus.Counter
	protocolErrors prometheus.Counter
	slowConsumers  prometheus.Counter
	evictions      prometheus.Counter
	pushAcks       prometheus.Counter
}

func newMetrics(n *Node) *metrics {
	reg := prometheus.NewRegistry()
	constLabels := prometheus.Labels{"node": n.cfg.Node, "engine": n.cfg.Engine, "transport": n.cfg.Transport}
	f := func(name, help string) prometheus.Opts {
		return prometheus.Opts{Namespace: "pushwire", Name: name, Help: help, ConstLabels: constLabels}
	}
	m := &metrics{reg: reg}
	m.conns = prometheus.NewGauge(prometheus.GaugeOpts(f("connections", "Open transport connections.")))
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("sessions", "Logged-in sessions.")),
		func() float64 { return float64(n.table.Len()) })
	draining := prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("draining", "1 while the instance drains.")),
		func() float64 {
			if n.draining.Load() {
				return 1
			}
			return 0
		})
	m.logins = prometheus.NewCounterVec(prometheus.CounterOpts(f("logins_total", "LOGIN attempts by result (ok, missing, invalid, mismatch).")), []string{"result"})
	m.closes = prometheus.NewCounterVec(prometheus.CounterOpts(f("closes_total", "Closed connections by reason.")), []string{"reason"})
	m.timeouts = prometheus.NewCounterVec(prometheus.CounterOpts(f("timeouts_total", "Connections closed by a timeout (login, idle).")), []string{"kind"})
	m.pushes = prometheus.NewCounterVec(prometheus.CounterOpts(f("pushes_total", "Push deliveries by outcome (delivered, offline, failed).")), []string{"outcome"})
	m.pushRequests = prometheus.NewCounterVec(prometheus.CounterOpts(f("push_requests_total", "Push API calls by HTTP status.")), []string{"status"})
	framesIn := prometheus.NewCounterVec(prometheus.CounterOpts(f("frames_in_total", "Frames received by type.")), []string{"type"})
	framesOut := prometheus.NewCounterVec(prometheus.CounterOpts(f("frames_out_total", "Frames queued to clients by type.")), []string{"type"})
	for t := frame.TypeLogin; t < frame.NumTypes; t++ {
		m.framesIn[t] = framesIn.WithLabelValues(t.String())
		m.framesOut[t] = framesOut.WithLabelValues(t.String())
	}
	m.framesIn[0] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused_in"})
	m.framesOut[0] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused_out"})
	m.protocolErrors = prometheus.NewCounter(prometheus.CounterOpts(f("protocol_errors_total", "Connections closed for a protocol error.")))
	m.slowConsumers = prometheus.NewCounter(prometheus.CounterOpts(f("slow_consumers_total", "Connections whose write queue overflowed.")))
	m.evictions = prometheus.NewCounter(prometheus.CounterOpts(f("evictions_total", "Connections closed by a newer one of the same device or user.")))
	m.pushAcks = prometheus.NewCounter(prometheus.CounterOpts(f("push_acks_total", "PUSH_ACK frames received.")))

	reg.MustRegister(m.conns, sessions, draining, m.logins, m.closes, m.timeouts, m.pushes, m.pushRequests,
		framesIn, framesOut, m.protocolErrors, m.slowConsumers, m.evictions, m.pushAcks)
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.MetricsGC, collectors.MetricsScheduler, collectors.MetricsMemory,
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/cpu/classes/(gc|total)/`)},
	)))
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is the node's Prometheus registry: its own metrics, the Go runtime's (with GC pause
// histograms) and the process's.
func (n *Node) Registry() *prometheus.Registry { return n.m.reg }
