package loadgen

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/pushwire/pushwire/results"
)

// Thresholds of the saturation verdict.
const (
	// satAchieved is the share of the offered rate a phase must reach.
	satAchieved = 0.95
	// satTrailMin and satTrailShare bound how long after the last send the last delivery may
	// come: max(satTrailMin seconds, satTrailShare of the sending window).
	satTrailMin   = 1.0
	satTrailShare = 0.10
	// satGrowth and satGrowthMinMS: latency grew when the median per-second p50 of the last third
	// of the delivering seconds is over satGrowth times that of the first third, and over
	// satGrowthMinMS milliseconds.
	satGrowth      = 2.0
	satGrowthMinMS = 10.0
)

// sendTimes is when a phase's sending ended and its last delivery came, in seconds since the
// phase start; 0 when not known.
type sendTimes struct {
	SendEnd  float64
	LastRecv float64
}

// phaseKind is how the saturation verdict treats a phase, from its name (a capacity step's
// name is "<workload>@<rate>") or its workload.
func phaseKind(p *results.Phase) string {
	if p.Workload != "" {
		return p.Workload
	}
	k, _, _ := strings.Cut(p.Name, "@")
	return k
}

// saturation is the verdict on phase p, whose other figures (Offered, Achieved, Duration,
// Series) are set: the reasons it is saturated, none when it is not.
//
//   - The rate: Offered > 0 and Achieved under 95% of it ("sent N/s of the M/s offered"). The
//     ramp and connect steps compare the connect rate reached (Achieved, else ConnectRate). A
//     phase whose Achieved is not measured (0) is not judged on its rate.
//   - The drain: the last delivery came more than max(1 s, 10% of the sending window) after
//     the last send ("deliveries trailed the sends by X s"). The last delivery is t.LastRecv,
//     else the end of the phase (Duration).
//   - The latency: over the seconds with deliveries, the median of the per-second p50 in the
//     last third is more than twice that of the first third and more than 10 ms ("latency grew
//     from a ms to b ms"). At least three seconds with deliveries are needed; a last, partial
//     sample under half a second does not count as one.
//
// The ramp and connect steps are judged on their rate only; the idle phase never.
func saturation(p *results.Phase, t sendTimes) []string {
	kind := phaseKind(p)
	if kind == results.PhaseIdle {
		return nil
	}
	var out []string
	achieved := p.Achieved
	connects := kind == results.PhaseRamp || kind == results.WorkloadConnect
	if connects && achieved == 0 {
		achieved = p.ConnectRate
	}
	if p.Offered > 0 && achieved > 0 && achieved < satAchieved*p.Offered {
		out = append(out, fmt.Sprintf("sent %s/s of the %s/s offered", rateStr(achieved), rateStr(p.Offered)))
	}
	if connects {
		return out
	}
	if t.SendEnd > 0 {
		last := t.LastRecv
		if last <= 0 {
			last = p.Duration
		}
		trail := last - t.SendEnd
		if trail > max(satTrailMin, satTrailShare*t.SendEnd) {
			out = append(out, fmt.Sprintf("deliveries trailed the sends by %.1f s", trail))
		}
	}
	if a, b, ok := latencyGrowth(p.Series); ok && b > satGrowth*a && b > satGrowthMinMS {
		out = append(out, fmt.Sprintf("latency grew from %s ms to %s ms", msStr(a), msStr(b)))
	}
	return out
}

// satMinSample is the shortest sample the latency verdict counts as a second (seconds): the
// last, partial one of a phase is often a sliver holding its few slowest deliveries.
const satMinSample = 0.5

// latencyGrowth returns the median per-second p50 of the first and the last third of the
// seconds with deliveries (ok false with fewer than three such seconds). A sample covering
// less than satMinSample is not a second.
func latencyGrowth(series []results.Sample) (first, last float64, ok bool) {
	var p50 []float64
	prev := 0.0
	for _, s := range series {
		span := s.T - prev
		prev = s.T
		if s.Delivered > 0 && s.P50 > 0 && span >= satMinSample {
			p50 = append(p50, s.P50)
		}
	}
	k := len(p50) / 3
	if k == 0 {
		return 0, 0, false
	}
	return median(p50[:k]), median(p50[len(p50)-k:]), true
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// rateStr prints a rate: whole above 100, else with one decimal.
func rateStr(r float64) string {
	if r >= 100 {
		return fmt.Sprintf("%.0f", math.Round(r))
	}
	return fmt.Sprintf("%.1f", r)
}

// msStr prints milliseconds with up to one decimal.
func msStr(ms float64) string {
	if ms >= 100 {
		return fmt.Sprintf("%.0f", ms)
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1f", ms), ".0")
}
