package report

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/pprof/profile"

	"github.com/pushwire/pushwire/results"
)

// topN is the functions listed per engine and phase.
const topN = 10

// profiledPhases are the phases whose CPU profiles the report reads.
var profiledPhases = []string{results.PhasePush, results.PhaseBroadcast}

// funcCost is one function's CPU time in a profile: flat (in the function itself) and cum (in it
// and what it called), in the profile's unit.
type funcCost struct {
	name      string
	flat, cum int64
}

// top is the top functions of one or more CPU profiles added together.
type top struct {
	files  int    // profiles read
	total  int64  // every sample's value
	unit   string // of the values: "nanoseconds" for CPU profiles
	byFlat []funcCost
	byCum  []funcCost
}

// cpuIndex returns the index of the CPU time among p's sample values: the "cpu" type, else the
// last one.
func cpuIndex(p *profile.Profile) int {
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			return i
		}
	}
	return len(p.SampleType) - 1
}

// topFunctions reads the pprof files at paths and returns their top n functions by flat and by
// cum CPU, summed over the files.
func topFunctions(paths []string, n int) (top, error) {
	flat := map[string]int64{}
	cum := map[string]int64{}
	var t top
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			return top{}, fmt.Errorf("report: profile: %w", err)
		}
		p, err := profile.Parse(f)
		_ = f.Close() // read-only: the parse's error is the one that matters
		if err != nil {
			return top{}, fmt.Errorf("report: profile %s: %w", path, err)
		}
		if len(p.SampleType) == 0 {
			return top{}, fmt.Errorf("report: profile %s: no sample types", path)
		}
		idx := cpuIndex(p)
		t.unit = p.SampleType[idx].Unit
		for _, s := range p.Sample {
			if idx >= len(s.Value) {
				continue
			}
			v := s.Value[idx]
			t.total += v
			seen := map[string]bool{}
			leaf := true
			for _, loc := range s.Location {
				for _, ln := range loc.Line { // innermost (inlined) first
					name := "?"
					if ln.Function != nil {
						name = ln.Function.Name
					}
					if leaf {
						flat[name] += v
						leaf = false
					}
					if !seen[name] {
						seen[name] = true
						cum[name] += v
					}
				}
				if len(loc.Line) == 0 && leaf {
					name := fmt.Sprintf("0x%x", loc.Address)
					flat[name] += v
					leaf = false
					if !seen[name] {
						seen[name] = true
						cum[name] += v
					}
				}
			}
		}
		t.files++
	}
	all := make([]funcCost, 0, len(cum))
	for name, c := range cum {
		all = append(all, funcCost{name: name, flat: flat[name], cum: c})
	}
	t.byFlat = firstN(all, n, func(a, b funcCost) int {
		return cmp.Or(cmp.Compare(b.flat, a.flat), cmp.Compare(b.cum, a.cum), strings.Compare(a.name, b.name))
	})
	t.byFlat = slices.DeleteFunc(t.byFlat, func(f funcCost) bool { return f.flat == 0 })
	t.byCum = firstN(all, n, func(a, b funcCost) int {
		return cmp.Or(cmp.Compare(b.cum, a.cum), cmp.Compare(b.flat, a.flat), strings.Compare(a.name, b.name))
	})
	return t, nil
}

func firstN(fs []funcCost, n int, order func(a, b funcCost) int) []funcCost {
	s := slices.Clone(fs)
	slices.SortFunc(s, order)
	if len(s) > n {
		s = s[:n]
	}
	return s
}

// profilePaths returns the CPU profile files of phase name in g's runs, resolved against each
// result file's directory.
func profilePaths(g *group, name string) []string {
	var out []string
	for _, x := range g.runs {
		p := phase(x.r, name)
		if p == nil {
			continue
		}
		for _, pr := range p.Profiles {
			if pr.Kind != "cpu" || pr.Path == "" {
				continue
			}
			path := pr.Path
			if !filepath.IsAbs(path) {
				path = filepath.Join(x.dir(), path)
			}
			out = append(out, path)
		}
	}
	return out
}

// profiles writes "Where the CPU goes": each engine's top functions in the push and broadcast
// phases, from every CPU profile of its runs.
func (w *writer) profiles(gs []*group) {
	w.p("## Where the CPU goes\n\n")
	any := false
	for _, g := range gs {
		for _, name := range profiledPhases {
			paths := profilePaths(g, name)
			if len(paths) == 0 {
				continue
			}
			if !any {
				w.p("The gateways' CPU profiles of each phase, added over the engine's rounds and gateway processes. " +
					"flat is the time in the function itself, cum the time in it and what it called; shares are of all the samples.\n\n")
				any = true
			}
			w.p("### %s: %s\n\n", g.engine, name)
			t, err := topFunctions(paths, topN)
			if err != nil {
				w.p("_The profiles could not be read: %s._\n\n", mdEscape(err.Error()))
				continue
			}
			if t.total == 0 {
				w.p("_%d %s with no samples: the gateways were idle or the phase was too short._\n\n", t.files, plural(t.files, "profile", "profiles"))
				continue
			}
			w.p("%d %s, %s of CPU in all.\n\n", t.files, plural(t.files, "profile", "profiles"), cpuTime(t.total, t.unit))
			row := func(f funcCost) []string {
				return []string{
					"`" + strings.ReplaceAll(f.name, "`", "'") + "`",
					cpuTime(f.flat, t.unit), pct(f.flat, t.total),
					cpuTime(f.cum, t.unit), pct(f.cum, t.total),
				}
			}
			head := []string{"function", "flat", "flat %", "cum", "cum %"}
			var rows [][]string
			for _, f := range t.byFlat {
				rows = append(rows, row(f))
			}
			w.p("Top %d by flat:\n\n", len(rows))
			w.table(head, rows)
			rows = rows[:0]
			for _, f := range t.byCum {
				rows = append(rows, row(f))
			}
			w.p("Top %d by cum:\n\n", len(rows))
			w.table(head, rows)
		}
	}
	if !any {
		w.p("_No CPU profiles in these results: run with profiling (make bench PROFILE=1) to see the top functions of the push and broadcast phases._\n\n")
	}
}

// cpuTime formats v of unit (nanoseconds for CPU profiles) as a duration.
func cpuTime(v int64, unit string) string {
	if v == 0 {
		return "0"
	}
	if unit != "nanoseconds" {
		return fmt.Sprintf("%d %s", v, unit)
	}
	switch s := float64(v) / 1e9; {
	case s >= 1:
		return human(s) + " s"
	default:
		return human(s*1e3) + " ms"
	}
}

func pct(v, total int64) string {
	if total == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(v)/float64(total))
}
