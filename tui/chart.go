package tui

import (
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
)

// The charts are drawn here in braille (2×4 dots per cell) rather than with ntcharts: ntcharts
// v0.5.0 needs github.com/lrstanley/bubblezone, which go.sum does not list, and go.sum is pinned.

// brailleDot[x][y] is the dot bit of column x (0..1), row y (0..3) of a braille cell.
var brailleDot = [2][4]uint8{{0x01, 0x02, 0x04, 0x40}, {0x08, 0x10, 0x20, 0x80}}

// lineChart draws series (points in time order; unknown values leave gaps) in a w×h box: a y axis
// with labels formatted by yfmt on the left, the plot, and the time range on the bottom line.
// Series drawn later are painted over earlier ones where they share a cell.
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
	if !maxT.After(minT) {
		maxT = minT.Add(time.Second)
	}
	if maxV <= 0 {
		maxV = 1
	}
	maxV *= 1.1
	labels := []string{yfmt(maxV), yfmt(maxV / 2), yfmt(0)}
	lw := 0
	for _, l := range labels {
		lw = max(lw, lipgloss.Width(l))
	}
	pw, ph := w-lw-1, h-1
	if pw < 4 || ph < 1 {
		return styleFaint.Render("too small")
	}
	dw, dh := pw*2, ph*4
	masks := make([]uint8, pw*ph)
	owner := make([]int, pw*ph)
	set := func(x, y, si int) {
		if x < 0 || x >= dw || y < 0 || y >= dh {
			return
		}
		row := ph - 1 - y/4 // y counts up from the bottom
		i := row*pw + x/2
		masks[i] |= brailleDot[x%2][3-y%4]
		owner[i] = si
	}
	span := maxT.Sub(minT).Seconds()
	for si, s := range series {
		px, py, have := 0, 0, false
		for _, p := range s {
			if !p.V.Known() {
				have = false
				continue
			}
			x := int(math.Round(p.At.Sub(minT).Seconds() / span * float64(dw-1)))
			y := int(math.Round(float64(p.V) / maxV * float64(dh-1)))
			if have {
				line(px, py, x, y, func(x, y int) { set(x, y, si) })
			} else {
				set(x, y, si)
			}
			px, py, have = x, y, true
		}
	}
	var b strings.Builder
	for row := 0; row < ph; row++ {
		label := ""
		switch {
		case row == 0:
			label = labels[0]
		case row == ph-1:
			label = labels[2]
		case ph >= 5 && row == ph/2:
			label = labels[1]
		}
		b.WriteString(styleFaint.Render(strings.Repeat(" ", lw-lipgloss.Width(label)) + label + "┤"))
		for col := 0; col < pw; col++ {
			i := row*pw + col
			if masks[i] == 0 {
				b.WriteByte(' ')
				continue
			}
			r := string(rune(0x2800 + int(masks[i])))
			if owner[i] < len(styles) {
				r = styles[owner[i]].Render(r)
			}
			b.WriteString(r)
		}
		b.WriteByte('\n')
	}
	from, to := minT.Format("15:04:05"), maxT.Format("15:04:05")
	gap := pw - len(from) - len(to)
	axis := strings.Repeat(" ", lw) + "└"
	if gap >= 1 {
		axis += from + strings.Repeat("─", gap) + to
	} else {
		axis += to
	}
	b.WriteString(styleFaint.Render(axis))
	return b.String()
}

// line calls plot for each point of the segment from (x0,y0) to (x1,y1) (Bresenham).
func line(x0, y0, x1, y1 int, plot func(x, y int)) {
	dx, dy := abs(x1-x0), -abs(y1-y0)
	sx, sy := 1, 1
	if x0 > x1 {
		sx = -1
	}
	if y0 > y1 {
		sy = -1
	}
	e := dx + dy
	for {
		plot(x0, y0)
		if x0 == x1 && y0 == y1 {
			return
		}
		e2 := 2 * e
		if e2 >= dy {
			e += dy
			x0 += sx
		}
		if e2 <= dx {
			e += dx
			y0 += sy
		}
	}
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// bar is a progress bar of width cells filled to share (0..1).
func bar(share float64, width int) string {
	share = math.Max(0, math.Min(1, share))
	full := int(math.Round(share * float64(width)))
	return styleGood.Render(strings.Repeat("█", full)) + styleFaint.Render(strings.Repeat("░", width-full))
}
