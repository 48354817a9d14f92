package tui

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// GatewaySample is the figures of one gateway /metrics page that the dashboard uses: gauges as
// they are, counters as totals to take rates from.
type GatewaySample struct {
	Node      string  `json:"node"`
	Engine    string  `json:"engine"`
	Transport string  `json:"transport"`
	Conns     float64 `json:"conns"`    // pushwire_connections
	Sessions  float64 `json:"sessions"` // pushwire_sessions
	Draining  bool    `json:"draining"` // pushwire_draining

	Logins         float64 `json:"logins"`          // pushwire_logins_total{result="ok"}
	Requests       float64 `json:"requests"`        // pushwire_frames_in_total{type="REQUEST"}
	Delivered      float64 `json:"delivered"`       // pushwire_pushes_total{outcome="delivered"}
	ProtocolErrors float64 `json:"protocol_errors"` // pushwire_protocol_errors_total
	SlowConsumers  float64 `json:"slow_consumers"`  // pushwire_slow_consumers_total

	RSS        float64   `json:"rss_bytes"`  // process_resident_memory_bytes
	Heap       float64   `json:"heap_bytes"` // go_memstats_heap_alloc_bytes
	Goroutines float64   `json:"goroutines"` // go_goroutines
	GCPauses   Histogram `json:"gc_pauses"`  // go_sched_pauses_total_gc_seconds (or go_gc_pauses_seconds)
	// GCPauseMax is the longest GC pause of the last 256 cycles, exact: go_gc_duration_seconds
	// {quantile="1"} (NaN or 0 when absent). The histogram's buckets grow ×11 (…, 0.92ms, 10.5ms, …),
	// so a quantile interpolated in them can be ten times the truth; this bounds it.
	GCPauseMax float64 `json:"gc_pause_max_s"`
	GCCPU      float64 `json:"gc_cpu_s"`    // go_cpu_classes_gc_total_cpu_seconds_total
	TotalCPU   float64 `json:"total_cpu_s"` // go_cpu_classes_total_cpu_seconds_total; 0 when not exported
	GOMAXPROCS float64 `json:"gomaxprocs"`  // go_sched_gomaxprocs_threads
}

// gatewaySample extracts a GatewaySample from a gateway's metrics.
func gatewaySample(f Families) GatewaySample {
	s := GatewaySample{
		Node:           f.Label("pushwire_connections", "node"),
		Engine:         f.Label("pushwire_connections", "engine"),
		Transport:      f.Label("pushwire_connections", "transport"),
		Conns:          f.Get("pushwire_connections"),
		Sessions:       f.Get("pushwire_sessions"),
		Draining:       f.Get("pushwire_draining") > 0,
		Logins:         f.Get("pushwire_logins_total", "result", "ok"),
		Requests:       f.Get("pushwire_frames_in_total", "type", "REQUEST"),
		Delivered:      f.Get("pushwire_pushes_total", "outcome", "delivered"),
		ProtocolErrors: f.Get("pushwire_protocol_errors_total"),
		SlowConsumers:  f.Get("pushwire_slow_consumers_total"),
		RSS:            f.Get("process_resident_memory_bytes"),
		Heap:           f.Get("go_memstats_heap_alloc_bytes"),
		Goroutines:     f.Get("go_goroutines"),
		GCCPU:          f.Get("go_cpu_classes_gc_total_cpu_seconds_total"),
		TotalCPU:       f.Get("go_cpu_classes_total_cpu_seconds_total"),
		GOMAXPROCS:     f.Get("go_sched_gomaxprocs_threads"),
	}
	s.GCPauseMax = math.NaN()
	if v, ok := f.SummaryQuantile("go_gc_duration_seconds", 1); ok {
		s.GCPauseMax = v
	}
	if h, ok := f.Histogram("go_sched_pauses_total_gc_seconds"); ok {
		s.GCPauses = h
	} else if h, ok := f.Histogram("go_gc_pauses_seconds"); ok {
		s.GCPauses = h
	}
	return s
}

// LoadgenSample is the figures of the load generator's /metrics page (loadgen/metrics.go).
type LoadgenSample struct {
	Target      float64            `json:"target"`
	Connected   float64            `json:"connected"`
	Connects    float64            `json:"connects"`
	Errors      map[string]float64 `json:"errors,omitempty"`
	Disconnects map[string]float64 `json:"disconnects,omitempty"`
	Reconnects  map[string]float64 `json:"reconnects,omitempty"`
	Delivered   float64            `json:"delivered"`
	P50         Num                `json:"p50_s"` // over the load generator's last latency window; NaN: none
	P90         Num                `json:"p90_s"`
	P99         Num                `json:"p99_s"`
	Phase       string             `json:"phase,omitempty"`
}

// loadgenSample extracts a LoadgenSample from the load generator's metrics.
func loadgenSample(f Families) LoadgenSample {
	q := func(s string) Num {
		v, ok := f.Value("pushwire_loadgen_push_latency_window_seconds", "quantile", s)
		if !ok {
			return Num(math.NaN())
		}
		return Num(v)
	}
	s := LoadgenSample{
		Target:      f.Get("pushwire_loadgen_target_connections"),
		Connected:   f.Get("pushwire_loadgen_connected_clients"),
		Connects:    f.Get("pushwire_loadgen_connects_total"),
		Errors:      f.ByLabel("pushwire_loadgen_errors_total", "reason"),
		Disconnects: f.ByLabel("pushwire_loadgen_disconnects_total", "reason"),
		Reconnects:  f.ByLabel("pushwire_loadgen_reconnects_total", "reason"),
		Delivered:   f.Get("pushwire_loadgen_delivered_total"),
		P50:         q("0.5"),
		P90:         q("0.9"),
		P99:         q("0.99"),
	}
	for phase, v := range f.ByLabel("pushwire_loadgen_phase", "phase") {
		if v > 0 {
			s.Phase = phase
		}
	}
	return s
}

// Scrape is the outcome of fetching one target.
type Scrape struct {
	URL     string
	At      time.Time
	Err     error          // the target is down (refused, timeout, bad answer)
	Gateway *GatewaySample // for a gateway target, when Err is nil
	Loadgen *LoadgenSample // for the load generator, when Err is nil
}

// Snapshot is one poll of every target.
type Snapshot struct {
	At       time.Time
	Gateways []Scrape // in the order of the targets
	Loadgen  *Scrape  // nil without a load generator target
}

// Poller fetches every target's /metrics once per Interval.
type Poller struct {
	Gateways []string      // gateway /metrics URLs
	Loadgen  string        // the load generator's /metrics URL; "" for none
	Interval time.Duration // default 1s
	Timeout  time.Duration // per fetch; default 80% of Interval
	Client   *http.Client  // default: a client of its own
	Log      *slog.Logger  // default: discard
}

func (p *Poller) setDefaults() {
	if p.Interval <= 0 {
		p.Interval = time.Second
	}
	if p.Timeout <= 0 {
		p.Timeout = p.Interval * 8 / 10
	}
	if p.Client == nil {
		p.Client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2, IdleConnTimeout: time.Minute}}
	}
	if p.Log == nil {
		p.Log = slog.New(slog.DiscardHandler)
	}
}

// Run polls until ctx ends, sending each snapshot on out. When the receiver lags it keeps only
// the newest snapshot (out should have a buffer of one). Run does not close out.
func (p *Poller) Run(ctx context.Context, out chan Snapshot) {
	p.setDefaults()
	t := time.NewTicker(p.Interval)
	defer t.Stop()
	for {
		s := p.Poll(ctx)
		if ctx.Err() != nil {
			return
		}
		select {
		case out <- s:
		default: // drop the stale one, keep the newest
			select {
			case <-out:
			default:
			}
			select {
			case out <- s:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll fetches every target once, concurrently.
func (p *Poller) Poll(ctx context.Context) Snapshot {
	p.setDefaults()
	s := Snapshot{At: time.Now(), Gateways: make([]Scrape, len(p.Gateways))}
	var wg sync.WaitGroup
	for i, u := range p.Gateways {
		wg.Go(func() {
			sc := Scrape{URL: u}
			f, err := p.fetch(ctx, u)
			sc.At = time.Now()
			if err != nil {
				sc.Err = err
			} else {
				g := gatewaySample(f)
				sc.Gateway = &g
			}
			s.Gateways[i] = sc
		})
	}
	if p.Loadgen != "" {
		s.Loadgen = &Scrape{URL: p.Loadgen}
		wg.Go(func() {
			f, err := p.fetch(ctx, p.Loadgen)
			s.Loadgen.At = time.Now()
			if err != nil {
				s.Loadgen.Err = err
			} else {
				l := loadgenSample(f)
				s.Loadgen.Loadgen = &l
			}
		})
	}
	wg.Wait()
	return s
}

func (p *Poller) fetch(ctx context.Context, u string) (Families, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := p.Client.Do(req)
	if err != nil {
		p.Log.Debug("scrape failed", "url", u, "err", err)
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("tui: %s: status %s", u, resp.Status)
	}
	f, err := ParseMetrics(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		p.Log.Debug("scrape unparsable", "url", u, "err", err)
		return nil, err
	}
	return f, nil
}

// MetricsURL turns a target as given on the command line into a /metrics URL: "host:port" and
// "http://host:port" get http:// and /metrics added; a URL with a path is kept as it is.
func MetricsURL(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("tui: empty target")
	}
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("tui: target %q: %w", s, err)
	}
	if u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return "", fmt.Errorf("tui: target %q: want http(s)://host:port[/metrics]", s)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/metrics"
	}
	return u.String(), nil
}
