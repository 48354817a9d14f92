package results

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// DefaultP99Limit is the p99 latency, in milliseconds, a capacity step must stay under when no
// other limit is given.
const DefaultP99Limit = 50.0

// DefaultBroadcastP99Limit is the broadcast workload's own default p99 limit, in milliseconds.
// One message to every connection is as many writes as there are connections: at the raw write
// floor of 10–15 µs a write, the last of 10,000 connections gets it 100–150 ms after the first,
// so no engine (nor the floor) could hold a broadcast step at DefaultP99Limit.
const DefaultBroadcastP99Limit = 500.0

// LimitFor returns the p99 limit, in milliseconds, the steps of workload were held to: its own
// in Limits, else P99Limit; DefaultP99Limit when c is nil or records no limit.
func (c *Capacity) LimitFor(workload string) float64 {
	if c == nil {
		return DefaultP99Limit
	}
	if l, ok := c.Limits[workload]; ok && l > 0 {
		return l
	}
	if c.P99Limit > 0 {
		return c.P99Limit
	}
	return DefaultP99Limit
}

// LimitsText states c's limits for the workloads given (those of c's ceilings when none are):
// "p99 limit 50.0 ms", followed by each workload held to another limit ("; broadcast 500 ms"),
// in the order of Workloads.
func (c *Capacity) LimitsText(workloads ...string) string {
	def := DefaultP99Limit
	if c != nil && c.P99Limit > 0 {
		def = c.P99Limit
	}
	if len(workloads) == 0 && c != nil {
		for _, x := range c.Ceilings {
			workloads = append(workloads, x.Workload)
		}
	}
	workloads = slices.Clone(workloads)
	slices.SortStableFunc(workloads, func(a, b string) int { return workloadRank(a) - workloadRank(b) })
	s := "p99 limit " + human(def) + " ms"
	for i, w := range workloads {
		if i > 0 && workloads[i-1] == w {
			continue
		}
		if l := c.LimitFor(w); l != def {
			s += "; " + w + " " + human(l) + " ms"
		}
	}
	return s
}

// capacityLimits is the limits r's steps were held to: r.Capacity's, or, in a result without
// it, those its Config recorded (p99_limit_ms, broadcast_p99_limit_ms), else the defaults of a
// search that had a single limit (DefaultP99Limit for every workload).
func capacityLimits(r *Result) *Capacity {
	if r.Capacity != nil {
		return r.Capacity
	}
	c := &Capacity{P99Limit: DefaultP99Limit}
	if v, ok := r.Config["p99_limit_ms"].(float64); ok && v > 0 {
		c.P99Limit = v
	}
	if v, ok := r.Config["broadcast_p99_limit_ms"].(float64); ok && v > 0 && v != c.P99Limit {
		c.Limits = map[string]float64{WorkloadBroadcast: v}
	}
	return c
}

// Workloads is the order of the capacity workloads in tables: connect, upstream, push, batch,
// group, broadcast.
var Workloads = []string{WorkloadConnect, WorkloadUpstream, WorkloadPush, WorkloadBatch, WorkloadGroup, WorkloadBroadcast}

// WorkloadUnit is what one operation of workload w is, as Ceiling.Unit counts it per second:
// connects, requests, pushes (unicast push API calls), calls (batch push API calls) or messages
// (group and broadcast). Another workload's unit is "ops".
func WorkloadUnit(w string) string {
	switch w {
	case WorkloadConnect:
		return "connects"
	case WorkloadUpstream:
		return "requests"
	case WorkloadPush:
		return "pushes"
	case WorkloadBatch:
		return "calls"
	case WorkloadGroup, WorkloadBroadcast:
		return "messages"
	}
	return "ops"
}

// fanoutWorkload reports whether one operation of w delivers to many connections: its
// deliveries/s are shown next to its rate.
func fanoutWorkload(w string) bool {
	return w == WorkloadGroup || w == WorkloadBroadcast || w == WorkloadBatch
}

// StepFailures returns why capacity step p did not hold at a p99 limit of p99Limit milliseconds,
// most telling first, or nothing when it held: saturated (its reasons, marked SAT), nothing
// measured, messages (or logins) missing, operations failed, online targets reported offline,
// unexpected disconnects, p99 over the limit, errors counted.
func StepFailures(p *Phase, p99Limit float64) []string {
	var why []string
	if p.Saturated {
		s := "SAT"
		if len(p.Saturation) > 0 {
			s += " " + strings.Join(p.Saturation, "; ")
		}
		why = append(why, s)
	}
	if p.Missing > 0 {
		what := "messages"
		if p.Workload == WorkloadConnect {
			what = "logins"
		}
		why = append(why, fmt.Sprintf("%d of %d %s missing", p.Missing, p.Sent, what))
	}
	if p.Failed > 0 {
		why = append(why, fmt.Sprintf("%d of %d failed", p.Failed, p.Sent))
	}
	if p.OnlineOffline > 0 {
		why = append(why, fmt.Sprintf("%d online targets reported offline", p.OnlineOffline))
	}
	if p.Disconnects > 0 {
		why = append(why, fmt.Sprintf("%d unexpected disconnects", p.Disconnects))
	}
	switch {
	case p.Latency == nil || p.Latency.Count == 0:
		why = append(why, "no operation measured")
	case p.Latency.P99 > p99Limit:
		why = append(why, fmt.Sprintf("p99 %s ms over the %s ms limit", human(p.Latency.P99), human(p99Limit)))
	}
	if len(p.Errors) > 0 {
		keys := slices.Sorted(maps.Keys(p.Errors))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = k + "=" + strconv.FormatInt(p.Errors[k], 10)
		}
		why = append(why, "errors: "+strings.Join(parts, ", "))
	}
	return why
}

// Ceilings computes one Ceiling per workload from r's capacity steps (the phases with a
// Workload), in the order the workloads first ran: the highest offered rate of a step that held
// at the workload's p99 limit (limits.LimitFor; a nil limits: DefaultP99Limit for every
// workload; see StepFailures), 0 when none did, with its deliveries/s and p99; FailedAt is the
// lowest offered rate above it that failed and Why that step's first reason. Only the limits
// of limits are read (P99Limit and Limits), not its Ceilings.
func Ceilings(r *Result, limits *Capacity) []Ceiling {
	var order []string
	steps := map[string][]*Phase{}
	for i := range r.Phases {
		p := &r.Phases[i]
		if p.Workload == "" {
			continue
		}
		if _, ok := steps[p.Workload]; !ok {
			order = append(order, p.Workload)
		}
		steps[p.Workload] = append(steps[p.Workload], p)
	}
	out := make([]Ceiling, 0, len(order))
	for _, w := range order {
		p99Limit := limits.LimitFor(w)
		c := Ceiling{Workload: w, Unit: WorkloadUnit(w), Steps: len(steps[w]), P99Limit: p99Limit}
		var best *Phase
		for _, p := range steps[w] {
			if len(StepFailures(p, p99Limit)) == 0 && (best == nil || p.Offered > best.Offered) {
				best = p
			}
		}
		if best != nil {
			c.Rate, c.Deliveries, c.P99 = best.Offered, best.Deliveries, best.Latency.P99
		}
		var fail *Phase
		var why []string
		for _, p := range steps[w] {
			if p.Offered <= c.Rate || fail != nil && p.Offered >= fail.Offered {
				continue
			}
			if f := StepFailures(p, p99Limit); len(f) > 0 {
				fail, why = p, f
			}
		}
		if fail != nil {
			c.FailedAt, c.Why = fail.Offered, why[0]
		}
		out = append(out, c)
	}
	return out
}

// capEngine is one column of the ceiling table: an engine's runs and their ceilings.
type capEngine struct {
	name  string
	ceils []map[string]Ceiling
}

// rates are the engine's ceilings of workload w over its runs that searched it.
func (e *capEngine) rates(w string, f func(Ceiling) float64) []float64 {
	var vs []float64
	for _, m := range e.ceils {
		if c, ok := m[w]; ok {
			vs = append(vs, f(c))
		}
	}
	return vs
}

// CeilingTable writes the ceilings of runs (capacity search results) as a table: one row per
// workload, one column per engine (in the order the engines first appear; several runs of an
// engine show the median with the min–max), each cell the ceiling rate per second, with the
// deliveries/s for fan-out workloads (batch, group, broadcast) and the p99 at the ceiling; "—"
// where an engine did not search a workload (the floor has no upstream). Ratio columns follow:
// every other engine's ceiling over base's, and every engine's over the floor's when a run of the
// floor is present. Below, where each search stopped: the lowest failing rate above the ceiling
// and why, a saturated step marked SAT. The header states every limit the steps were held to
// ("p99 limit 50.0 ms; broadcast 500 ms"), the engines after each when the runs differ. A run
// without Capacity has its ceilings computed from its steps at the limits its Config recorded,
// else DefaultP99Limit.
func CeilingTable(w io.Writer, runs []*Result, base string) error {
	if len(runs) == 0 {
		return fmt.Errorf("results: ceiling table: no runs")
	}
	var engs []*capEngine
	var workloads []string
	var limits []string                // each distinct statement of a run's limits
	limitEngs := map[string][]string{} // the engines whose runs were held to it
	for _, r := range runs {
		lim := capacityLimits(r)
		ceils := lim.Ceilings
		if r.Capacity == nil {
			ceils = Ceilings(r, lim)
		}
		if len(ceils) == 0 {
			return fmt.Errorf("results: ceiling table: run %s (%s) has no capacity steps", r.ID, r.Engine)
		}
		i := slices.IndexFunc(engs, func(e *capEngine) bool { return e.name == r.Engine })
		if i < 0 {
			engs = append(engs, &capEngine{name: r.Engine})
			i = len(engs) - 1
		}
		m := map[string]Ceiling{}
		for _, c := range ceils {
			m[c.Workload] = c
			if !slices.Contains(workloads, c.Workload) {
				workloads = append(workloads, c.Workload)
			}
		}
		engs[i].ceils = append(engs[i].ceils, m)
		var searched []string
		for _, c := range ceils {
			searched = append(searched, c.Workload)
		}
		l := lim.LimitsText(searched...)
		if !slices.Contains(limits, l) {
			limits = append(limits, l)
		}
		if !slices.Contains(limitEngs[l], r.Engine) {
			limitEngs[l] = append(limitEngs[l], r.Engine)
		}
	}
	slices.SortStableFunc(workloads, func(a, b string) int { return workloadRank(a) - workloadRank(b) })
	baseEng := engs[0]
	if i := slices.IndexFunc(engs, func(e *capEngine) bool { return e.name == base }); i >= 0 {
		baseEng = engs[i]
	}
	var floor *capEngine
	if i := slices.IndexFunc(engs, func(e *capEngine) bool { return e.name == FloorEngine }); i >= 0 {
		floor = engs[i]
	}

	if len(limits) > 1 {
		for i, l := range limits {
			limits[i] = l + " (" + strings.Join(limitEngs[l], ", ") + ")"
		}
	}
	if _, err := fmt.Fprintf(w, "capacity ceilings: the highest offered rate per second that held (offered rate reached, latency\nnot growing, nothing missing, p99 under the workload's limit); dl/s: deliveries per second there\n%s\n\n",
		strings.Join(limits, "\n")); err != nil {
		return err
	}
	var t table
	head := []string{"workload", "unit"}
	for _, e := range engs {
		head = append(head, e.name)
	}
	var ratioEngs, floorEngs []*capEngine
	for _, e := range engs {
		if e != baseEng {
			ratioEngs = append(ratioEngs, e)
			head = append(head, e.name+"/"+baseEng.name)
		}
	}
	if floor != nil && floor != baseEng {
		for _, e := range engs {
			if e != floor {
				floorEngs = append(floorEngs, e)
				head = append(head, e.name+"/"+FloorEngine)
			}
		}
	}
	t.row(head...)
	rate := func(c Ceiling) float64 { return c.Rate }
	for _, wl := range workloads {
		row := []string{wl, WorkloadUnit(wl) + "/s"}
		for _, e := range engs {
			row = append(row, ceilingCell(e, wl))
		}
		ratio := func(e, of *capEngine) string {
			a, b := statsOf(e.rates(wl, rate)), statsOf(of.rates(wl, rate))
			if a.n == 0 || b.n == 0 || b.median == 0 {
				return "—"
			}
			return strconv.FormatFloat(a.median/b.median, 'f', 2, 64) + "×"
		}
		for _, e := range ratioEngs {
			row = append(row, ratio(e, baseEng))
		}
		for _, e := range floorEngs {
			row = append(row, ratio(e, floor))
		}
		t.row(row...)
	}
	if err := t.write(w); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "\nwhere each search stopped (the lowest failing rate above the ceiling, and why; SAT: saturated)\n"); err != nil {
		return err
	}
	var stops table
	for _, wl := range workloads {
		for _, e := range engs {
			for k, m := range e.ceils {
				c, ok := m[wl]
				if !ok {
					continue
				}
				name := e.name
				if len(e.ceils) > 1 {
					name += " #" + strconv.Itoa(k+1)
				}
				stop := "none failed up to the search's top (" + strconv.Itoa(c.Steps) + " steps)"
				if c.FailedAt > 0 {
					stop = fmt.Sprintf("%s/s: %s (%d steps)", human(c.FailedAt), c.Why, c.Steps)
				}
				stops.row(wl, name, stop)
			}
		}
	}
	return writeLeft(w, stops)
}

// ceilingCell is engine e's ceiling of workload wl: "rate (dl/s) p99", the median over its runs
// with the min–max, "0" when no step held, "—" when not searched.
func ceilingCell(e *capEngine, wl string) string {
	rs := statsOf(e.rates(wl, func(c Ceiling) float64 { return c.Rate }))
	if rs.n == 0 {
		return "—"
	}
	cell := formatStats(rs, kindRate)
	if rs.median == 0 {
		return cell
	}
	if fanoutWorkload(wl) {
		ds := statsOf(e.rates(wl, func(c Ceiling) float64 { return c.Deliveries }))
		cell += " = " + formatStats(ds, kindRate) + " dl/s"
	}
	ps := statsOf(e.rates(wl, func(c Ceiling) float64 { return c.P99 }))
	return cell + " p99 " + human(ps.median) + " ms"
}

// workloadRank orders workloads as Workloads does, others after them.
func workloadRank(w string) int {
	if i := slices.Index(Workloads, w); i >= 0 {
		return i
	}
	return math.MaxInt16
}

// writeLeft writes t's rows aligned left, two spaces apart.
func writeLeft(w io.Writer, t table) error {
	widths := map[int]int{}
	for _, r := range t.rows {
		for i, c := range r {
			widths[i] = max(widths[i], len([]rune(c)))
		}
	}
	for _, r := range t.rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-len([]rune(c))+2))
			}
		}
		if _, err := fmt.Fprintln(w, b.String()); err != nil {
			return err
		}
	}
	return nil
}
