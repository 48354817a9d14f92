package tui

import (
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/NimbleMarkets/ntcharts/linechart/timeserieslinechart"
	"github.com/charmbracelet/lipgloss"
)

// lineChart draws series (points in time order; unknown values leave gaps) in a w×h box with
// ntcharts' time-series line chart in braille runes: a y axis from 0 with labels formatted by
// yfmt on the left, the plot, and clock times under the x axis. Series drawn later are drawn over
// earlier ones where they share a cell (braille dots of both are kept, in the later style).
//
// The chart is built afresh from the kept points at every render: the points are few (the
// model keeps cfg.History per series) and the y range follows the largest value on screen.
// ntcharts places points by whole seconds, so with a polling interval under a second several
// points can share an x position.
func lineChart(series [][]Point, styles []lipgloss.Style, w, h int, yfmt func(float64) string) string {
	var minT, maxT time.Time
	maxV := 0.0
	for _, s := range series {
		for _, p := range s {
			if !p.V.Known() {
				continue
			}
			if minT.IsZero() || p.At.Before(minT) {
				minT = p.At
			}
			if p.At.After(maxT) {
				maxT = p.At
			}
			maxV = math.Max(maxV, float64(p.V))
		}
	}
	if minT.IsZero() {
		return styleFaint.Render("no data yet")
	}
	minT = minT.Truncate(time.Second)
	if maxT.Unix() <= minT.Unix() {
		maxT = minT.Add(time.Second)
	}
	if maxV <= 0 {
		maxV = 1
	}
	maxV *= 1.1
	if w < 12 || h < 4 {
		return styleFaint.Render("too small")
	}
	// Labels: on the y axis the bottom, the top and, when the plot is an even number of rows
	// high, the middle; under the x axis a clock time about every 12 columns.
	ystep := h - 2 // the plot's height: ntcharts keeps the last two rows for the x axis
	if ystep%2 == 0 {
		ystep /= 2
	}
	c := timeserieslinechart.New(w, h,
		timeserieslinechart.WithXYSteps(12, ystep),
		timeserieslinechart.WithXLabelFormatter(func(_ int, v float64) string {
			return time.Unix(int64(v), 0).In(minT.Location()).Format("15:04:05")
		}),
		timeserieslinechart.WithYLabelFormatter(func(_ int, v float64) string { return yfmt(v) }),
		timeserieslinechart.WithAxesStyles(styleChartBox, styleFaint),
		timeserieslinechart.WithYRange(0, maxV),
		timeserieslinechart.WithTimeRange(minT, maxT),
	)
	// A series becomes one data set per run of known values, so an unknown value leaves a gap
	// instead of a line bridging it.
	var names []string
	for si, s := range series {
		seg := 0
		open := false
		for _, p := range s {
			if !p.V.Known() {
				if open {
					seg++
					open = false
				}
				continue
			}
			name := strconv.Itoa(si) + "." + strconv.Itoa(seg)
			if !open {
				names = append(names, name)
				if si < len(styles) {
					c.SetDataSetStyle(name, styles[si])
				}
				open = true
			}
			c.PushDataSet(name, timeserieslinechart.TimePoint{Time: p.At, Value: float64(p.V)})
		}
	}
	c.DrawBrailleDataSets(names)
	return strings.TrimRight(c.View(), "\n")
}

// bar is a progress bar of width cells filled to share (0..1).
func bar(share float64, width int) string {
	share = math.Max(0, math.Min(1, share))
	full := int(math.Round(share * float64(width)))
	return styleGood.Render(strings.Repeat("█", full)) + styleFaint.Render(strings.Repeat("░", width-full))
}
