package report

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/pushwire/pushwire/results"
)

// writer builds the Markdown document; the first error of a chart is kept in err.
type writer struct {
	buf      *bytes.Buffer
	chartDir string // directory the charts are written to
	err      error
}

func (w *writer) p(format string, args ...any) {
	fmt.Fprintf(w.buf, format, args...)
}

// document writes the whole report.
func (w *writer) document(s *sitting, opt Options) {
	w.p("# %s\n\n", mdEscape(opt.Title))
	var engines []string
	for _, gs := range [][]*group{s.plain, s.capacity} {
		for _, g := range gs {
			engines = append(engines, fmt.Sprintf("%s (%d %s)", g.engine, len(g.runs), plural(len(g.runs), "run", "runs")))
		}
	}
	w.p("%d result %s in `%s`: %s.\n\n", len(s.all), plural(len(s.all), "file", "files"), s.dir, strings.Join(engines, ", "))
	if len(s.skipped) > 0 {
		w.p("Skipped (not a readable result):\n\n")
		for _, sk := range s.skipped {
			w.p("- %s\n", mdEscape(sk))
		}
		w.p("\n")
	}
	w.environment(s)
	if len(s.plain) > 0 {
		w.figures(s.plain)
		w.charts(s.plain)
		w.profiles(s.plain)
	}
	if len(s.capacity) > 0 {
		w.capacity(s.capacity)
		if len(s.plain) == 0 {
			w.profiles(s.capacity)
		}
	}
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// environment writes the machine, build and placement, and each run's conditions before it ran.
func (w *writer) environment(s *sitting) {
	w.p("## Environment\n\n")
	distinct := func(f func(e *results.Env) string) string {
		var vs []string
		for _, x := range s.all {
			if v := f(&x.r.Env); v != "" && !slices.Contains(vs, v) {
				vs = append(vs, v)
			}
		}
		if len(vs) == 0 {
			return "unknown"
		}
		return strings.Join(vs, ", ")
	}
	w.p("- commit: %s\n", distinct(func(e *results.Env) string { return e.Commit }))
	w.p("- CPU: %s; cores: %s; GOMAXPROCS: %s; memory: %s\n",
		distinct(func(e *results.Env) string { return e.CPUModel }),
		distinct(func(e *results.Env) string { return positive(e.Cores) }),
		distinct(func(e *results.Env) string { return positive(e.GOMAXPROCS) }),
		distinct(func(e *results.Env) string {
			if e.MemoryBytes == 0 {
				return ""
			}
			return fmt.Sprintf("%.1f GiB", float64(e.MemoryBytes)/(1<<30))
		}))
	w.p("- Go: %s; OS: %s; kernel: %s; open files per process: %s\n",
		distinct(func(e *results.Env) string { return e.GoVersion }),
		distinct(func(e *results.Env) string {
			if e.OS == "" {
				return ""
			}
			return e.OS + "/" + e.Arch
		}),
		distinct(func(e *results.Env) string { return e.Kernel }),
		distinct(func(e *results.Env) string {
			if e.FileLimit == 0 {
				return ""
			}
			return fmt.Sprint(e.FileLimit)
		}))
	var transports []string
	for _, x := range s.all {
		if t := x.r.Transport; t != "" && !slices.Contains(transports, t) {
			transports = append(transports, t)
		}
	}
	if len(transports) > 0 {
		w.p("- transport: %s\n", strings.Join(transports, ", "))
	}
	if len(transports) > 1 {
		w.p("- **warning**: the runs are of %d transports and are grouped by engine alone, so an engine's medians mix them; "+
			"report one transport per directory\n", len(transports))
	}
	var placements []string
	for _, x := range s.all {
		pl := "none: the kernel placed the processes"
		if p := x.r.Placement; p != nil {
			pl = fmt.Sprintf("%s: gateways (with control and the backend) on CPUs %s, load generator on CPUs %s",
				p.Method, cpus(p.Gateway), cpus(p.Loadgen))
		}
		if !slices.Contains(placements, pl) {
			placements = append(placements, pl)
		}
	}
	w.p("- placement: %s\n", strings.Join(placements, "; "))
	if cfg := settings(s.all[0].r); cfg != "" {
		w.p("- settings (of %s): %s\n", s.all[0].r.ID, cfg)
	}
	w.p("\nEach run's machine before it started:\n\n")
	var rows [][]string
	for _, x := range s.all {
		e := &x.r.Env
		load := "—"
		if len(e.LoadAvg) > 0 {
			parts := make([]string, len(e.LoadAvg))
			for i, v := range e.LoadAvg {
				parts[i] = fmt.Sprintf("%.2f", v)
			}
			load = strings.Join(parts, " ")
		}
		sockets := "—"
		if e.TCPSockets > 0 {
			sockets = fmt.Sprint(e.TCPSockets)
		}
		busy := "none recorded"
		if len(e.Busy) > 0 {
			busy = mdEscape(strings.Join(e.Busy, ", "))
		}
		if warn := e.Warnings(); len(warn) > 0 {
			busy += " — " + mdEscape(strings.Join(warn, "; "))
		}
		rows = append(rows, []string{
			x.r.Engine, fmt.Sprint(x.round), "`" + x.r.ID + "`",
			x.r.StartedAt.UTC().Format("15:04:05"), load, sockets, busy,
		})
	}
	w.textTable([]string{"engine", "round", "run", "started (UTC)", "load 1/5/15 min", "TCP sockets", "other busy processes"}, rows)
}

// settings returns the run's main settings, "key=value" sorted by key.
func settings(r *results.Result) string {
	if len(r.Config) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(r.Config)) {
		parts = append(parts, fmt.Sprintf("%s=%v", k, r.Config[k]))
	}
	return mdEscape(strings.Join(parts, " "))
}

func cpus(c []int) string {
	if len(c) == 0 {
		return "any"
	}
	parts := make([]string, len(c))
	for i, v := range c {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, ",")
}

func positive(n int) string {
	if n <= 0 {
		return ""
	}
	return fmt.Sprint(n)
}

// figures writes a table per phase.
func (w *writer) figures(gs []*group) {
	w.p("## Figures per phase\n\n")
	w.p("Each cell is the median over the engine's rounds (their count is in the column's header), " +
		"with the min–max in brackets when the rounds differ; ⚠ flags a spread (max − min) over 10%% of the median; " +
		"\"[1 of 3 rounds]\" says how many rounds measured a figure when not all did (GC pauses: rounds with a GC cycle in the phase). ")
	if floorGroup(gs) != nil {
		w.p("\"× floor\" is the ratio of the engine's median to the floor's (a raw-epoll server measured in the same sitting): " +
			"for memory and latency lower is better, for rates higher. ")
	}
	w.p("**SAT** marks a phase that did not reach its offered rate or whose latency grew through the phase; its rates are what the deployment managed, not what was asked. " +
		"— marks a figure the engine did not measure (the floor runs no upstream phase).\n\n")
	for _, name := range phaseNames(gs) {
		title := name
		var satEngines []string
		for _, g := range gs {
			for _, x := range g.runs {
				if p := phase(x.r, name); p != nil && p.Saturated && !slices.Contains(satEngines, g.engine) {
					satEngines = append(satEngines, g.engine)
				}
			}
		}
		if len(satEngines) > 0 {
			title += " — SAT (" + strings.Join(satEngines, ", ") + ")"
		}
		w.p("### %s\n\n", title)
		w.phaseTable(gs, name)
	}
}

// capacity writes the ceilings of capacity searches and their steps.
func (w *writer) capacity(gs []*group) {
	w.p("## Capacity\n\n")
	var limits []string
	for _, g := range gs {
		for _, x := range g.runs {
			if l := x.r.Capacity.LimitsText(); !slices.Contains(limits, l) {
				limits = append(limits, l)
			}
		}
	}
	w.p("A ceiling is the highest offered rate whose step reached it, kept p99 under its workload's limit (%s), missed nothing and was not saturated; "+
		"with several runs of an engine the cell is the median with the min–max. A step marked SAT did not reach its offered rate "+
		"or its latency grew through it.\n\n", strings.Join(limits, ", "))
	var runs []*results.Result
	base := gs[0].engine
	for _, g := range gs {
		for _, x := range g.runs {
			runs = append(runs, x.r)
		}
		if g.engine == "std" {
			base = g.engine
		}
	}
	var tb bytes.Buffer
	if err := results.CeilingTable(&tb, runs, base); err != nil {
		w.p("_The ceiling table could not be drawn up (%s); the ceilings as recorded:_\n\n", mdEscape(err.Error()))
		w.ceilingTable(gs)
	} else {
		w.p("```text\n%s```\n\n", strings.ReplaceAll(tb.String(), "```", "'''"))
	}
	w.p("### Steps\n\n")
	for _, wl := range workloads(gs) {
		var lims []string
		for _, g := range gs {
			if l := human(g.rep.r.Capacity.LimitFor(wl)) + " ms"; !slices.Contains(lims, l) {
				lims = append(lims, l)
			}
		}
		w.p("#### %s (p99 limit %s)\n\n", wl, strings.Join(lims, ", "))
		w.stepsTable(gs, wl)
		w.chart("capacity-"+fileSafe(wl), func() (string, error) { return capacityChart(w.chartDir, gs, wl) })
	}
}

// workloads returns the workloads of the groups' ceilings and steps, in first-seen order.
func workloads(gs []*group) []string {
	var out []string
	for _, g := range gs {
		for _, x := range g.runs {
			for _, c := range x.r.Capacity.Ceilings {
				if !slices.Contains(out, c.Workload) {
					out = append(out, c.Workload)
				}
			}
			for _, p := range x.r.Phases {
				if p.Workload != "" && !slices.Contains(out, p.Workload) {
					out = append(out, p.Workload)
				}
			}
		}
	}
	return out
}

// ceilingOf returns the ceiling of workload wl in r, or nil.
func ceilingOf(r *results.Result, wl string) *results.Ceiling {
	for i := range r.Capacity.Ceilings {
		if r.Capacity.Ceilings[i].Workload == wl {
			return &r.Capacity.Ceilings[i]
		}
	}
	return nil
}

// ceilingTable writes one row per workload and one column per engine.
func (w *writer) ceilingTable(gs []*group) {
	head := []string{"workload"}
	for _, g := range gs {
		head = append(head, g.engine)
	}
	medianRate := func(g *group, wl string) (float64, float64, string, bool) {
		var rates, p99s []float64
		unit := ""
		for _, x := range g.runs {
			if c := ceilingOf(x.r, wl); c != nil {
				rates = append(rates, c.Rate)
				p99s = append(p99s, c.P99)
				unit = c.Unit
			}
		}
		if len(rates) == 0 {
			return 0, 0, "", false
		}
		return median(rates), median(p99s), unit, true
	}
	var base *group
	for _, g := range gs {
		if g.engine == "std" {
			base = g
		}
	}
	fl := floorGroup(gs)
	var rows [][]string
	var notes []string
	for _, wl := range workloads(gs) {
		row := []string{wl}
		for _, g := range gs {
			rate, p99, unit, ok := medianRate(g, wl)
			if !ok {
				row = append(row, "—")
				continue
			}
			c := human(rate) + " " + unit + "/s"
			if rate == 0 {
				c = "0: none held"
			}
			if p99 > 0 {
				c += fmt.Sprintf(" (p99 %s ms)", human(p99))
			}
			for _, ref := range []*group{base, fl} {
				if ref == nil || ref == g {
					continue
				}
				if rr, _, _, ok := medianRate(ref, wl); ok && rr > 0 {
					c += fmt.Sprintf(" · %.2f× %s", rate/rr, ref.engine)
				}
			}
			row = append(row, c)
			for _, x := range g.runs {
				if ce := ceilingOf(x.r, wl); ce != nil && ce.FailedAt > 0 {
					notes = append(notes, fmt.Sprintf("%s %s (round %d): failed at %s/s after %d steps: %s",
						g.engine, wl, x.round, human(ce.FailedAt), ce.Steps, ce.Why))
				}
			}
		}
		rows = append(rows, row)
	}
	w.table(head, rows)
	if len(notes) > 0 {
		for _, n := range notes {
			w.p("- %s\n", mdEscape(n))
		}
		w.p("\n")
	}
}

// stepsTable writes the steps of workload wl: a row per offered rate, a column per engine.
func (w *writer) stepsTable(gs []*group, wl string) {
	var rates []float64
	for _, g := range gs {
		for _, p := range g.rep.r.Phases {
			if p.Workload == wl && !slices.Contains(rates, p.Offered) {
				rates = append(rates, p.Offered)
			}
		}
	}
	if len(rates) == 0 {
		w.p("No steps were recorded for %s.\n\n", wl)
		return
	}
	slices.Sort(rates)
	head := []string{"offered /s"}
	for _, g := range gs {
		head = append(head, fmt.Sprintf("%s (round %d)", g.engine, g.rep.round))
	}
	var rows [][]string
	for _, rate := range rates {
		row := []string{human(rate)}
		for _, g := range gs {
			var st *results.Phase
			for i := range g.rep.r.Phases {
				if p := &g.rep.r.Phases[i]; p.Workload == wl && p.Offered == rate {
					st = p
				}
			}
			if st == nil {
				row = append(row, "—")
				continue
			}
			c := "achieved " + human(st.Achieved)
			if st.Latency != nil && st.Latency.Count > 0 {
				c += ", p99 " + human(st.Latency.P99) + " ms"
				if lim := g.rep.r.Capacity.LimitFor(wl); st.Latency.P99 > lim {
					c += " (over the limit)"
				}
			}
			if st.Missing != 0 {
				c += fmt.Sprintf(", missing %d", st.Missing)
			}
			if st.Saturated {
				c += " **SAT**"
			}
			row = append(row, c)
		}
		rows = append(rows, row)
	}
	w.table(head, rows)
}

// chart draws one chart with draw (which returns the PNG's path) and embeds it, or writes a line
// saying why there is none.
func (w *writer) chart(name string, draw func() (string, error)) {
	path, err := draw()
	var skip *skipError
	switch {
	case err == nil:
		w.p("![%s](%s/%s)\n\n", name, ChartsDir, filepathBase(path))
	case asSkip(err, &skip):
		w.p("_No %s chart: %s._\n\n", name, skip.why)
	default:
		w.p("_No %s chart: %s._\n\n", name, mdEscape(err.Error()))
		if w.err == nil && isWriteError(err) {
			w.err = err
		}
	}
}
