package loadgen

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// coordMetrics is the coordinator's /metrics: the phase gauge and the coordinator's Go and process
// collectors, plus every worker's families summed (see metrics).
type coordMetrics struct {
	addr  string
	phase *prometheus.GaugeVec

	mu        sync.Mutex
	lastPhase string
}

// setPhase marks name as the phase running now; m may be nil (no --metrics).
func (m *coordMetrics) setPhase(name string) {
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

// serveMetrics serves the coordinator's /metrics at addr until the returned function is called.
func serveMetrics(addr string, workers func() []string, hc *http.Client, log *slog.Logger) (*coordMetrics, func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, nil, fmt.Errorf("loadgen: metrics listener %s: %w", addr, err)
	}
	m := &coordMetrics{addr: ln.Addr().String()}
	reg := prometheus.NewRegistry()
	m.phase = prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "pushwire", Subsystem: "loadgen", Name: "phase",
		Help: "1 for the phase running now."}, []string{"phase"})
	reg.MustRegister(m.phase, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g := prometheus.Gatherers{reg, workerGatherer{urls: workers, hc: hc}}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("loadgen: metrics listener stopped", "err", err)
		}
	}()
	log.Info("loadgen: metrics listening", "url", "http://"+m.addr+"/metrics")
	return m, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	}, nil
}

// workerGatherer scrapes every worker's /metrics and sums the families: counters, gauges and
// histograms add up, except the latency window's quantiles, which take the highest worker's
// (quantiles do not add, and the result file's latencies come from merged HDR histograms).
type workerGatherer struct {
	urls func() []string
	hc   *http.Client
}

const windowFamily = "pushwire_loadgen_push_latency_window_seconds"

func (g workerGatherer) Gather() ([]*dto.MetricFamily, error) {
	merged := map[string]*dto.MetricFamily{}
	index := map[string]*dto.Metric{} // family + labels → merged metric
	var errs []error
	for _, u := range g.urls() {
		fams, err := scrape(g.hc, u)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for name, f := range fams {
			mf, ok := merged[name]
			if !ok {
				mf = &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type}
				merged[name] = mf
			}
			for _, m := range f.Metric {
				key := name + "\xff" + labelKey(m)
				if have, ok := index[key]; ok {
					addMetric(name, have, m)
					continue
				}
				index[key] = m
				mf.Metric = append(mf.Metric, m)
			}
		}
	}
	out := make([]*dto.MetricFamily, 0, len(merged))
	for _, f := range merged {
		out = append(out, f)
	}
	slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	return out, errors.Join(errs...)
}

func scrape(hc *http.Client, url string) (map[string]*dto.MetricFamily, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("loadgen: worker metrics %s: %w", url, err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("loadgen: worker metrics %s: %w", url, err)
	}
	return fams, nil
}

func labelKey(m *dto.Metric) string {
	var b strings.Builder
	for _, l := range m.GetLabel() {
		b.WriteString(l.GetName() + "=" + l.GetValue() + "\xff")
	}
	return b.String()
}

// addMetric adds m into have (same family, same labels).
func addMetric(family string, have, m *dto.Metric) {
	add := func(a *float64, b float64) { *a += b }
	switch {
	case have.Counter != nil && m.Counter != nil:
		v := have.Counter.GetValue()
		add(&v, m.Counter.GetValue())
		have.Counter.Value = &v
	case have.Gauge != nil && m.Gauge != nil:
		v, w := have.Gauge.GetValue(), m.Gauge.GetValue()
		if family == windowFamily {
			if math.IsNaN(v) || w > v {
				v = w
			}
		} else {
			v += w
		}
		have.Gauge.Value = &v
	case have.Untyped != nil && m.Untyped != nil:
		v := have.Untyped.GetValue() + m.Untyped.GetValue()
		have.Untyped.Value = &v
	case have.Histogram != nil && m.Histogram != nil:
		h, o := have.Histogram, m.Histogram
		c, s := h.GetSampleCount()+o.GetSampleCount(), h.GetSampleSum()+o.GetSampleSum()
		h.SampleCount, h.SampleSum = &c, &s
		if len(h.Bucket) == len(o.Bucket) {
			for i, b := range h.Bucket {
				n := b.GetCumulativeCount() + o.Bucket[i].GetCumulativeCount()
				b.CumulativeCount = &n
			}
		}
	}
}
