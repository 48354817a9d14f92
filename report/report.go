// Package report turns the result files of one sitting (a directory of result JSON, as
// `pushwire bench --engines` and `pushwire capacity` write it) into a Markdown report with PNG
// charts: the environment, a table per phase with the median over an engine's rounds, its
// min–max and its ratio to the floor, the saturated phases, connections, memory, deliveries/s,
// latency percentiles and GC pauses per engine, the top functions of the CPU profiles, and for a
// capacity search its ceilings and steps. It also writes runs in the Go benchmark format, one
// file per engine, for benchstat.
//
// Charts are drawn with gonum.org/v1/plot; profiles are read with github.com/google/pprof.
package report

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pushwire/pushwire/results"
)

// FloorEngine is the engine name of the raw-epoll floor server; its runs are the base of the
// floor ratios and its column comes last.
const FloorEngine = "floor"

// ChartsDir is the directory, inside the report's directory, that holds the charts.
const ChartsDir = "charts"

// ReportFile is the report's file name inside the directory.
const ReportFile = "report.md"

// ErrNoResults is returned (wrapped) by Generate for a directory that holds no result file.
var ErrNoResults = errors.New("report: no result files")

// Options are the settings of Generate. The zero value works.
type Options struct {
	// Title is the report's title; default: "pushwire workbench: <directory name>".
	Title string
}

// run is one result file of the sitting.
type run struct {
	r     *results.Result
	path  string // the result file
	round int    // 1-based: the run's rank among its engine's runs by start time
}

// dir returns the directory of the run's result file, against which its profile paths resolve.
func (x *run) dir() string { return filepath.Dir(x.path) }

// group is an engine's runs in start order, and the run whose series the charts show.
type group struct {
	engine string
	runs   []*run
	// rep is the run whose ramp connect rate is the median of the engine's (the lower middle of
	// an even count); the first run when none has a ramp.
	rep *run
}

// sitting is every run of a directory, plain runs and capacity searches apart.
type sitting struct {
	dir      string
	plain    []*group // runs without Capacity, by engine
	capacity []*group // runs with Capacity, by engine
	skipped  []string // files that could not be read, with why
	all      []*run   // every run read, by start time
}

// Generate reads every *.json result in dir (not recursive), writes dir/report.md and the charts
// in dir/charts/*.png, and returns the path of report.md. A file that is not a readable result is
// listed in the report as skipped; a directory without any result is an error wrapping
// ErrNoResults. A chart whose data the results lack (series of results written before they were
// recorded) is left out with a line saying why.
func Generate(dir string, opt Options) (string, error) {
	s, err := load(dir)
	if err != nil {
		return "", err
	}
	if opt.Title == "" {
		abs, aerr := filepath.Abs(dir)
		if aerr != nil {
			abs = dir
		}
		opt.Title = "pushwire workbench: " + filepath.Base(abs)
	}
	charts := filepath.Join(dir, ChartsDir)
	if err := os.MkdirAll(charts, 0o755); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	var md bytes.Buffer
	w := &writer{buf: &md, chartDir: charts}
	w.document(s, opt)
	if w.err != nil {
		return "", w.err
	}
	out := filepath.Join(dir, ReportFile)
	if err := os.WriteFile(out, md.Bytes(), 0o644); err != nil {
		return "", fmt.Errorf("report: %w", err)
	}
	return out, nil
}

// load reads the results of dir and groups them by engine.
func load(dir string) (*sitting, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	s := &sitting{dir: dir}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		p := filepath.Join(dir, e.Name())
		r, err := results.Read(p)
		if err != nil {
			s.skipped = append(s.skipped, fmt.Sprintf("%s: %v", e.Name(), err))
			continue
		}
		s.all = append(s.all, &run{r: r, path: p})
	}
	if len(s.all) == 0 {
		if len(s.skipped) > 0 {
			return nil, fmt.Errorf("%w in %s (%d .json files unreadable: %s)", ErrNoResults, dir, len(s.skipped), strings.Join(s.skipped, "; "))
		}
		return nil, fmt.Errorf("%w in %s: want the *.json files of pushwire bench or pushwire capacity", ErrNoResults, dir)
	}
	sortRuns(s.all)
	var plain, capa []*run
	for _, x := range s.all {
		if x.r.Capacity != nil {
			capa = append(capa, x)
		} else {
			plain = append(plain, x)
		}
	}
	s.plain = groupRuns(plain)
	s.capacity = groupRuns(capa)
	return s, nil
}

// sortRuns orders runs by start time, then ID.
func sortRuns(runs []*run) {
	slices.SortStableFunc(runs, func(a, b *run) int {
		return cmp.Or(a.r.StartedAt.Compare(b.r.StartedAt), cmp.Compare(a.r.ID, b.r.ID))
	})
}

// groupRuns groups runs (in start order) by engine: engines in first-seen order, the floor last;
// rounds numbered in start order; the representative run chosen.
func groupRuns(runs []*run) []*group {
	var gs []*group
	byEngine := map[string]*group{}
	for _, x := range runs {
		e := x.r.Engine
		if e == "" {
			e = "unknown"
		}
		g := byEngine[e]
		if g == nil {
			g = &group{engine: e}
			byEngine[e] = g
			gs = append(gs, g)
		}
		g.runs = append(g.runs, x)
		x.round = len(g.runs)
	}
	slices.SortStableFunc(gs, func(a, b *group) int {
		return cmp.Compare(boolInt(a.engine == FloorEngine), boolInt(b.engine == FloorEngine))
	})
	for _, g := range gs {
		g.rep = representative(g.runs)
	}
	return gs
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// representative returns the run whose ramp connect rate is the median of runs (the lower
// middle for an even count), or the first run when none has a ramp.
func representative(runs []*run) *run {
	var with []*run
	for _, x := range runs {
		if p := phase(x.r, results.PhaseRamp); p != nil && p.ConnectRate > 0 {
			with = append(with, x)
		}
	}
	if len(with) == 0 {
		return runs[0]
	}
	slices.SortStableFunc(with, func(a, b *run) int {
		return cmp.Compare(phase(a.r, results.PhaseRamp).ConnectRate, phase(b.r, results.PhaseRamp).ConnectRate)
	})
	return with[(len(with)-1)/2]
}

// phase returns r's first phase named name, or nil.
func phase(r *results.Result, name string) *results.Phase {
	for i := range r.Phases {
		if r.Phases[i].Name == name {
			return &r.Phases[i]
		}
	}
	return nil
}

// phaseNames returns the names of the groups' phases in first-seen order, capacity steps left
// out.
func phaseNames(gs []*group) []string {
	var names []string
	for _, g := range gs {
		for _, x := range g.runs {
			for i := range x.r.Phases {
				p := &x.r.Phases[i]
				if p.Workload == "" && !slices.Contains(names, p.Name) {
					names = append(names, p.Name)
				}
			}
		}
	}
	return names
}

// floorGroup returns the floor's group, or nil.
func floorGroup(gs []*group) *group {
	for _, g := range gs {
		if g.engine == FloorEngine {
			return g
		}
	}
	return nil
}
