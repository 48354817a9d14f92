package report

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/pushwire/pushwire/results"
)

// Chart geometry: 16 cm × 9 cm at 150 dpi (about 945 × 530 pixels); the legend takes a strip
// on the right so it never hides data.
const (
	chartW      = 16 * vg.Centimeter
	chartH      = 9 * vg.Centimeter
	legendW     = 2.9 * vg.Centimeter
	chartDPI    = 150
	titleSize   = 12
	labelSize   = 10.5
	tickSize    = 9
	legendSize  = 10
	lineWidth   = 1.6
	logSpanning = 30 // a log axis when the largest value is this many times the smallest
)

// skipError says why a chart has nothing to draw; the report says so instead of the chart.
type skipError struct{ why string }

func (e *skipError) Error() string { return "report: no chart: " + e.why }

func skipf(format string, args ...any) error { return &skipError{why: fmt.Sprintf(format, args...)} }

func asSkip(err error, target **skipError) bool { return errors.As(err, target) }

// writeError is a chart that could not be written to its file: Generate fails on it.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func isWriteError(err error) bool {
	var we *writeError
	return errors.As(err, &we)
}

func filepathBase(p string) string { return filepath.Base(p) }

// fileSafe makes s usable in a file name.
func fileSafe(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, s)
}

// engineColors are fixed per engine so every chart shows one engine in one colour.
var engineColors = map[string]color.Color{
	"std":       color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
	"gnet":      color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
	"netpoll":   color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
	"nbio":      color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
	"quic":      color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}, // purple
	FloorEngine: color.RGBA{R: 0x33, G: 0x33, B: 0x33, A: 0xff}, // near black
}

// spareColors colour engines without a fixed colour, in order of appearance.
var spareColors = []color.Color{
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff},
	color.RGBA{R: 0xe3, G: 0x77, B: 0xc2, A: 0xff},
	color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff},
	color.RGBA{R: 0xbc, G: 0xbd, B: 0x22, A: 0xff},
	color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff},
}

// colorOf returns engine's colour; i is the engine's index among the groups, for spare colours.
func colorOf(engine string, i int) color.Color {
	if c, ok := engineColors[engine]; ok {
		return c
	}
	return spareColors[i%len(spareColors)]
}

// sans is the charts' typeface (gonum's default font collection holds it).
var sans = font.Font{Typeface: "Liberation", Variant: "Sans"}

// newPlot returns a plot with the report's fonts and a light grid.
func newPlot(title, xLabel, yLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font = font.From(sans, titleSize)
	p.Title.Padding = 0.2 * vg.Centimeter
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font = font.From(sans, labelSize)
		a.Tick.Label.Font = font.From(sans, tickSize)
	}
	p.X.Tick.Marker = niceTicks{}
	p.Y.Tick.Marker = niceTicks{}
	g := plotter.NewGrid()
	g.Vertical.Color = color.Gray{Y: 0xdd}
	g.Horizontal.Color = color.Gray{Y: 0xdd}
	p.Add(g)
	return p
}

// niceTicks marks an axis at about six round values (1, 2, 2.5 or 5 × a power of ten apart), labelled
// without trailing zeros and with k or M for thousands and millions, and four minor ticks between.
type niceTicks struct{}

func (niceTicks) Ticks(min, max float64) []plot.Tick {
	if !(max > min) || math.IsInf(max-min, 0) {
		return []plot.Tick{{Value: min, Label: tickLabel(min, 1, math.Abs(min))}}
	}
	raw := (max - min) / 6
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	step := 10 * mag
	for _, m := range []float64{1, 2, 2.5, 5} {
		if m*mag >= raw {
			step = m * mag
			break
		}
	}
	var ticks []plot.Tick
	minor := step / 5
	for i := math.Ceil(min / minor); i*minor <= max+minor*1e-9; i++ {
		v := i * minor
		if r := math.Round(v / step); math.Abs(v-r*step) < minor*1e-6 {
			ticks = append(ticks, plot.Tick{Value: r * step, Label: tickLabel(r*step, step, math.Max(math.Abs(min), math.Abs(max)))})
		} else {
			ticks = append(ticks, plot.Tick{Value: v})
		}
	}
	return ticks
}

// tickLabel formats v, a multiple of step on an axis reaching top: in millions (M) or thousands
// (k) when top reaches them (ten thousand for k), with as many decimals as step needs.
func tickLabel(v, step, top float64) string {
	unit, div := "", 1.0
	switch {
	case top >= 1e6:
		unit, div = "M", 1e6
	case top >= 1e4:
		unit, div = "k", 1e3
	}
	v, step = v/div, step/div
	dec := 0
	if step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	if v == 0 {
		return "0"
	}
	return strconv.FormatFloat(v, 'f', dec, 64) + unit
}

// legendEntry is one engine in a chart's legend.
type legendEntry struct {
	name  string
	thumb plot.Thumbnailer
}

// save draws p with its legend in a strip on the right and writes dir/name.png.
func save(p *plot.Plot, entries []legendEntry, dir, name string) (string, error) {
	return saveTiles([]*plot.Plot{p}, entries, dir, name, chartH)
}

// saveTiles draws plots one above the other (aligned), the legend on the right, into
// dir/name.png of height h.
func saveTiles(ps []*plot.Plot, entries []legendEntry, dir, name string, h vg.Length) (string, error) {
	img := vgimg.NewWith(vgimg.UseWH(chartW, h), vgimg.UseDPI(chartDPI), vgimg.UseBackgroundColor(color.White))
	dc := draw.New(img)
	plots := dc
	if len(entries) > 0 {
		plots = draw.Crop(dc, 0, -legendW, 0, 0)
		lc := draw.Crop(dc, chartW-legendW, 0, 0, 0)
		l := plot.NewLegend()
		l.TextStyle.Font = font.From(sans, legendSize)
		l.Padding = 0.12 * vg.Centimeter
		l.Top, l.Left = true, true
		l.XOffs = 0.2 * vg.Centimeter
		l.YOffs = -0.5 * vg.Centimeter
		l.ThumbnailWidth = 0.8 * vg.Centimeter
		for _, e := range entries {
			l.Add(e.name, e.thumb)
		}
		l.Draw(lc)
	}
	if len(ps) == 1 {
		ps[0].Draw(plots)
	} else {
		grid := make([][]*plot.Plot, len(ps))
		for i, p := range ps {
			grid[i] = []*plot.Plot{p}
		}
		tiles := draw.Tiles{Rows: len(ps), Cols: 1, PadY: 0.3 * vg.Centimeter}
		canvases := plot.Align(grid, tiles, plots)
		for i, p := range ps {
			p.Draw(canvases[i][0])
		}
	}
	path := filepath.Join(dir, name+".png")
	f, err := os.Create(path)
	if err != nil {
		return "", &writeError{fmt.Errorf("report: chart %s: %w", name, err)}
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		_ = f.Close()
		return "", &writeError{fmt.Errorf("report: chart %s: %w", name, err)}
	}
	if err := f.Close(); err != nil {
		return "", &writeError{fmt.Errorf("report: chart %s: %w", name, err)}
	}
	return path, nil
}

// series is one engine's line.
type series struct {
	engine string
	color  color.Color
	pts    plotter.XYs
}

// lineChart draws one line per series with points (skipping empty series) and writes it.
func lineChart(dir, name, title, xLabel, yLabel string, ss []series, logY bool) (string, error) {
	p := newPlot(title, xLabel, yLabel)
	var entries []legendEntry
	minY, maxY := math.Inf(1), math.Inf(-1)
	for _, s := range ss {
		for _, pt := range s.pts {
			if pt.Y > 0 {
				minY = math.Min(minY, pt.Y)
			}
			maxY = math.Max(maxY, pt.Y)
		}
	}
	if logY && (math.IsInf(minY, 1) || maxY/minY < logSpanning) {
		logY = false
	}
	for _, s := range ss {
		pts := s.pts
		if logY {
			pts = slices.DeleteFunc(slices.Clone(pts), func(xy plotter.XY) bool { return xy.Y <= 0 })
		}
		if len(pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return "", fmt.Errorf("report: chart %s: %s: %w", name, s.engine, err)
		}
		l.Color = s.color
		l.Width = lineWidth
		sc.Color = s.color
		sc.Radius = vg.Points(1.6)
		if len(pts) > 60 {
			sc.Radius = 0
		}
		p.Add(l, sc)
		entries = append(entries, legendEntry{s.engine, l})
	}
	if len(entries) == 0 {
		return "", skipf("the results hold no data for it")
	}
	if logY {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Label.Text += " (log scale)"
	} else {
		p.Y.Min = math.Min(p.Y.Min, 0)
	}
	p.X.Min = math.Min(p.X.Min, 0)
	return save(p, entries, dir, name)
}

// bars is one engine's bars in a grouped bar chart: a value per category (NaN: not measured).
type bars struct {
	engine string
	color  color.Color
	values []float64
}

// barChart draws a grouped bar chart: a group per category, a bar per engine; a log axis when the
// values span more than logSpanning and log is allowed.
func barChart(dir, name, title, yLabel string, categories []string, bs []bars, log bool) (string, error) {
	minV, maxV := math.Inf(1), math.Inf(-1)
	var kept []bars
	for _, b := range bs {
		any := false
		for _, v := range b.values {
			if !math.IsNaN(v) && v > 0 {
				minV, maxV = math.Min(minV, v), math.Max(maxV, v)
				any = true
			}
		}
		if any {
			kept = append(kept, b)
		}
	}
	if len(kept) == 0 {
		return "", skipf("the results hold no data for it")
	}
	log = log && maxV/minV >= logSpanning
	base := 0.0
	if log {
		base = math.Pow(10, math.Floor(math.Log10(minV))) // bars rise from the decade below the smallest
	}
	p := newPlot(title, "", yLabel)
	p.NominalX(categories...)
	// The plot area is about 11 cm wide; each group gets room for one bar more than it has.
	w := vg.Length(11*float64(vg.Centimeter)) / vg.Length(len(categories)*(len(kept)+1))
	w = min(w, 1.2*vg.Centimeter)
	var entries []legendEntry
	for i, b := range kept {
		vs := make(plotter.Values, len(b.values))
		for j, v := range b.values {
			if math.IsNaN(v) || v <= base {
				vs[j] = 0
				continue
			}
			vs[j] = v - base
		}
		bc, err := plotter.NewBarChart(vs, w)
		if err != nil {
			return "", fmt.Errorf("report: chart %s: %w", name, err)
		}
		if log {
			floorBars, err := plotter.NewBarChart(constValues(len(vs), base), w)
			if err != nil {
				return "", fmt.Errorf("report: chart %s: %w", name, err)
			}
			bc.StackOn(floorBars) // drawn from base up, the base bars themselves not drawn
		}
		bc.Color = b.color
		bc.LineStyle.Width = 0
		bc.Offset = vg.Length(float64(i)-float64(len(kept)-1)/2) * w
		p.Add(bc)
		entries = append(entries, legendEntry{b.engine, bc})
	}
	if log {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Y.Label.Text += " (log scale)"
		p.Y.Min = base
	} else {
		p.Y.Min = 0
	}
	p.Y.Max *= 1.05
	p.X.Min, p.X.Max = -0.5, float64(len(categories))-0.5
	return save(p, entries, dir, name)
}

func constValues(n int, v float64) plotter.Values {
	vs := make(plotter.Values, n)
	for i := range vs {
		vs[i] = v
	}
	return vs
}

// timeline returns the samples of phases of r one after the other on one time axis: each phase's
// samples offset by the durations of the phases before it; f picks the value (ok false skips it).
func timeline(r *results.Result, phases []string, f func(s *results.Sample) (float64, bool)) plotter.XYs {
	var pts plotter.XYs
	offset := 0.0
	for _, name := range phases {
		p := phase(r, name)
		if p == nil {
			continue
		}
		for i := range p.Series {
			s := &p.Series[i]
			if v, ok := f(s); ok {
				pts = append(pts, plotter.XY{X: offset + s.T, Y: v})
			}
		}
		d := p.Duration
		if n := len(p.Series); n > 0 {
			d = math.Max(d, p.Series[n-1].T)
		}
		offset += d
	}
	return pts
}

// repSeries returns one series per group from its representative run.
func repSeries(gs []*group, phases []string, f func(s *results.Sample) (float64, bool)) []series {
	var ss []series
	for i, g := range gs {
		ss = append(ss, series{engine: g.engine, color: colorOf(g.engine, i), pts: timeline(g.rep.r, phases, f)})
	}
	return ss
}

// connectionsChart: sessions the gateways held, over the ramp and idle phases.
func connectionsChart(dir string, gs []*group) (string, error) {
	ss := repSeries(gs, []string{results.PhaseRamp, results.PhaseIdle}, func(s *results.Sample) (float64, bool) {
		return float64(s.Conns), true
	})
	return lineChart(dir, "connections", "Connections held (ramp, then idle)", "time since the ramp's start (s)", "sessions", ss, false)
}

// rssChart: the gateways' RSS over the ramp and idle phases.
func rssChart(dir string, gs []*group) (string, error) {
	ss := repSeries(gs, []string{results.PhaseRamp, results.PhaseIdle}, func(s *results.Sample) (float64, bool) {
		return float64(s.RSSBytes) / (1 << 20), s.RSSBytes > 0
	})
	return lineChart(dir, "rss-over-time", "Gateway RSS (ramp, then idle)", "time since the ramp's start (s)", "RSS (MiB)", ss, false)
}

// memoryChart: RSS and heap per idle connection, median over the rounds.
func memoryChart(dir string, gs []*group) (string, error) {
	cats := []string{"RSS / conn", "heap / conn"}
	var bs []bars
	for i, g := range gs {
		vals := make([]float64, 2)
		for j, f := range []func(p *results.Phase) (float64, bool){
			func(p *results.Phase) (float64, bool) { return p.Gateway.RSSPerConn / 1024, p.Gateway.RSSBytes > 0 },
			func(p *results.Phase) (float64, bool) { return p.Gateway.HeapPerConn / 1024, p.Gateway.HeapBytes > 0 },
		} {
			vals[j] = math.NaN()
			if st, ok := collect(g, results.PhaseIdle, f); ok {
				vals[j] = st.med
			}
		}
		bs = append(bs, bars{g.engine, colorOf(g.engine, i), vals})
	}
	return barChart(dir, "memory-per-conn", "Memory per idle connection (median over rounds)", "KB per connection", cats, bs, false)
}

// perSecond returns the samples' counts (f) as rates at their times: each count over the time
// since the sample before (the phase start for the first). A last sample shorter than half a
// second (the phase's tail) is merged into the one before it, so a few deliveries in a few
// milliseconds do not read as a spike.
func perSecond(ss []results.Sample, f func(s *results.Sample) int64) plotter.XYs {
	var pts plotter.XYs
	prevT := 0.0
	for i := range ss {
		t, n := ss[i].T, f(&ss[i])
		if i == len(ss)-1 && i > 0 && t-prevT < 0.5 && len(pts) > 0 {
			last := &pts[len(pts)-1]
			startT := 0.0
			if i >= 2 {
				startT = ss[i-2].T
			}
			count := last.Y*(prevT-startT) + float64(n)
			last.X, last.Y = t, count/(t-startT)
			break
		}
		if dt := t - prevT; dt > 0 {
			pts = append(pts, plotter.XY{X: t, Y: float64(n) / dt})
		}
		prevT = t
	}
	return pts
}

// deliveriesChart: deliveries per second through phase name.
func deliveriesChart(dir string, gs []*group, name string) (string, error) {
	var ss []series
	for i, g := range gs {
		var pts plotter.XYs
		if p := phase(g.rep.r, name); p != nil {
			pts = perSecond(p.Series, func(s *results.Sample) int64 { return s.Delivered })
		}
		ss = append(ss, series{engine: g.engine, color: colorOf(g.engine, i), pts: pts})
	}
	return lineChart(dir, "deliveries-"+fileSafe(name), "Deliveries per second: "+name, "time since the phase's start (s)", "deliveries / s", ss, false)
}

// latencyChart: latency percentiles of phase name, median over the rounds.
func latencyChart(dir string, gs []*group, name string) (string, error) {
	cats := []string{"p50", "p90", "p99", "p99.9"}
	pick := []func(l *results.Latency) float64{
		func(l *results.Latency) float64 { return l.P50 },
		func(l *results.Latency) float64 { return l.P90 },
		func(l *results.Latency) float64 { return l.P99 },
		func(l *results.Latency) float64 { return l.P999 },
	}
	var bs []bars
	for i, g := range gs {
		vals := make([]float64, len(pick))
		for j, f := range pick {
			vals[j] = math.NaN()
			if st, ok := collect(g, name, lat(f)); ok {
				vals[j] = st.med
			}
		}
		bs = append(bs, bars{g.engine, colorOf(g.engine, i), vals})
	}
	return barChart(dir, "latency-"+fileSafe(name), "Latency percentiles: "+name+" (median over rounds)", "latency (ms)", cats, bs, true)
}

// gcChart: the GC pause p99 or max of every phase, median over the rounds.
func gcChart(dir string, gs []*group, kind string) (string, error) {
	names := phaseNames(gs)
	var bs []bars
	for i, g := range gs {
		vals := make([]float64, len(names))
		for j, name := range names {
			vals[j] = math.NaN()
			if st, ok := collect(g, name, func(p *results.Phase) (float64, bool) {
				if kind == "max" {
					return p.Gateway.GCPauseMax * 1e3, p.Gateway.GCCount > 0
				}
				return p.Gateway.GCPauseP99 * 1e3, p.Gateway.GCCount > 0
			}); ok {
				vals[j] = st.med
			}
		}
		bs = append(bs, bars{g.engine, colorOf(g.engine, i), vals})
	}
	return barChart(dir, "gc-pause-"+kind, "GC pause "+kind+" per phase (median over rounds)", "pause (ms)", names, bs, true)
}

// capacityChart: for workload wl, each step's achieved rate and p99 against its offered rate.
func capacityChart(dir string, gs []*group, wl string) (string, error) {
	rate := newPlot("Capacity search: "+wl, "", "achieved / s")
	p99 := newPlot("", "offered / s", "p99 (ms)")
	var entries []legendEntry
	var satMark *plotter.Scatter // the first saturated step's marker, for the legend
	maxOffered := 0.0
	anyLatency := false
	minP, maxP := math.Inf(1), math.Inf(-1)
	type stepPts struct {
		s        series
		lat      plotter.XYs
		sat      plotter.XYs // saturated steps: offered, achieved
		engine   string
		colorIdx int
	}
	var all []stepPts
	for i, g := range gs {
		var pts, lpts, sat plotter.XYs
		for _, p := range g.rep.r.Phases {
			if p.Workload != wl {
				continue
			}
			pts = append(pts, plotter.XY{X: p.Offered, Y: p.Achieved})
			if p.Saturated {
				sat = append(sat, plotter.XY{X: p.Offered, Y: p.Achieved})
			}
			maxOffered = math.Max(maxOffered, p.Offered)
			if p.Latency != nil && p.Latency.Count > 0 && p.Latency.P99 > 0 {
				lpts = append(lpts, plotter.XY{X: p.Offered, Y: p.Latency.P99})
				minP, maxP = math.Min(minP, p.Latency.P99), math.Max(maxP, p.Latency.P99)
				anyLatency = true
			}
		}
		slices.SortFunc(pts, func(a, b plotter.XY) int { return cmpFloat(a.X, b.X) })
		slices.SortFunc(lpts, func(a, b plotter.XY) int { return cmpFloat(a.X, b.X) })
		all = append(all, stepPts{series{g.engine, colorOf(g.engine, i), pts}, lpts, sat, g.engine, i})
	}
	if maxOffered == 0 {
		return "", skipf("no steps of %s were recorded", wl)
	}
	ideal, err := plotter.NewLine(plotter.XYs{{X: 0, Y: 0}, {X: maxOffered, Y: maxOffered}})
	if err != nil {
		return "", err
	}
	ideal.Color = color.Gray{Y: 0x99}
	ideal.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	rate.Add(ideal)
	entries = append(entries, legendEntry{"offered", ideal})
	logP := anyLatency && maxP/minP >= logSpanning
	for _, sp := range all {
		if len(sp.s.pts) == 0 {
			continue
		}
		l, sc, err := plotter.NewLinePoints(sp.s.pts)
		if err != nil {
			return "", err
		}
		l.Color, sc.Color, l.Width = sp.s.color, sp.s.color, lineWidth
		rate.Add(l, sc)
		entries = append(entries, legendEntry{sp.engine, l})
		if len(sp.sat) > 0 {
			x, err := plotter.NewScatter(sp.sat)
			if err != nil {
				return "", err
			}
			x.Color, x.Shape, x.Radius = sp.s.color, draw.CrossGlyph{}, vg.Points(5)
			rate.Add(x)
			if satMark == nil {
				satMark = x
			}
		}
		if len(sp.lat) > 0 {
			ll, lsc, err := plotter.NewLinePoints(sp.lat)
			if err != nil {
				return "", err
			}
			ll.Color, lsc.Color, ll.Width = sp.s.color, sp.s.color, lineWidth
			p99.Add(ll, lsc)
		}
	}
	if satMark != nil {
		mark := *satMark
		mark.Color = color.Black
		entries = append(entries, legendEntry{"SAT step", &mark})
	}
	rate.Y.Min, rate.X.Min = 0, 0
	p99.X.Min, p99.X.Max = rate.X.Min, rate.X.Max
	if !anyLatency {
		rate.X.Label.Text = "offered / s"
		return saveTiles([]*plot.Plot{rate}, entries, dir, "capacity-"+fileSafe(wl), chartH)
	}
	// The dashed line is the limit wl's steps were held to (its own: the broadcast's differs);
	// runs held to different limits get a line each. The legend says "p99 limit" (its value is
	// on the axis: a longer label does not fit the legend's column).
	var limits []float64
	for _, g := range gs {
		if c := g.rep.r.Capacity; c != nil && !slices.Contains(limits, c.LimitFor(wl)) {
			limits = append(limits, c.LimitFor(wl))
		}
	}
	for i, limit := range limits {
		ll, err := plotter.NewLine(plotter.XYs{{X: 0, Y: limit}, {X: maxOffered, Y: limit}})
		if err != nil {
			return "", err
		}
		ll.Color = color.RGBA{R: 0xcc, A: 0xff}
		ll.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
		p99.Add(ll)
		if i == 0 {
			entries = append(entries, legendEntry{"p99 limit", ll})
		}
		minP, maxP = math.Min(minP, limit), math.Max(maxP, limit)
	}
	if logP {
		p99.Y.Scale = plot.LogScale{}
		p99.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		p99.Y.Label.Text += " (log)"
		p99.Y.Min, p99.Y.Max = minP/1.5, maxP*1.5
	} else {
		p99.Y.Min = 0
	}
	return saveTiles([]*plot.Plot{rate, p99}, entries, dir, "capacity-"+fileSafe(wl), 14*vg.Centimeter)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// fanoutPhases are the phases whose deliveries/s over time are charted, in order.
var fanoutPhases = []string{results.PhasePush, "batch", results.PhaseGroup, phaseGroupAll, results.PhaseBroadcast}

// charts writes the charts section of plain runs.
func (w *writer) charts(gs []*group) {
	w.p("## Charts\n\n")
	var reps []string
	for _, g := range gs {
		reps = append(reps, fmt.Sprintf("%s round %d of %d (`%s`)", g.engine, g.rep.round, len(g.runs), g.rep.r.ID))
	}
	w.p("Bars are medians over the rounds. Lines over time show one run per engine, the one whose ramp connect rate is the median of its rounds: %s.\n\n",
		strings.Join(reps, ", "))
	var noSeries []string
	for _, g := range gs {
		has := false
		for _, p := range g.rep.r.Phases {
			if len(p.Series) > 0 {
				has = true
			}
		}
		if !has {
			noSeries = append(noSeries, g.engine)
		}
	}
	if len(noSeries) > 0 {
		w.p("_No per-second series in the run of %s (results written before series were recorded): no lines for %s over time._\n\n",
			strings.Join(noSeries, ", "), plural(len(noSeries), "it", "them"))
	}
	w.p("### Connections\n\n")
	w.chart("connections", func() (string, error) { return connectionsChart(w.chartDir, gs) })
	w.p("### Memory\n\n")
	w.chart("memory per connection", func() (string, error) { return memoryChart(w.chartDir, gs) })
	w.chart("RSS over time", func() (string, error) { return rssChart(w.chartDir, gs) })
	w.p("### Deliveries per second\n\n")
	names := phaseNames(gs)
	anyFanout := false
	for _, name := range fanoutPhases {
		if slices.Contains(names, name) {
			anyFanout = true
			w.chart("deliveries/s of "+name, func() (string, error) { return deliveriesChart(w.chartDir, gs, name) })
		}
	}
	if !anyFanout {
		w.p("_No push, group or broadcast phase ran: no deliveries charts._\n\n")
	}
	w.p("### Latency\n\n")
	anyLat := false
	for _, name := range []string{results.PhasePush, results.PhaseBroadcast} {
		if slices.Contains(names, name) {
			anyLat = true
			w.chart("latency of "+name, func() (string, error) { return latencyChart(w.chartDir, gs, name) })
		}
	}
	if !anyLat {
		w.p("_No push or broadcast phase ran: no latency charts._\n\n")
	}
	w.p("### GC pauses\n\n")
	w.p("Stop-the-world pauses of the gateways' garbage collector; no bar where no GC cycle ran in the phase.\n\n")
	w.chart("GC pause p99", func() (string, error) { return gcChart(w.chartDir, gs, "p99") })
	w.chart("GC pause max", func() (string, error) { return gcChart(w.chartDir, gs, "max") })
}
