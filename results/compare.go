package results

import "strconv"

// Ratio compares one metric of one phase between two runs.
type Ratio struct {
	Phase  string  // phase name; a repeated name gets "#2", "#3"… in order
	Metric string  // metric name, see Compare
	Base   float64 // value in the base run
	Other  float64 // value in the other run
	Ratio  float64 // Other / Base
	// LowerIsBetter tells which way an improvement goes: true for memory,
	// latency, GC and CPU; false for rates and connections.
	LowerIsBetter bool
}

// metric is one per-phase figure compared between runs and written in the
// benchmark format.
type metric struct {
	name  string // Ratio.Metric
	unit  string // benchmark format unit: no spaces
	lower bool   // lower is better
	// value returns the metric and whether the phase measured it.
	value func(p *Phase) (float64, bool)
}

// metrics lists the compared figures in display order.
var metrics = []metric{
	{"conns", "conns", false, func(p *Phase) (float64, bool) {
		return float64(p.Conns), p.Conns > 0 || p.Target > 0
	}},
	{"connect_rate", "connects/s", false, func(p *Phase) (float64, bool) {
		return p.ConnectRate, p.ConnectRate > 0
	}},
	{"rss_per_conn", "rss-B/conn", true, func(p *Phase) (float64, bool) {
		return p.Gateway.RSSPerConn, p.Gateway.RSSBytes > 0
	}},
	{"heap_per_conn", "heap-B/conn", true, func(p *Phase) (float64, bool) {
		return p.Gateway.HeapPerConn, p.Gateway.HeapBytes > 0
	}},
	{"goroutines", "goroutines", true, func(p *Phase) (float64, bool) {
		return float64(p.Gateway.Goroutines), p.Gateway.Goroutines > 0
	}},
	{"gc_pause_p99", "gc-p99-ms", true, func(p *Phase) (float64, bool) {
		return p.Gateway.GCPauseP99 * 1e3, p.Gateway.GCCount > 0
	}},
	{"gc_cpu_share", "gc-cpu-pct", true, func(p *Phase) (float64, bool) {
		return p.Gateway.GCCPUShare * 100, p.Gateway.CPUSeconds > 0
	}},
	{"cpu_seconds", "cpu-sec", true, func(p *Phase) (float64, bool) {
		return p.Gateway.CPUSeconds, p.Gateway.CPUSeconds > 0
	}},
	{"deliveries_per_s", "deliveries/s", false, func(p *Phase) (float64, bool) {
		return p.Deliveries, p.Deliveries > 0
	}},
	{"latency_p50", "p50-ms", true, func(p *Phase) (float64, bool) {
		return latency(p, func(l *Latency) float64 { return l.P50 })
	}},
	{"latency_p99", "p99-ms", true, func(p *Phase) (float64, bool) {
		return latency(p, func(l *Latency) float64 { return l.P99 })
	}},
	{"latency_p999", "p999-ms", true, func(p *Phase) (float64, bool) {
		return latency(p, func(l *Latency) float64 { return l.P999 })
	}},
	{"latency_max", "max-ms", true, func(p *Phase) (float64, bool) {
		return latency(p, func(l *Latency) float64 { return l.Max })
	}},
	{"sent", "sent", false, func(p *Phase) (float64, bool) {
		return float64(p.Sent), p.Sent > 0
	}},
	{"delivered", "delivered", false, func(p *Phase) (float64, bool) {
		return float64(p.Delivered), p.Sent > 0
	}},
	{"missing", "missing", true, func(p *Phase) (float64, bool) {
		return float64(p.Missing), p.Sent > 0
	}},
	{"achieved_per_s", "achieved/s", false, func(p *Phase) (float64, bool) {
		return p.Achieved, p.Offered > 0
	}},
	{"latency_p99_uncorrected", "p99-uncorrected-ms", true, func(p *Phase) (float64, bool) {
		if l := p.LatencyUncorrected; l != nil && l.Count > 0 {
			return l.P99, true
		}
		return 0, false
	}},
	{"cpu_us_per_op", "cpu-us/op", true, func(p *Phase) (float64, bool) {
		return cost(p, func(c *Cost) float64 { return c.CPUPerOp })
	}},
	{"allocs_per_op", "allocs/op", true, func(p *Phase) (float64, bool) {
		return cost(p, func(c *Cost) float64 { return c.AllocsPerOp })
	}},
	{"alloc_bytes_per_op", "B/op", true, func(p *Phase) (float64, bool) {
		return cost(p, func(c *Cost) float64 { return c.AllocBytesPerOp })
	}},
	{"cpu_us_per_delivery", "cpu-us/delivery", true, func(p *Phase) (float64, bool) {
		v, ok := cost(p, func(c *Cost) float64 { return c.CPUPerDelivery })
		return v, ok && p.Cost.Deliveries > 0
	}},
	{"allocs_per_delivery", "allocs/delivery", true, func(p *Phase) (float64, bool) {
		v, ok := cost(p, func(c *Cost) float64 { return c.AllocsPerDelivery })
		return v, ok && p.Cost.Deliveries > 0
	}},
	{"loadgen_cpu_seconds", "loadgen-cpu-s", true, func(p *Phase) (float64, bool) {
		return p.Loadgen.cpu()
	}},
	{"loadgen_rss", "loadgen-rss-B", true, func(p *Phase) (float64, bool) {
		if l := p.Loadgen; l != nil && l.Processes > 0 {
			return float64(l.RSSBytes), true
		}
		return 0, false
	}},
}

// cost returns f of the phase's cost per operation, when it has one.
func cost(p *Phase, f func(*Cost) float64) (float64, bool) {
	if p.Cost == nil || p.Cost.Ops <= 0 {
		return 0, false
	}
	return f(p.Cost), true
}

// cpu returns the load generator's CPU seconds, when l was measured.
func (l *Loadgen) cpu() (float64, bool) {
	if l == nil || l.Processes == 0 {
		return 0, false
	}
	return l.CPUSeconds, true
}

func latency(p *Phase, f func(*Latency) float64) (float64, bool) {
	if p.Latency == nil || p.Latency.Count == 0 {
		return 0, false
	}
	return f(p.Latency), true
}

// phaseKeys returns a unique key per phase: its name, with "#2", "#3"…
// appended to the second and later phases of the same name.
func phaseKeys(phases []Phase) []string {
	keys := make([]string, len(phases))
	seen := make(map[string]int, len(phases))
	for i := range phases {
		n := phases[i].Name
		seen[n]++
		keys[i] = n
		if c := seen[n]; c > 1 {
			keys[i] = n + "#" + strconv.Itoa(c)
		}
	}
	return keys
}

// Compare returns Other/Base for each metric of each phase both runs have,
// in base's phase order. Phases are matched by name (the n-th phase of a
// name with the n-th of the same name in other). A metric is compared when
// both phases measured it and its base value is not zero.
//
// The metrics are: conns, connect_rate (logins/s), rss_per_conn and
// heap_per_conn (bytes), goroutines, gc_pause_p99 (ms), gc_cpu_share (%),
// cpu_seconds, deliveries_per_s, latency_p50, latency_p99, latency_p999,
// latency_max (ms), sent, delivered, missing; achieved_per_s (the rate the
// load generator reached, for a phase with an offered rate);
// latency_p99_uncorrected (ms, from the actual sends); the
// gateways' cost, cpu_us_per_op, allocs_per_op, alloc_bytes_per_op,
// cpu_us_per_delivery and allocs_per_delivery; and the load generator's
// loadgen_cpu_seconds and loadgen_rss (bytes).
func Compare(base, other *Result) []Ratio {
	if base == nil || other == nil {
		return nil
	}
	byKey := make(map[string]*Phase, len(other.Phases))
	for i, k := range phaseKeys(other.Phases) {
		byKey[k] = &other.Phases[i]
	}
	var out []Ratio
	for i, k := range phaseKeys(base.Phases) {
		bp, op := &base.Phases[i], byKey[k]
		if op == nil {
			continue
		}
		for _, m := range metrics {
			b, okb := m.value(bp)
			o, oko := m.value(op)
			if !okb || !oko || b == 0 {
				continue
			}
			out = append(out, Ratio{
				Phase: k, Metric: m.name,
				Base: b, Other: o, Ratio: o / b,
				LowerIsBetter: m.lower,
			})
		}
	}
	return out
}
