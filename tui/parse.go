package tui

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Families is one parsed /metrics page, by metric family name.
type Families map[string]*dto.MetricFamily

// ParseMetrics parses the Prometheus text exposition format.
func ParseMetrics(r io.Reader) (Families, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("tui: parsing metrics: %w", err)
	}
	return fams, nil
}

// matches reports whether m carries every name=value pair of kv.
func matches(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		found := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == kv[i] {
				found = lp.GetValue() == kv[i+1]
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Untyped != nil:
		return m.GetUntyped().GetValue()
	}
	return math.NaN()
}

// Value returns the sum of the series of family name that carry the label pairs kv
// ("name", "value", …), and whether there was any.
func (f Families) Value(name string, kv ...string) (float64, bool) {
	fam, ok := f[name]
	if !ok {
		return 0, false
	}
	sum, any := 0.0, false
	for _, m := range fam.GetMetric() {
		if matches(m, kv) {
			sum += metricValue(m)
			any = true
		}
	}
	return sum, any
}

// Get is Value without the found flag: 0 when absent.
func (f Families) Get(name string, kv ...string) float64 {
	v, _ := f.Value(name, kv...)
	return v
}

// ByLabel returns family name's values summed by the value of label (nil when absent).
func (f Families) ByLabel(name, label string) map[string]float64 {
	fam, ok := f[name]
	if !ok {
		return nil
	}
	out := map[string]float64{}
	for _, m := range fam.GetMetric() {
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				out[lp.GetValue()] += metricValue(m)
			}
		}
	}
	return out
}

// Label returns the value of label on the first series of family name ("" when absent).
func (f Families) Label(name, label string) string {
	fam, ok := f[name]
	if !ok || len(fam.GetMetric()) == 0 {
		return ""
	}
	for _, lp := range fam.GetMetric()[0].GetLabel() {
		if lp.GetName() == label {
			return lp.GetValue()
		}
	}
	return ""
}

// SummaryQuantile returns quantile q of the summary family name (its first series), if present.
func (f Families) SummaryQuantile(name string, q float64) (float64, bool) {
	fam, ok := f[name]
	if !ok || fam.GetType() != dto.MetricType_SUMMARY || len(fam.GetMetric()) == 0 {
		return 0, false
	}
	for _, sq := range fam.GetMetric()[0].GetSummary().GetQuantile() {
		if sq.GetQuantile() == q {
			return sq.GetValue(), true
		}
	}
	return 0, false
}

// Histogram is a cumulative histogram: Counts[i] observations were ≤ Bounds[i]; the last bound
// may be +Inf.
type Histogram struct {
	Bounds []float64 `json:"bounds"`
	Counts []float64 `json:"counts"`
}

// Histogram returns the histogram family name (summed over its series), if present.
func (f Families) Histogram(name string) (Histogram, bool) {
	fam, ok := f[name]
	if !ok || fam.GetType() != dto.MetricType_HISTOGRAM {
		return Histogram{}, false
	}
	sums := map[float64]float64{}
	for _, m := range fam.GetMetric() {
		h := m.GetHistogram()
		for _, b := range h.GetBucket() {
			sums[b.GetUpperBound()] += float64(b.GetCumulativeCount())
		}
		// The text format always has a +Inf bucket; keep the total in case it was dropped.
		if _, ok := sums[math.Inf(1)]; !ok {
			sums[math.Inf(1)] = float64(h.GetSampleCount())
		}
	}
	var h Histogram
	for b := range sums {
		h.Bounds = append(h.Bounds, b)
	}
	sort.Float64s(h.Bounds)
	for _, b := range h.Bounds {
		h.Counts = append(h.Counts, sums[b])
	}
	return h, len(h.Bounds) > 0
}

// Sub returns h minus an earlier reading of the same histogram (h when the bounds differ or a
// count went down, which means the process restarted).
func (h Histogram) Sub(earlier Histogram) Histogram {
	if len(h.Bounds) != len(earlier.Bounds) {
		return h
	}
	out := Histogram{Bounds: h.Bounds, Counts: make([]float64, len(h.Counts))}
	for i := range h.Counts {
		if h.Bounds[i] != earlier.Bounds[i] || h.Counts[i] < earlier.Counts[i] {
			return h
		}
		out.Counts[i] = h.Counts[i] - earlier.Counts[i]
	}
	return out
}

// Total is the number of observations.
func (h Histogram) Total() float64 {
	if len(h.Counts) == 0 {
		return 0
	}
	return h.Counts[len(h.Counts)-1]
}

// Quantile estimates quantile q (0..1) by linear interpolation inside the bucket that holds it,
// as Prometheus' histogram_quantile does; a quantile in the open top bucket reports the highest
// finite bound. It returns NaN for an empty histogram.
func (h Histogram) Quantile(q float64) float64 {
	total := h.Total()
	if total == 0 || math.IsNaN(q) {
		return math.NaN()
	}
	rank := q * total
	for i, c := range h.Counts {
		if c < rank {
			continue
		}
		upper := h.Bounds[i]
		lower, below := 0.0, 0.0
		if i > 0 {
			lower, below = h.Bounds[i-1], h.Counts[i-1]
		}
		if math.IsInf(upper, 1) {
			return lower
		}
		if c == below {
			return upper
		}
		return lower + (upper-lower)*(rank-below)/(c-below)
	}
	return h.Bounds[len(h.Bounds)-1]
}

// shortErr is the gist of a scrape error for a table cell or an event.
func shortErr(err error) string {
	if err == nil {
		return ""
	}
	s := err.Error()
	switch {
	case strings.Contains(s, "connection refused"):
		return "connection refused"
	case strings.Contains(s, "Client.Timeout"), strings.Contains(s, "deadline exceeded"), strings.Contains(s, "i/o timeout"):
		return "timeout"
	case strings.Contains(s, "connection reset"):
		return "connection reset"
	case strings.Contains(s, "no such host"):
		return "no such host"
	case strings.Contains(s, "EOF"):
		return "EOF"
	}
	if len(s) > 60 {
		s = s[:60] + "…"
	}
	return s
}
