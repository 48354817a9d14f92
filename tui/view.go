package tui

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
)

var (
	styleTitle    = lipgloss.NewStyle().Bold(true)
	styleTab      = lipgloss.NewStyle().Faint(true)
	styleTabOn    = lipgloss.NewStyle().Bold(true).Reverse(true)
	styleHead     = lipgloss.NewStyle().Bold(true).Underline(true)
	styleFaint    = lipgloss.NewStyle().Faint(true)
	styleWarn     = lipgloss.NewStyle().Foreground(lipgloss.Color("3"))
	styleBad      = lipgloss.NewStyle().Foreground(lipgloss.Color("1")).Bold(true)
	styleGood     = lipgloss.NewStyle().Foreground(lipgloss.Color("2"))
	stylePaused   = lipgloss.NewStyle().Bold(true).Reverse(true).Foreground(lipgloss.Color("3"))
	styleSeriesA  = lipgloss.NewStyle().Foreground(lipgloss.Color("6"))
	styleSeriesB  = lipgloss.NewStyle().Foreground(lipgloss.Color("5"))
	styleChartBox = lipgloss.NewStyle().Faint(true)
)

// View implements tea.Model: a header with the tabs, the current view, the event line and the
// key help, cut to the terminal's size.
func (m *Model) View() string {
	w, h := max(m.width, 20), max(m.height, 5)
	body := h - 3 // header, event line, help line
	var lines []string
	lines = append(lines, m.header(w))
	var content string
	switch m.view {
	case ViewOverview:
		content = m.viewOverview(w)
	case ViewCharts:
		content = m.viewCharts(w, body)
	case ViewLoadgen:
		content = m.viewLoadgen(w)
	case ViewEvents:
		content = m.viewEvents(body)
	}
	cl := strings.Split(strings.TrimRight(content, "\n"), "\n")
	if len(cl) > body {
		cl = append(cl[:body-1], styleFaint.Render(fmt.Sprintf("… %d more lines (a taller terminal shows them)", len(cl)-body+1)))
	}
	for len(cl) < body {
		cl = append(cl, "")
	}
	lines = append(lines, cl...)
	help := m.help
	help.Width = w
	lines = append(lines, m.eventLine(), help.ShortHelpView(keys.ShortHelp()))
	for i, l := range lines {
		lines[i] = lipgloss.NewStyle().MaxWidth(w).Render(l)
	}
	return strings.Join(lines, "\n")
}

func (m *Model) header(w int) string {
	var b strings.Builder
	b.WriteString(styleTitle.Render("pushwire") + " ")
	for v := View(0); v < numViews; v++ {
		if v == m.view {
			b.WriteString(styleTabOn.Render("[" + v.String() + "]"))
		} else {
			b.WriteString(styleTab.Render(" " + v.String() + " "))
		}
	}
	t := m.totals
	right := fmt.Sprintf("%d/%d up", t.Up, t.Instances)
	if t.Draining > 0 {
		right += fmt.Sprintf(" (%d draining)", t.Draining)
	}
	if !m.updated.IsZero() {
		right += " · " + m.updated.Format("15:04:05")
	} else {
		right += " · waiting"
	}
	if m.paused {
		right = stylePaused.Render("PAUSED") + " " + right
	}
	left := b.String()
	gap := w - lipgloss.Width(left) - lipgloss.Width(right)
	if gap < 1 {
		gap = 1
	}
	return left + strings.Repeat(" ", gap) + right
}

func (m *Model) eventLine() string {
	if len(m.events) == 0 {
		return styleFaint.Render("no events yet")
	}
	return renderEvent(m.events[len(m.events)-1])
}

func renderEvent(e Event) string {
	s := e.At.Format("15:04:05") + " " + e.Text
	if e.Warn {
		return styleWarn.Render("! " + s)
	}
	return "· " + s
}

func stateText(s State, pad int) string {
	txt := fmt.Sprintf("%-*s", pad, s.String())
	switch s {
	case StateServing:
		return styleGood.Render(txt)
	case StateDraining:
		return styleWarn.Render(txt)
	case StateDown:
		return styleBad.Render(txt)
	case StateWaiting:
		return styleFaint.Render(txt)
	}
	return txt
}

// cut shortens s (which may hold ANSI styles) to n cells, ending it with "…" when cut.
func cut(s string, n int) string {
	return ansi.Truncate(s, n, "…")
}

// wideWidth is the terminal width from which the overview is one table instead of two.
const wideWidth = 126

func (m *Model) viewOverview(w int) string {
	if w >= wideWidth {
		return m.viewOverviewWide(w)
	}
	var b strings.Builder
	t := m.totals
	fmt.Fprintf(&b, "%s\n", styleHead.Render(fmt.Sprintf("%-12s %-6s %-5s %-8s %8s %8s %8s %9s", "INSTANCE", "ENGINE", "TRANS", "STATE", "CONNS", "CONN/s", "REQ/s", "DELIV/s")))
	for _, in := range m.insts {
		r := in.row
		fmt.Fprintf(&b, "%-12s %-6s %-5s %s %8s %8s %8s %9s", cut(r.Name(), 12), cut(dash(r.Engine), 6), cut(dash(r.Transport), 5),
			stateText(r.State, 8), fmtCount(r.Conns), fmtRate(r.ConnectsPS), fmtRate(r.RequestsPS), fmtRate(r.DeliveriesPS))
		if r.State == StateDown && r.Err != "" && w >= 80 {
			b.WriteString(" " + styleFaint.Render(cut(strings.TrimPrefix(r.Err, "connection "), max(w-72, 4))))
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "%s\n\n", styleTitle.Render(fmt.Sprintf("%-12s %-21s %8s %8s %8s %9s", "total", fmt.Sprintf("%d/%d up", t.Up, t.Instances),
		fmtCount(t.Conns), fmtRate(t.ConnectsPS), fmtRate(t.RequestsPS), fmtRate(t.DeliveriesPS))))

	fmt.Fprintf(&b, "%s\n", styleHead.Render(fmt.Sprintf("%-12s %8s %9s %8s %8s %8s %7s", "INSTANCE", "RSS", "RSS/CONN", "HEAP", "GOROUT", "GC P99", "GC CPU")))
	for _, in := range m.insts {
		r := in.row
		fmt.Fprintf(&b, "%-12s %8s %9s %8s %8s %8s %7s\n", cut(r.Name(), 12), fmtBytes(r.RSS), rssPerConn(r), fmtBytes(r.Heap),
			fmtCount(r.Goroutines), fmtSeconds(r.GCPauseP99), fmtShare(r.GCCPUShare))
	}
	fmt.Fprintf(&b, "%s\n", styleTitle.Render(fmt.Sprintf("%-12s %8s %9s %8s %8s %8s %7s", "total", fmtBytes(t.RSS), "", fmtBytes(t.Heap),
		fmtCount(t.Goroutines), fmtSeconds(t.GCPauseP99), fmtShare(t.GCCPUShare))))
	m.grossNote(&b)
	if m.lg != nil {
		b.WriteString("\n" + m.loadgenSummary(w))
	}
	return b.String()
}

// viewOverviewWide is the overview as one table, for terminals at least wideWidth wide.
func (m *Model) viewOverviewWide(w int) string {
	var b strings.Builder
	t := m.totals
	const row = "%-14s %-11s %s %8s %8s %8s %9s %8s %9s %8s %7s %8s %7s"
	fmt.Fprintf(&b, "%s\n", styleHead.Render(fmt.Sprintf(row, "INSTANCE", "ENGINE/TR", fmt.Sprintf("%-8s", "STATE"), "CONNS", "CONN/s", "REQ/s", "DELIV/s",
		"RSS", "RSS/CONN", "HEAP", "GOROUT", "GC P99", "GC CPU")))
	for _, in := range m.insts {
		r := in.row
		et := "-"
		if r.Engine != "" {
			et = r.Engine + "/" + r.Transport
		}
		fmt.Fprintf(&b, row, cut(r.Name(), 14), cut(et, 11), stateText(r.State, 8), fmtCount(r.Conns), fmtRate(r.ConnectsPS),
			fmtRate(r.RequestsPS), fmtRate(r.DeliveriesPS), fmtBytes(r.RSS), rssPerConn(r), fmtBytes(r.Heap),
			fmtCount(r.Goroutines), fmtSeconds(r.GCPauseP99), fmtShare(r.GCCPUShare))
		if r.State == StateDown && r.Err != "" {
			b.WriteString(" " + styleFaint.Render(cut(strings.TrimPrefix(r.Err, "connection "), max(w-wideWidth, 8))))
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "%s\n", styleTitle.Render(fmt.Sprintf(row, "total", fmt.Sprintf("%d/%d up", t.Up, t.Instances), fmt.Sprintf("%-8s", ""),
		fmtCount(t.Conns), fmtRate(t.ConnectsPS), fmtRate(t.RequestsPS), fmtRate(t.DeliveriesPS), fmtBytes(t.RSS), "", fmtBytes(t.Heap),
		fmtCount(t.Goroutines), fmtSeconds(t.GCPauseP99), fmtShare(t.GCCPUShare))))
	m.grossNote(&b)
	if m.lg != nil {
		b.WriteString("\n" + m.loadgenSummary(w))
	}
	return b.String()
}

// rssPerConn formats a row's RSS per connection, starred when it includes the process's own RSS.
func rssPerConn(r Row) string {
	if r.RSSPerConnGross && r.RSSPerConn.Known() {
		return fmtBytes(r.RSSPerConn) + "*"
	}
	return fmtBytes(r.RSSPerConn)
}

// grossNote explains the star of rssPerConn when a row has one.
func (m *Model) grossNote(b *strings.Builder) {
	for _, in := range m.insts {
		if in.row.RSSPerConnGross && in.row.RSSPerConn.Known() {
			b.WriteString(styleFaint.Render("* RSS/conn includes the process's own RSS: never seen with 0 connections") + "\n")
			return
		}
	}
}

func (m *Model) loadgenSummary(w int) string {
	lg := m.lg
	s := lg.Sample
	if lg.State == StateWaiting {
		return styleHead.Render("LOADGEN") + " waiting for " + lg.URL + "\n"
	}
	if lg.State == StateDown {
		return styleHead.Render("LOADGEN") + " " + stateText(StateDown, 4) + " " + styleFaint.Render(lg.Err) + "\n"
	}
	pct := 0.0
	if s.Target > 0 {
		pct = math.Min(s.Connected/s.Target, 1)
	}
	line1 := fmt.Sprintf("%s %-9s connected %s/%s %s %3.0f%%", styleHead.Render("LOADGEN"), dash(s.Phase),
		fmtCount(Num(s.Connected)), fmtCount(Num(s.Target)), bar(pct, max(min(w-52, 30), 10)), pct*100)
	line2 := fmt.Sprintf("        e2e p50 %s  p99 %s · errors %s · reconnects %s · deliv/s %s",
		fmtSeconds(s.P50), fmtSeconds(s.P99), fmtCount(Num(sum(s.Errors))), fmtCount(Num(sum(s.Reconnects))), fmtRate(lg.DeliveredPS))
	return line1 + "\n" + line2 + "\n"
}

func (m *Model) viewLoadgen(w int) string {
	if m.lg == nil {
		return "No load generator target: start the dashboard with --loadgen http://host:port/metrics\n" +
			"(pushwire loadgen --metrics 127.0.0.1:PORT, or pushwire bench --loadgen-metrics 127.0.0.1:PORT)."
	}
	lg := m.lg
	s := lg.Sample
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s  %s\n", styleHead.Render("LOAD GENERATOR"), lg.URL, stateText(lg.State, 7))
	if lg.State == StateDown {
		fmt.Fprintf(&b, "down: %s\n", lg.Err)
	}
	if lg.State == StateWaiting {
		return b.String()
	}
	pct := 0.0
	if s.Target > 0 {
		pct = math.Min(s.Connected/s.Target, 1)
	}
	fmt.Fprintf(&b, "phase %-10s connected %s / target %s\n%s %3.0f%%\n", dash(s.Phase), fmtCount(Num(s.Connected)), fmtCount(Num(s.Target)),
		bar(pct, max(min(w-10, 60), 10)), pct*100)
	fmt.Fprintf(&b, "connects/s %s · delivered/s %s · reconnects/s %s\n", fmtRate(lg.ConnectsPS), fmtRate(lg.DeliveredPS), fmtRate(lg.ReconnectsPS))
	fmt.Fprintf(&b, "end-to-end latency (last window): p50 %s  p90 %s  p99 %s\n\n", fmtSeconds(s.P50), fmtSeconds(s.P90), fmtSeconds(s.P99))

	left := reasonTable("ERRORS", s.Errors, lg.ErrorsPS)
	right := reasonTable("RECONNECTS", s.Reconnects, lg.ReconnectsByReasonPS)
	if w >= 72 {
		b.WriteString(lipgloss.JoinHorizontal(lipgloss.Top, left, "    ", right) + "\n")
	} else {
		b.WriteString(left + "\n" + right + "\n")
	}
	b.WriteString("\n" + reasonTable("DISCONNECTS", s.Disconnects, lg.DisconnectsByReasonPS))
	return b.String()
}

// reasonTable renders counts by reason, largest first, with rates when given.
func reasonTable(title string, counts, rates map[string]float64) string {
	var b strings.Builder
	b.WriteString(styleHead.Render(fmt.Sprintf("%-20s %8s %7s", title+" BY REASON", "TOTAL", "/s")))
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return counts[keys[i]] > counts[keys[j]] || (counts[keys[i]] == counts[keys[j]] && keys[i] < keys[j])
	})
	if len(keys) == 0 {
		b.WriteString("\n" + styleFaint.Render(fmt.Sprintf("%-20s %8s %7s", "none", "0", "")))
	}
	for _, k := range keys {
		r := unknown
		if v, ok := rates[k]; ok {
			r = Num(v)
		}
		fmt.Fprintf(&b, "\n%-20s %8s %7s", cut(k, 20), fmtCount(Num(counts[k])), fmtRate(r))
	}
	return b.String()
}

func (m *Model) viewEvents(body int) string {
	if len(m.events) == 0 {
		return styleFaint.Render("No events yet: instances appearing, going down, draining, error bursts show here.")
	}
	ev := m.events
	if len(ev) > body {
		ev = ev[len(ev)-body:]
	}
	var b strings.Builder
	for _, e := range ev {
		b.WriteString(renderEvent(e) + "\n")
	}
	return b.String()
}

// chartSpec is one chart of the charts view.
type chartSpec struct {
	title  string
	series []string
	styles []lipgloss.Style
	format func(float64) string
}

func (m *Model) viewCharts(w, body int) string {
	specs := []chartSpec{
		{"connections", []string{SeriesConns}, []lipgloss.Style{styleSeriesA}, func(v float64) string { return fmtCount(Num(v)) }},
		{"deliveries/s", []string{SeriesDeliveries}, []lipgloss.Style{styleSeriesA}, func(v float64) string { return fmtRate(Num(v)) }},
		{"e2e latency ms " + styleSeriesA.Render("p50") + " " + styleSeriesB.Render("p99"), []string{SeriesP50, SeriesP99},
			[]lipgloss.Style{styleSeriesA, styleSeriesB}, fmtMs},
		{"GC pause p99 ms", []string{SeriesGCPause}, []lipgloss.Style{styleSeriesA}, fmtMs},
	}
	cols := 2
	if w < 60 {
		cols = 1
	}
	rows := (len(specs) + cols - 1) / cols
	cw := w/cols - 2
	ch := body/rows - 1 // a title line per chart
	if cw < 16 || ch < 3 {
		return "The terminal is too small for the charts: make it at least 40×12."
	}
	var grid []string
	for r := 0; r < rows; r++ {
		var cells []string
		for c := 0; c < cols; c++ {
			i := r*cols + c
			if i >= len(specs) {
				break
			}
			cells = append(cells, m.chart(specs[i], cw, ch))
			if c < cols-1 {
				cells = append(cells, "  ")
			}
		}
		grid = append(grid, lipgloss.JoinHorizontal(lipgloss.Top, cells...))
	}
	return strings.Join(grid, "\n")
}

// chart draws one chart of the kept series, its title showing the last values.
func (m *Model) chart(spec chartSpec, w, h int) string {
	last := ""
	series := make([][]Point, len(spec.series))
	for i, name := range spec.series {
		pts := m.series[name]
		series[i] = pts
		if i > 0 {
			last += "/"
		}
		if n := len(pts); n > 0 && pts[n-1].V.Known() {
			last += spec.format(float64(pts[n-1].V))
		} else {
			last += "-"
		}
	}
	title := cut(spec.title, w) + " " + styleTitle.Render(last)
	return lipgloss.NewStyle().Width(w).Render(title + "\n" + lineChart(series, spec.styles, w, h, spec.format))
}

// Formatting. NaN (not known yet) shows as "-".

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func fmtCount(n Num) string {
	if !n.Known() {
		return "-"
	}
	v := float64(n)
	switch {
	case math.Abs(v) >= 10e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case math.Abs(v) >= 100e3:
		return fmt.Sprintf("%.0fk", v/1e3)
	}
	return fmt.Sprintf("%.0f", v)
}

func fmtRate(n Num) string {
	if !n.Known() {
		return "-"
	}
	v := float64(n)
	switch {
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%.2fM", v/1e6)
	case math.Abs(v) >= 10e3:
		return fmt.Sprintf("%.1fk", v/1e3)
	case math.Abs(v) >= 100 || v == 0:
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.1f", v)
}

func fmtBytes(n Num) string {
	if !n.Known() {
		return "-"
	}
	v := float64(n)
	neg := ""
	if v < 0 {
		neg, v = "-", -v
	}
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%s%.2fG", neg, v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%s%.1fM", neg, v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%s%.1fK", neg, v/(1<<10))
	}
	return fmt.Sprintf("%s%.0fB", neg, v)
}

func fmtSeconds(n Num) string {
	if !n.Known() {
		return "-"
	}
	v := float64(n)
	switch {
	case v >= 1:
		return fmt.Sprintf("%.2fs", v)
	case v >= 1e-3:
		return fmt.Sprintf("%.1fms", v*1e3)
	}
	return fmt.Sprintf("%.0fµs", v*1e6)
}

func fmtMs(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 1:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}

func fmtShare(n Num) string {
	if !n.Known() {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", float64(n)*100)
}
