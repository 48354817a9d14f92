package report

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/pushwire/pushwire/results"
)

// spreadFlag is the share of the median above which an engine's min–max spread is flagged.
const spreadFlag = 0.10

// figure is one row of a phase table: a figure of a phase, taken from every round.
type figure struct {
	label string
	// value returns the figure of p and whether p measured it.
	value func(p *results.Phase) (float64, bool)
	// format writes a value (the unit is in the label).
	format func(v float64) string
	// floor: the row shows the ratio to the floor's median (docs: api §7).
	floor bool
}

// phaseGroupAll is the load generator's phase of one group holding every connection.
const phaseGroupAll = "group-all"

// floorRatio reports whether figure label of phase name is one the floor is compared on: idle
// RSS and heap per connection, connect rate, fan-out deliveries/s, last-delivery latency.
func floorRatio(phaseName, key string) bool {
	switch key {
	case "rss_per_conn", "heap_per_conn":
		return phaseName == results.PhaseIdle
	case "connect_rate":
		return phaseName == results.PhaseRamp
	case "deliveries":
		return phaseName == results.PhaseGroup || phaseName == phaseGroupAll || phaseName == results.PhaseBroadcast
	case "latency_max":
		return phaseName == phaseGroupAll || phaseName == results.PhaseBroadcast
	}
	return false
}

// figureDef is a figure before its floor flag is set for a phase.
type figureDef struct {
	key, label string
	value      func(p *results.Phase) (float64, bool)
	format     func(v float64) string
}

func lat(f func(l *results.Latency) float64) func(p *results.Phase) (float64, bool) {
	return func(p *results.Phase) (float64, bool) {
		if p.Latency == nil || p.Latency.Count == 0 {
			return 0, false
		}
		return f(p.Latency), true
	}
}

func cost(f func(c *results.Cost) (float64, bool)) func(p *results.Phase) (float64, bool) {
	return func(p *results.Phase) (float64, bool) {
		if p.Cost == nil || p.Cost.Ops == 0 {
			return 0, false
		}
		return f(p.Cost)
	}
}

// figureDefs are every figure a phase table may show, in order; a row appears when some run
// measured it.
var figureDefs = []figureDef{
	{"conns", "connections", func(p *results.Phase) (float64, bool) { return float64(p.Conns), p.Conns > 0 || p.Target > 0 }, count},
	{"offered", "offered /s", func(p *results.Phase) (float64, bool) { return p.Offered, p.Offered > 0 }, human},
	{"achieved", "achieved /s", func(p *results.Phase) (float64, bool) { return p.Achieved, p.Achieved > 0 }, human},
	{"connect_rate", "connects /s", func(p *results.Phase) (float64, bool) { return p.ConnectRate, p.ConnectRate > 0 }, human},
	{"rss_per_conn", "RSS / conn (KB)", func(p *results.Phase) (float64, bool) {
		return p.Gateway.RSSPerConn / 1024, p.Gateway.RSSBytes > 0 && p.Name == results.PhaseIdle
	}, human},
	{"heap_per_conn", "heap / conn (KB)", func(p *results.Phase) (float64, bool) {
		return p.Gateway.HeapPerConn / 1024, p.Gateway.HeapBytes > 0 && p.Name == results.PhaseIdle
	}, human},
	{"goroutines", "goroutines", func(p *results.Phase) (float64, bool) {
		return float64(p.Gateway.Goroutines), p.Gateway.Goroutines > 0 && p.Name == results.PhaseIdle
	}, count},
	{"deliveries", "deliveries /s", func(p *results.Phase) (float64, bool) { return p.Deliveries, p.Deliveries > 0 }, human},
	{"latency_p50", "latency p50 (ms)", lat(func(l *results.Latency) float64 { return l.P50 }), human},
	{"latency_p99", "latency p99 (ms)", lat(func(l *results.Latency) float64 { return l.P99 }), human},
	{"latency_p999", "latency p99.9 (ms)", lat(func(l *results.Latency) float64 { return l.P999 }), human},
	{"latency_max", "latency max: last delivery (ms)", lat(func(l *results.Latency) float64 { return l.Max }), human},
	{"latency_unc_p99", "p99 uncorrected (ms)", func(p *results.Phase) (float64, bool) {
		if p.LatencyUncorrected == nil || p.LatencyUncorrected.Count == 0 {
			return 0, false
		}
		return p.LatencyUncorrected.P99, true
	}, human},
	{"cpu_per_op", "gateway CPU / op (µs)", cost(func(c *results.Cost) (float64, bool) { return c.CPUPerOp, c.CPUPerOp > 0 }), human},
	{"cpu_per_delivery", "gateway CPU / delivery (µs)", cost(func(c *results.Cost) (float64, bool) { return c.CPUPerDelivery, c.CPUPerDelivery > 0 }), human},
	{"allocs_per_op", "allocs / op", cost(func(c *results.Cost) (float64, bool) { return c.AllocsPerOp, true }), human},
	{"alloc_bytes_per_op", "alloc bytes / op", cost(func(c *results.Cost) (float64, bool) { return c.AllocBytesPerOp, true }), human},
	{"allocs_per_delivery", "allocs / delivery", cost(func(c *results.Cost) (float64, bool) { return c.AllocsPerDelivery, c.Deliveries > 0 }), human},
	{"gateway_cpu", "gateway CPU (s)", func(p *results.Phase) (float64, bool) { return p.Gateway.CPUSeconds, p.Gateway.CPUSeconds > 0 }, human},
	{"gc_pause_p99", "GC pause p99 (ms)", func(p *results.Phase) (float64, bool) { return p.Gateway.GCPauseP99 * 1e3, p.Gateway.GCCount > 0 }, human},
	{"gc_pause_max", "GC pause max (ms)", func(p *results.Phase) (float64, bool) { return p.Gateway.GCPauseMax * 1e3, p.Gateway.GCCount > 0 }, human},
	{"gc_cpu", "GC CPU (%)", func(p *results.Phase) (float64, bool) { return p.Gateway.GCCPUShare * 100, p.Gateway.CPUSeconds > 0 }, human},
	{"loadgen_cpu", "load generator CPU (s)", func(p *results.Phase) (float64, bool) {
		return loadgenCPU(p), p.Loadgen != nil && p.Loadgen.Processes > 0
	}, human},
	{"sent", "sent", func(p *results.Phase) (float64, bool) { return float64(p.Sent), p.Sent > 0 }, count},
	{"missing", "missing", func(p *results.Phase) (float64, bool) { return float64(p.Missing), p.Sent > 0 }, count},
}

func loadgenCPU(p *results.Phase) float64 {
	if p.Loadgen == nil {
		return 0
	}
	return p.Loadgen.CPUSeconds
}

// figuresFor returns the figures of the phase name with their floor flags.
func figuresFor(name string) []figure {
	out := make([]figure, 0, len(figureDefs))
	for _, d := range figureDefs {
		out = append(out, figure{label: d.label, value: d.value, format: d.format, floor: floorRatio(name, d.key)})
	}
	return out
}

// stats is one engine's figure over its rounds.
type stats struct {
	n             int // rounds that measured it
	med, min, max float64
}

// collect returns the figure of phase name over g's runs.
func collect(g *group, name string, value func(p *results.Phase) (float64, bool)) (stats, bool) {
	var vs []float64
	for _, x := range g.runs {
		if p := phase(x.r, name); p != nil {
			if v, ok := value(p); ok && !math.IsNaN(v) && !math.IsInf(v, 0) {
				vs = append(vs, v)
			}
		}
	}
	if len(vs) == 0 {
		return stats{}, false
	}
	return stats{n: len(vs), med: median(vs), min: slices.Min(vs), max: slices.Max(vs)}, true
}

// median returns the median of vs (the mean of the middle two for an even count); vs non-empty.
func median(vs []float64) float64 {
	s := slices.Clone(vs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// runsWith returns how many of g's runs have a phase named name.
func runsWith(g *group, name string) int {
	n := 0
	for _, x := range g.runs {
		if phase(x.r, name) != nil {
			n++
		}
	}
	return n
}

// spread reports whether st's min–max spread is more than spreadFlag of its median.
func (st stats) spread() bool {
	if st.n < 2 {
		return false
	}
	m := math.Abs(st.med)
	if m == 0 {
		return st.max != st.min
	}
	return (st.max-st.min)/m > spreadFlag
}

// cell formats st: "median (min–max)", the min–max only when the rounds differ, "⚠" when the
// spread is over spreadFlag.
func cell(st stats, format func(float64) string) string {
	s := format(st.med)
	if st.n > 1 && format(st.min) != format(st.max) {
		s += " (" + format(st.min) + "–" + format(st.max) + ")"
	}
	if st.spread() {
		s += " ⚠"
	}
	return s
}

// phaseTable writes the Markdown table of phase name: a row per figure some run measured, a
// column per engine, the floor's ratios where the figure is compared with the floor, and a row
// saying which rounds were saturated.
func (w *writer) phaseTable(gs []*group, name string) {
	fl := floorGroup(gs)
	head := []string{"figure"}
	for _, g := range gs {
		head = append(head, fmt.Sprintf("%s (%d)", g.engine, len(g.runs)))
	}
	var rows [][]string
	for _, f := range figuresFor(name) {
		row := []string{f.label}
		anyValue := false
		var floorMed float64
		floorOK := false
		if fl != nil && f.floor {
			if st, ok := collect(fl, name, f.value); ok && st.med != 0 {
				floorMed, floorOK = st.med, true
			}
		}
		for _, g := range gs {
			st, ok := collect(g, name, f.value)
			if !ok {
				row = append(row, "—")
				continue
			}
			anyValue = true
			c := cell(st, f.format)
			if of := runsWith(g, name); st.n < of {
				c += fmt.Sprintf(" [%d of %d rounds]", st.n, of)
			}
			if floorOK && g != fl {
				c += fmt.Sprintf(" · %.2f× floor", st.med/floorMed)
			}
			row = append(row, c)
		}
		if anyValue {
			rows = append(rows, row)
		}
	}
	sat := []string{"saturated"}
	anySat := false
	for _, g := range gs {
		n, of := 0, 0
		for _, x := range g.runs {
			if p := phase(x.r, name); p != nil {
				of++
				if p.Saturated {
					n++
				}
			}
		}
		switch {
		case of == 0:
			sat = append(sat, "—")
		case n == 0:
			sat = append(sat, "no")
		default:
			anySat = true
			sat = append(sat, fmt.Sprintf("**SAT** %d/%d", n, of))
		}
	}
	if anySat {
		rows = append(rows, sat)
	}
	if len(rows) == 0 {
		w.p("No figures were recorded for this phase.\n\n")
		return
	}
	w.table(head, rows)
	if anySat {
		w.p("Saturated:\n\n")
		for _, g := range gs {
			for _, x := range g.runs {
				if p := phase(x.r, name); p != nil && p.Saturated {
					why := strings.Join(p.Saturation, "; ")
					if why == "" {
						why = "no reason recorded"
					}
					w.p("- %s round %d (%s): %s\n", g.engine, x.round, x.r.ID, mdEscape(why))
				}
			}
		}
		w.p("\n")
	}
}

// table writes a Markdown table of figures; the first column is left-aligned, the others
// right-aligned.
func (w *writer) table(head []string, rows [][]string) { w.alignedTable(head, rows, 1) }

// textTable writes a Markdown table of text, every column left-aligned.
func (w *writer) textTable(head []string, rows [][]string) { w.alignedTable(head, rows, len(head)) }

// alignedTable writes a Markdown table whose first left columns are left-aligned.
func (w *writer) alignedTable(head []string, rows [][]string, left int) {
	esc := func(cells []string) string {
		out := make([]string, len(cells))
		for i, c := range cells {
			out[i] = strings.ReplaceAll(c, "|", `\|`)
		}
		return "| " + strings.Join(out, " | ") + " |\n"
	}
	w.p("%s", esc(head))
	align := make([]string, len(head))
	for i := range align {
		align[i] = "---:"
		if i < left {
			align[i] = "---"
		}
	}
	w.p("|%s|\n", strings.Join(align, "|"))
	for _, r := range rows {
		w.p("%s", esc(r))
	}
	w.p("\n")
}

// mdEscape keeps text from being read as Markdown markup.
func mdEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, "*", `\*`, "_", `\_`, "`", "\\`", "|", `\|`, "<", "&lt;")
	return r.Replace(s)
}

// count formats a count exactly below ten million, shortened above.
func count(v float64) string {
	if math.Abs(v) < 1e7 {
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	}
	return human(v)
}

// human is results.Human: the report's figures are written as the results tables write them
// (the summary, the side-by-side and ceiling tables), so a figure reads the same in both.
var human = results.Human
