package results

import (
	"cmp"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// sideRow is one line of the side-by-side table: a metric of a phase.
type sideRow struct {
	phase, label string
	metric       string // a name of metrics (compare.go)
}

// sideRows are the figures the engine comparison shows, in order: memory and GC at rest from
// the idle phase, then throughput, latency and completeness of every delivery phase.
func sideRows(phases []string) []sideRow {
	rows := []sideRow{
		{PhaseRamp, "connections", "conns"},
		{PhaseRamp, "connects/s", "connect_rate"},
		{PhaseIdle, "RSS/conn (B)", "rss_per_conn"},
		{PhaseIdle, "heap/conn (B)", "heap_per_conn"},
		{PhaseIdle, "goroutines", "goroutines"},
	}
	for _, ph := range phases {
		if ph == PhaseRamp || ph == PhaseIdle {
			continue
		}
		rows = append(rows,
			sideRow{ph, "deliveries/s", "deliveries_per_s"},
			sideRow{ph, "latency p99 (ms)", "latency_p99"},
			sideRow{ph, "GC pause p99 (ms)", "gc_pause_p99"},
			sideRow{ph, "GC CPU %", "gc_cpu_share"},
			sideRow{ph, "missing", "missing"},
		)
	}
	return rows
}

func metricByName(name string) metric {
	for _, m := range metrics {
		if m.name == name {
			return m
		}
	}
	panic("results: no metric " + name)
}

// SideBySide writes one table comparing runs of different engines, a column per run, each
// figure with its ratio to the base run's (the first run whose engine is base; the first run
// when none is). Runs of one engine repeated (several rounds) are shown as separate columns.
// Rows a run did not measure show "-".
func SideBySide(w io.Writer, runs []*Result, base string) error {
	if len(runs) == 0 {
		return fmt.Errorf("results: nothing to compare")
	}
	bi := 0
	for i, r := range runs {
		if r.Engine == base {
			bi = i
			break
		}
	}
	var phases []string
	seen := map[string]bool{}
	for _, r := range runs {
		for _, p := range r.Phases {
			if !seen[p.Name] {
				seen[p.Name] = true
				phases = append(phases, p.Name)
			}
		}
	}
	find := func(r *Result, phase string) *Phase {
		for i := range r.Phases {
			if r.Phases[i].Name == phase {
				return &r.Phases[i]
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"phase", "metric"}
	for _, r := range runs {
		head = append(head, r.Engine)
	}
	var werr error // the first failed write; a tabwriter does not keep it
	writeRow := func(cells []string) {
		if _, err := fmt.Fprintln(tw, strings.Join(cells, "\t")+"\t"); err != nil && werr == nil {
			werr = err
		}
	}
	writeRow(head)
	for _, row := range sideRows(phases) {
		m := metricByName(row.metric)
		var baseV float64
		baseOK := false
		if p := find(runs[bi], row.phase); p != nil {
			baseV, baseOK = m.value(p)
		}
		cells := []string{row.phase, row.label}
		any := false
		for i, r := range runs {
			p := find(r, row.phase)
			if p == nil {
				cells = append(cells, "-")
				continue
			}
			v, ok := m.value(p)
			if !ok {
				cells = append(cells, "-")
				continue
			}
			any = true
			cell := human(v)
			if i != bi && baseOK && baseV != 0 {
				cell += fmt.Sprintf(" (%.2fx)", v/baseV)
			}
			cells = append(cells, cell)
		}
		if any {
			writeRow(cells)
		}
	}
	if err := cmp.Or(werr, tw.Flush()); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\nratios are each run's figure over %s's; for memory, latency, GC and missing lower is better\n", runs[bi].Engine)
	return err
}
