package gateway

import (
	"regexp"
	"strconv"

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
	deliveries     [frame.NumTypes][numOutcomes]prometheus.Counter
	protocolErrors prometheus.Counter
	slowConsumers  prometheus.Counter
	evictions      prometheus.Counter
	pushAcks       prometheus.Counter
	goaways        prometheus.Counter
	rateLimited    prometheus.Counter
	requests       prometheus.Counter
	responses      *prometheus.CounterVec
	resent         prometheus.Counter

	// the cluster
	routeOps       *prometheus.CounterVec
	busMessages    *prometheus.CounterVec
	busUnreceived  prometheus.Counter
	routeQueue     prometheus.Gauge
	resyncs        prometheus.Counter
	stale          prometheus.Counter
	unknown        prometheus.Counter
	remoteTimeouts prometheus.Counter
}

// routeOp counts one call to the route store by outcome.
func (m *metrics) routeOp(op string, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.routeOps.WithLabelValues(op, outcome).Inc()
}

// bus counts one bus message in or out by kind (kind 0: undecodable).
func (m *metrics) bus(dir string, kind byte) {
	name, ok := busKindNames[kind]
	if !ok {
		name = "bad"
	}
	m.busMessages.WithLabelValues(dir, name).Inc()
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
	m.pushes = prometheus.NewCounterVec(prometheus.CounterOpts(f("pushes_total", "Push deliveries by outcome (delivered, offline, dropped, slow_consumer, closing).")), []string{"outcome"})
	m.pushRequests = prometheus.NewCounterVec(prometheus.CounterOpts(f("push_requests_total", "Push API calls by HTTP status.")), []string{"status"})
	framesIn := prometheus.NewCounterVec(prometheus.CounterOpts(f("frames_in_total", "Frames received by type.")), []string{"type"})
	framesOut := prometheus.NewCounterVec(prometheus.CounterOpts(f("frames_out_total", "Frames queued to clients by type.")), []string{"type"})
	for t := frame.TypeLogin; t < frame.NumTypes; t++ {
		m.framesIn[t] = framesIn.WithLabelValues(t.String())
		m.framesOut[t] = framesOut.WithLabelValues(t.String())
	}
	m.framesIn[0] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused_in"})
	m.framesOut[0] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused_out"})
	deliveries := prometheus.NewCounterVec(prometheus.CounterOpts(f("deliveries_total",
		"Frames written to connections by type and outcome (delivered, dropped, slow_consumer, closing).")), []string{"type", "outcome"})
	for t := range frame.NumTypes {
		for o := range numOutcomes {
			if t == 0 {
				m.deliveries[t][o] = prometheus.NewCounter(prometheus.CounterOpts{Name: "unused_deliveries"})
				continue
			}
			m.deliveries[t][o] = deliveries.WithLabelValues(frame.Type(t).String(), o.String())
		}
	}
	m.protocolErrors = prometheus.NewCounter(prometheus.CounterOpts(f("protocol_errors_total", "Connections closed for a protocol error.")))
	m.slowConsumers = prometheus.NewCounter(prometheus.CounterOpts(f("slow_consumers_total", "Connections whose write queue overflowed.")))
	m.evictions = prometheus.NewCounter(prometheus.CounterOpts(f("evictions_total", "Connections closed by a newer one of the same device or user.")))
	m.pushAcks = prometheus.NewCounter(prometheus.CounterOpts(f("push_acks_total", "PUSH_ACK frames received.")))

	m.goaways = prometheus.NewCounter(prometheus.CounterOpts(f("goaways_total", "GOAWAY frames sent (drain, refused while draining).")))
	m.rateLimited = prometheus.NewCounter(prometheus.CounterOpts(f("rate_limited_total", "REQUEST, JOIN and LEAVE frames answered RATE_LIMITED.")))
	m.requests = prometheus.NewCounter(prometheus.CounterOpts(f("upstream_requests_total", "REQUEST frames received for forwarding.")))
	m.responses = prometheus.NewCounterVec(prometheus.CounterOpts(f("upstream_responses_total", "RESPONSE frames to REQUESTs by code.")), []string{"code"})
	m.resent = prometheus.NewCounter(prometheus.CounterOpts(f("pushes_resent_total", "Unacknowledged pushes resent to a device's new connection.")))
	acked := prometheus.NewCounter(prometheus.CounterOpts(f("push_acked_total", "At-least-once pushes acknowledged.")))
	expired := prometheus.NewCounter(prometheus.CounterOpts(f("push_ack_expired_total", "At-least-once pushes dropped unacknowledged after their ttl.")))
	overflow := prometheus.NewCounter(prometheus.CounterOpts(f("push_ack_overflow_total", "At-least-once pushes dropped because a device had too many pending.")))
	n.acks.acked = func(k int) { acked.Add(float64(k)) }
	n.acks.expired = func(k int) { expired.Add(float64(k)) }
	n.acks.overflow = func(k int) { overflow.Add(float64(k)) }
	pending := prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("push_pending", "At-least-once pushes waiting for PUSH_ACK.")),
		func() float64 { return float64(n.acks.Len()) })
	groups := prometheus.NewGaugeFunc(prometheus.GaugeOpts(f("groups", "Groups with at least one member on this instance.")),
		func() float64 { return float64(n.groups.Len()) })
	reg.MustRegister(m.goaways, m.rateLimited, m.requests, m.responses, m.resent, acked, expired, overflow, pending, groups,
		&forwardCollector{n: n, constLabels: constLabels})
	reg.MustRegister(m.conns, sessions, draining, m.logins, m.closes, m.timeouts, m.pushes, m.pushRequests,
		framesIn, framesOut, deliveries, m.protocolErrors, m.slowConsumers, m.evictions, m.pushAcks)
	m.routeOps = prometheus.NewCounterVec(prometheus.CounterOpts(f("route_ops_total",
		"Route store calls by operation and outcome (ok, error; dropped: queued writes given up after retries or a full queue).")), []string{"op", "outcome"})
	m.busMessages = prometheus.NewCounterVec(prometheus.CounterOpts(f("bus_messages_total", "Bus messages by direction (in, out) and kind.")), []string{"dir", "kind"})
	m.busUnreceived = prometheus.NewCounter(prometheus.CounterOpts(f("bus_unreceived_total", "Bus messages published that no instance took.")))
	m.routeQueue = prometheus.NewGauge(prometheus.GaugeOpts(f("route_queue", "Route store writes queued.")))
	m.resyncs = prometheus.NewCounter(prometheus.CounterOpts(f("route_resyncs_total", "Times the instance re-asserted its local state in the route store.")))
	m.stale = prometheus.NewCounter(prometheus.CounterOpts(f("route_stale_total", "Route entries that named a connection its instance no longer has.")))
	m.unknown = prometheus.NewCounter(prometheus.CounterOpts(f("route_unknown_total",
		"Push targets missing from a route store that lost its data within an instance TTL, or while this instance was out of step with it: counted failed, not offline.")))
	m.remoteTimeouts = prometheus.NewCounter(prometheus.CounterOpts(f("remote_timeouts_total", "Pushes whose remote instances did not all report within the remote timeout.")))
	reg.MustRegister(m.routeOps, m.busMessages, m.busUnreceived, m.routeQueue, m.resyncs, m.stale, m.unknown, m.remoteTimeouts)
	reg.MustRegister(collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
		collectors.MetricsGC, collectors.MetricsScheduler, collectors.MetricsMemory,
		collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/cpu/classes/(gc/|total:)`)},
	)))
	reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// forwardCollector exports the forward pools' and the notifier's counters at scrape time.
type forwardCollector struct {
	n           *Node
	constLabels prometheus.Labels
}

var fwdLabels = []string{"biz", "name"}

func (c *forwardCollector) desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc("pushwire_"+name, help, labels, c.constLabels)
}

func (c *forwardCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *forwardCollector) Collect(ch chan<- prometheus.Metric) {
	submitted := c.desc("forward_submitted_total", "Requests accepted into a business's queue.", fwdLabels)
	busy := c.desc("forward_busy_total", "Requests refused BUSY: the business's queue was full.", fwdLabels)
	answered := c.desc("forward_answers_total", "Backend answers by result.", append(fwdLabels, "result"))
	queued := c.desc("forward_queued", "Requests waiting for a worker.", fwdLabels)
	inflight := c.desc("forward_in_flight", "Requests at the backend now.", fwdLabels)
	for _, st := range c.n.fwd.Stats() {
		id := strconv.Itoa(int(st.Biz))
		ch <- prometheus.MustNewConstMetric(submitted, prometheus.CounterValue, float64(st.Submitted), id, st.Name)
		ch <- prometheus.MustNewConstMetric(busy, prometheus.CounterValue, float64(st.Busy), id, st.Name)
		ch <- prometheus.MustNewConstMetric(answered, prometheus.CounterValue, float64(st.OK), id, st.Name, "ok")
		ch <- prometheus.MustNewConstMetric(answered, prometheus.CounterValue, float64(st.BackendError), id, st.Name, "backend_error")
		ch <- prometheus.MustNewConstMetric(answered, prometheus.CounterValue, float64(st.Timeout), id, st.Name, "timeout")
		ch <- prometheus.MustNewConstMetric(queued, prometheus.GaugeValue, float64(st.Queued), id, st.Name)
		ch <- prometheus.MustNewConstMetric(inflight, prometheus.GaugeValue, float64(st.InFlight), id, st.Name)
	}
	if c.n.notifier == nil {
		return
	}
	notify := c.desc("notify_events_total", "Connection state notifications by result.", []string{"url", "result"})
	for _, st := range c.n.notifier.Stats() {
		ch <- prometheus.MustNewConstMetric(notify, prometheus.CounterValue, float64(st.Sent), st.URL, "sent")
		ch <- prometheus.MustNewConstMetric(notify, prometheus.CounterValue, float64(st.Failed), st.URL, "failed")
		ch <- prometheus.MustNewConstMetric(notify, prometheus.CounterValue, float64(st.Dropped), st.URL, "dropped")
		ch <- prometheus.MustNewConstMetric(notify, prometheus.CounterValue, float64(st.Retries), st.URL, "retried")
	}
}

// Registry is the node's Prometheus registry: its own metrics, the Go runtime's (with GC pause
// histograms) and the process's.
func (n *Node) Registry() *prometheus.Registry { return n.m.reg }
