package tui

import (
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
)

// TestLineChartFitsAndLeavesGaps draws a series with a run of unknown values in its middle and
// checks the chart fills its box exactly, labels the y axis up to the largest value (with
// headroom) and leaves the unknown run blank instead of bridging it.
func TestLineChartFitsAndLeavesGaps(t *testing.T) {
	var pts []Point
	for i := range 61 {
		v := Num(100)
		if i > 20 && i < 40 {
			v = unknown
		}
		pts = append(pts, Point{At: t0.Add(time.Duration(i) * time.Second), V: v})
	}
	const w, h = 50, 8
	out := lineChart([][]Point{pts}, []lipgloss.Style{styleSeriesA}, w, h, func(v float64) string { return fmtCount(Num(v)) })
	lines := strings.Split(out, "\n")
	if len(lines) != h {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), h, out)
	}
	for i, l := range lines {
		if lw := lipgloss.Width(l); lw > w {
			t.Errorf("line %d is %d wide, want at most %d: %q", i, lw, w, l)
		}
	}
	if !strings.HasPrefix(ansi.Strip(lines[0]), "110") {
		t.Errorf("top y label: %q, want 110 (the largest value and 10%% headroom)", ansi.Strip(lines[0]))
	}
	if !strings.Contains(ansi.Strip(lines[h-1]), "01:00:00") {
		t.Errorf("x labels: %q, want the first time", ansi.Strip(lines[h-1]))
	}
	// The plot's columns: the y labels take 3 cells and the axis 1; the series' 60 seconds span
	// the other 46, so the unknown run (21..39 s) covers about columns 16..30 of the plot.
	plotted := make([]bool, w)
	for _, l := range lines[:h-2] {
		for i, r := range []rune(ansi.Strip(l)) {
			if r >= 0x2801 && r <= 0x28ff {
				plotted[i] = true
			}
		}
	}
	for _, col := range []int{4 + 5, 4 + 40} {
		if !plotted[col] {
			t.Errorf("column %d is blank, want the series drawn there:\n%s", col, ansi.Strip(out))
		}
	}
	for col := 4 + 18; col <= 4+28; col++ {
		if plotted[col] {
			t.Errorf("column %d is drawn, want the gap of unknown values blank:\n%s", col, ansi.Strip(out))
		}
	}

	if s := lineChart([][]Point{{{At: t0, V: unknown}}}, nil, w, h, fmtMs); !strings.Contains(s, "no data yet") {
		t.Errorf("no known values: %q", s)
	}
	if s := lineChart([][]Point{pts}, nil, 8, 3, fmtMs); !strings.Contains(s, "too small") {
		t.Errorf("a box too small: %q", s)
	}
}
