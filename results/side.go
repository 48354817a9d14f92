package results

import (
	"cmp"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// FloorEngine is the engine name of the floor: the raw-epoll server every engine is compared with.
const FloorEngine = "floor"

// Spread flags of SideBySide: a figure measured in several rounds whose spread (max−min)/median
// is above SpreadNoisy is marked "~", above SpreadUnstable "!".
const (
	SpreadNoisy    = 0.10
	SpreadUnstable = 0.25
)

// figKind says how a figure is formatted.
type figKind int

const (
	kindCount figKind = iota // exact below ten million: connections, goroutines, missing
	kindRate                 // shortened with k, M: per second, allocations
	kindBytes                // 1024-based units
	kindMs                   // milliseconds
	kindUs                   // microseconds
	kindPct                  // percent
	kindSec                  // seconds
)

// sideFig is one figure of a phase in the side-by-side table.
type sideFig struct {
	label string
	kind  figKind
	lower bool // lower is better
	// floor: the figure is also shown as a ratio to the floor's (in the phases floorPhases names;
	// every phase when nil).
	floor       bool
	floorPhases []string
	value       func(p *Phase) (float64, bool)
}

// sideRow is one line of the table: a figure of a phase.
type sideRow struct {
	phase string
	fig   sideFig
}

// fanoutPhases deliver one message to many connections: their deliveries/s and last delivery
// are compared with the floor's.
var fanoutPhases = []string{PhaseGroup, "group-all", PhaseBroadcast}

// lastDeliveryPhases deliver one message to every connection (or a group of all of them): the
// max latency is the last delivery.
var lastDeliveryPhases = []string{"group-all", PhaseBroadcast}

func latencyOf(l *Latency, f func(*Latency) float64) (float64, bool) {
	if l == nil || l.Count == 0 {
		return 0, false
	}
	return f(l), true
}

func costOf(p *Phase, f func(*Cost) float64) (float64, bool) {
	if p.Cost == nil || p.Cost.Ops == 0 {
		return 0, false
	}
	return f(p.Cost), true
}

// Figures of every phase, by what they show.
var (
	figConns = sideFig{label: "connections", kind: kindCount, value: func(p *Phase) (float64, bool) {
		return float64(p.Conns), p.Conns > 0 || p.Target > 0
	}}
	figConnectRate = sideFig{label: "connects/s", kind: kindRate, floor: true, value: func(p *Phase) (float64, bool) {
		return p.ConnectRate, p.ConnectRate > 0
	}}
	figRSSPerConn = sideFig{label: "RSS/conn", kind: kindBytes, lower: true, floor: true, value: func(p *Phase) (float64, bool) {
		return p.Gateway.RSSPerConn, p.Gateway.RSSBytes > 0
	}}
	figHeapPerConn = sideFig{label: "heap/conn", kind: kindBytes, lower: true, floor: true, value: func(p *Phase) (float64, bool) {
		return p.Gateway.HeapPerConn, p.Gateway.HeapBytes > 0
	}}
	figGoroutines = sideFig{label: "goroutines", kind: kindCount, lower: true, value: func(p *Phase) (float64, bool) {
		return float64(p.Gateway.Goroutines), p.Gateway.Goroutines > 0
	}}
	figAchieved = sideFig{label: "sent/s (achieved)", kind: kindRate, value: func(p *Phase) (float64, bool) {
		return p.Achieved, p.Achieved > 0
	}}
	figDeliveries = sideFig{label: "deliveries/s", kind: kindRate, floor: true, floorPhases: fanoutPhases, value: func(p *Phase) (float64, bool) {
		return p.Deliveries, p.Deliveries > 0
	}}
	figP50 = sideFig{label: "latency p50 (ms)", kind: kindMs, lower: true, value: func(p *Phase) (float64, bool) {
		return latencyOf(p.Latency, func(l *Latency) float64 { return l.P50 })
	}}
	figP99 = sideFig{label: "latency p99 (ms)", kind: kindMs, lower: true, value: func(p *Phase) (float64, bool) {
		return latencyOf(p.Latency, func(l *Latency) float64 { return l.P99 })
	}}
	figP99Uncorrected = sideFig{label: "p99 uncorrected (ms)", kind: kindMs, lower: true, value: func(p *Phase) (float64, bool) {
		return latencyOf(p.LatencyUncorrected, func(l *Latency) float64 { return l.P99 })
	}}
	figLastDelivery = sideFig{label: "last delivery (ms)", kind: kindMs, lower: true, floor: true, floorPhases: lastDeliveryPhases, value: func(p *Phase) (float64, bool) {
		return latencyOf(p.Latency, func(l *Latency) float64 { return l.Max })
	}}
	figGCPause = sideFig{label: "GC pause p99 (ms)", kind: kindMs, lower: true, value: func(p *Phase) (float64, bool) {
		return p.Gateway.GCPauseP99 * 1e3, p.Gateway.GCCount > 0
	}}
	figGCCPU = sideFig{label: "GC CPU %", kind: kindPct, lower: true, value: func(p *Phase) (float64, bool) {
		return p.Gateway.GCCPUShare * 100, p.Gateway.CPUSeconds > 0
	}}
	figCPUPerOp = sideFig{label: "gateway CPU µs/op", kind: kindUs, lower: true, value: func(p *Phase) (float64, bool) {
		return costOf(p, func(c *Cost) float64 { return c.CPUPerOp })
	}}
	figAllocsPerOp = sideFig{label: "allocs/op", kind: kindRate, lower: true, value: func(p *Phase) (float64, bool) {
		return costOf(p, func(c *Cost) float64 { return c.AllocsPerOp })
	}}
	figCPUPerDelivery = sideFig{label: "gateway CPU µs/delivery", kind: kindUs, lower: true, value: func(p *Phase) (float64, bool) {
		if p.Cost == nil || p.Cost.Deliveries == 0 {
			return 0, false
		}
		return p.Cost.CPUPerDelivery, true
	}}
	figLoadgenCPU = sideFig{label: "loadgen CPU (s)", kind: kindSec, lower: true, value: func(p *Phase) (float64, bool) {
		if p.Loadgen == nil || p.Loadgen.Processes == 0 {
			return 0, false
		}
		return p.Loadgen.CPUSeconds, true
	}}
	figLoadgenRSS = sideFig{label: "loadgen RSS", kind: kindBytes, lower: true, value: func(p *Phase) (float64, bool) {
		if p.Loadgen == nil || p.Loadgen.Processes == 0 {
			return 0, false
		}
		return float64(p.Loadgen.RSSBytes), true
	}}
	figMissing = sideFig{label: "missing", kind: kindCount, lower: true, value: func(p *Phase) (float64, bool) {
		return float64(p.Missing), p.Sent > 0
	}}
)

// sideRows are the figures the engine comparison shows, in order: connecting and its cost, memory
// at rest from the idle phase, then throughput, latency, cost and completeness of every delivery
// phase.
func sideRows(phases []string) []sideRow {
	var rows []sideRow
	add := func(ph string, figs ...sideFig) {
		for _, f := range figs {
			rows = append(rows, sideRow{ph, f})
		}
	}
	add(PhaseRamp, figConns, figConnectRate, figCPUPerOp, figAllocsPerOp, figLoadgenCPU, figLoadgenRSS)
	add(PhaseIdle, figRSSPerConn, figHeapPerConn, figGoroutines, figGCPause)
	for _, ph := range phases {
		if ph == PhaseRamp || ph == PhaseIdle {
			continue
		}
		add(ph, figAchieved, figDeliveries, figP50, figP99, figP99Uncorrected)
		if slices.Contains(lastDeliveryPhases, ph) {
			add(ph, figLastDelivery)
		}
		add(ph, figGCPause, figGCCPU, figCPUPerOp, figAllocsPerOp, figCPUPerDelivery, figLoadgenCPU, figLoadgenRSS, figMissing)
	}
	return rows
}

// sideEngine is one column: every run of one engine, in the order given.
type sideEngine struct {
	name string
	runs []*Result
}

// find returns the first phase of r named name, or nil.
func find(r *Result, name string) *Phase {
	for i := range r.Phases {
		if r.Phases[i].Name == name {
			return &r.Phases[i]
		}
	}
	return nil
}

// values returns the figure in every run of e that measured it.
func (e *sideEngine) values(row sideRow) []float64 {
	var vs []float64
	for _, r := range e.runs {
		if p := find(r, row.phase); p != nil {
			if v, ok := row.fig.value(p); ok {
				vs = append(vs, v)
			}
		}
	}
	return vs
}

// stats are a figure's median, min and max over the rounds.
type stats struct {
	n                int
	median, min, max float64
}

func statsOf(vs []float64) stats {
	if len(vs) == 0 {
		return stats{}
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	m := s[len(s)/2]
	if len(s)%2 == 0 {
		m = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return stats{n: len(s), median: m, min: s[0], max: s[len(s)-1]}
}

// spread is (max−min)/median; 0 for one value, +Inf for a zero median with a range.
func (s stats) spread() float64 {
	if s.n < 2 || s.max == s.min {
		return 0
	}
	if s.median == 0 {
		return math.Inf(1)
	}
	return (s.max - s.min) / math.Abs(s.median)
}

// marker is "!" for a spread above SpreadUnstable, "~" above SpreadNoisy, else "".
func (s stats) marker() string {
	switch sp := s.spread(); {
	case sp > SpreadUnstable:
		return "!"
	case sp > SpreadNoisy:
		return "~"
	}
	return ""
}

// SideBySide writes the comparison of runs of several engines, several rounds each (a sitting):
// one column per engine, in the order the engines first appear in runs. Each figure is the
// median over the engine's runs with the min–max in parentheses ("2.05 KB (1.98–2.31)"), marked
// "~" when its spread (max−min)/median is over 10% and "!" over 25%. A "saturated" row names, per
// phase, how many of an engine's runs saturated it (SAT n/m), and the reasons are listed under
// the table. "—" marks a figure an engine did not measure (the floor has no upstream phase).
//
// Two ratio tables follow: every engine's median over base's (the engine base; the first engine
// when no run is of it), and, when a run of the floor is present, every engine's median over the
// floor's for memory per idle connection, connect rate, fan-out deliveries/s and last-delivery
// latency.
func SideBySide(w io.Writer, runs []*Result, base string) error {
	if len(runs) == 0 {
		return fmt.Errorf("results: nothing to compare")
	}
	var engs []*sideEngine
	for _, r := range runs {
		i := slices.IndexFunc(engs, func(e *sideEngine) bool { return e.name == r.Engine })
		if i < 0 {
			engs = append(engs, &sideEngine{name: r.Engine})
			i = len(engs) - 1
		}
		engs[i].runs = append(engs[i].runs, r)
	}
	bi := max(slices.IndexFunc(engs, func(e *sideEngine) bool { return e.name == base }), 0)
	fi := slices.IndexFunc(engs, func(e *sideEngine) bool { return e.name == FloorEngine })

	var phases []string
	for _, r := range runs {
		for _, p := range r.Phases {
			if !slices.Contains(phases, p.Name) {
				phases = append(phases, p.Name)
			}
		}
	}
	rows := sideRows(phases)
	// medians[row][engine], for the ratio tables; ok when measured.
	type med struct {
		v  float64
		ok bool
	}
	medians := make([][]med, len(rows))

	var t table
	head := []string{"phase", "metric"}
	for _, e := range engs {
		head = append(head, e.name)
	}
	t.row(head...)
	runsRow := []string{"", "runs"}
	for _, e := range engs {
		runsRow = append(runsRow, strconv.Itoa(len(e.runs)))
	}
	t.row(runsRow...)
	var reasons []string
	lastPhase := ""
	for ri, row := range rows {
		cells := []string{row.phase, row.fig.label}
		any := false
		medians[ri] = make([]med, len(engs))
		for ei, e := range engs {
			vs := e.values(row)
			if len(vs) == 0 {
				cells = append(cells, "—")
				continue
			}
			any = true
			s := statsOf(vs)
			medians[ri][ei] = med{s.median, true}
			cells = append(cells, formatStats(s, row.fig.kind))
		}
		if !any {
			continue
		}
		if row.phase != lastPhase {
			lastPhase = row.phase
			if sat, why := saturatedRow(engs, row.phase); sat != nil {
				t.row(append([]string{row.phase, "saturated"}, sat...)...)
				reasons = append(reasons, why...)
			}
		}
		t.row(cells...)
	}
	if err := t.write(w); err != nil {
		return err
	}
	legend := fmt.Sprintf("\neach figure is the median of the runs, (min–max) with several; ~ marks a spread (max−min)/median over %.0f%%, ! over %.0f%%; — not measured\n",
		SpreadNoisy*100, SpreadUnstable*100)
	if _, err := io.WriteString(w, legend); err != nil {
		return err
	}
	if len(reasons) > 0 {
		if _, err := io.WriteString(w, "SAT n/m: the phase saturated in n of the engine's m runs (it did not reach its offered rate or its latency grew):\n  "+strings.Join(reasons, "\n  ")+"\n"); err != nil {
			return err
		}
	}

	ratioTable := func(title string, over int, show func(ri int) bool) error {
		var t table
		head := []string{"phase", "metric"}
		for ei, e := range engs {
			if ei != over {
				head = append(head, e.name+"/"+engs[over].name)
			}
		}
		t.row(head...)
		for ri, row := range rows {
			if !show(ri) || !medians[ri][over].ok || medians[ri][over].v == 0 {
				continue
			}
			cells := []string{row.phase, row.fig.label}
			for ei := range engs {
				if ei == over {
					continue
				}
				if m := medians[ri][ei]; m.ok {
					cells = append(cells, fmt.Sprintf("%.2fx", m.v/medians[ri][over].v))
				} else {
					cells = append(cells, "—")
				}
			}
			t.row(cells...)
		}
		if len(t.rows) == 1 || len(engs) == 1 {
			return nil
		}
		if _, err := io.WriteString(w, "\n"+title+"\n"); err != nil {
			return err
		}
		return t.write(w)
	}
	if err := ratioTable("ratios of the medians against "+engs[bi].name+" (for memory, latency, GC, CPU, allocations and missing lower is better):",
		bi, func(int) bool { return true }); err != nil {
		return err
	}
	if fi >= 0 {
		err := ratioTable("ratios of the medians against the floor (raw epoll, no engine library; for memory and latency lower is better):",
			fi, func(ri int) bool {
				f := rows[ri].fig
				return f.floor && (f.floorPhases == nil || slices.Contains(f.floorPhases, rows[ri].phase))
			})
		if err != nil {
			return err
		}
	}
	return nil
}

// saturatedRow returns the cells of the "saturated" row of a phase ("SAT n/m", "no", or "—"
// without the phase) and the reasons, or nil when no run saturated it.
func saturatedRow(engs []*sideEngine, phase string) (cells, reasons []string) {
	anySat := false
	for _, e := range engs {
		n, m := 0, 0
		for ri, r := range e.runs {
			p := find(r, phase)
			if p == nil {
				continue
			}
			m++
			if p.Saturated {
				n++
				anySat = true
				why := strings.Join(p.Saturation, "; ")
				if why == "" {
					why = "saturated"
				}
				reasons = append(reasons, fmt.Sprintf("%s on %s, run %d: %s", phase, e.name, ri+1, oneLine(why)))
			}
		}
		switch {
		case m == 0:
			cells = append(cells, "—")
		case n == 0:
			cells = append(cells, "no")
		default:
			cells = append(cells, fmt.Sprintf("SAT %d/%d", n, m))
		}
	}
	if !anySat {
		return nil, nil
	}
	return cells, reasons
}

// formatStats renders a figure: the median alone for one run, else "median (min–max)" with the
// spread marker; min and max in the median's unit.
func formatStats(s stats, k figKind) string {
	div, unit := scaleFor(s.median, k)
	f := func(v float64) string { return figNumber(v/div, k, div) }
	out := f(s.median)
	if s.n > 1 {
		out += " (" + f(s.min) + "–" + f(s.max) + ")" + s.marker()
	}
	if unit != "" {
		// the unit after the median only: "2.05 KB (1.98–2.31)"
		out = strings.Replace(out, " (", unit+" (", 1)
		if s.n == 1 {
			out += unit
		}
	}
	return out
}

// scaleFor returns the divisor and unit suffix for a figure of kind k whose median is v.
func scaleFor(v float64, k figKind) (float64, string) {
	v = math.Abs(v)
	switch k {
	case kindBytes:
		div, unit := 1.0, " B"
		for _, u := range []string{" KB", " MB", " GB"} {
			if v/div < 1023.5 {
				break
			}
			div, unit = div*1024, u
		}
		return div, unit
	case kindRate, kindCount:
		if k == kindCount && v < 1e7 {
			return 1, ""
		}
		div, unit := 1.0, ""
		for _, u := range []string{"k", "M", "G"} {
			if v/div < 999.5 {
				break
			}
			div, unit = div*1000, u
		}
		return div, unit
	case kindPct:
		return 1, "%"
	case kindMs, kindUs, kindSec: // the unit is in the figure's label
	}
	return 1, ""
}

// figNumber formats a figure already divided by div: whole bytes and counts as integers, three
// significant digits else.
func figNumber(v float64, k figKind, div float64) string {
	if (k == kindCount && v == math.Trunc(v) || k == kindBytes && div == 1) && math.Abs(v) < 1e7 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return human(v)
}

// table collects rows and writes them aligned right, a column per cell.
type table struct{ rows [][]string }

func (t *table) row(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var werr error // the first failed write; a tabwriter does not keep it
	for _, r := range t.rows {
		if _, err := fmt.Fprintln(tw, strings.Join(r, "\t")+"\t"); err != nil && werr == nil {
			werr = err
		}
	}
	return cmp.Or(werr, tw.Flush())
}
