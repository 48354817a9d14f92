package tui

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
)

var t0 = time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC)

func keyMsg(s string) tea.KeyMsg {
	switch s {
	case "tab":
		return tea.KeyMsg{Type: tea.KeyTab}
	case "shift+tab":
		return tea.KeyMsg{Type: tea.KeyShiftTab}
	case "left":
		return tea.KeyMsg{Type: tea.KeyLeft}
	case "right":
		return tea.KeyMsg{Type: tea.KeyRight}
	case "ctrl+c":
		return tea.KeyMsg{Type: tea.KeyCtrlC}
	}
	return tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(s)}
}

func newTestModel(t *testing.T, gateways int, loadgen bool) *Model {
	t.Helper()
	cfg := Config{OutDir: t.TempDir()}
	for i := range gateways {
		cfg.Gateways = append(cfg.Gateways, "http://127.0.0.1:"+string(rune('1'+i))+"000/metrics")
	}
	if loadgen {
		cfg.Loadgen = "http://127.0.0.1:7190/metrics"
	}
	return NewModel(cfg, nil)
}

func gw(node string, conns, logins, delivered float64) *GatewaySample {
	return &GatewaySample{Node: node, Engine: "std", Transport: "tcp", Conns: conns, Sessions: conns, Logins: logins,
		Delivered: delivered, RSS: 10e6 + conns*2048, Heap: 4e6, Goroutines: 10 + conns, GOMAXPROCS: 2}
}

func up(g *GatewaySample, at time.Time) Scrape { return Scrape{At: at, Gateway: g} }

func down(at time.Time) Scrape {
	return Scrape{At: at, Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
}

func snap(at time.Time, gws ...Scrape) snapshotMsg { return snapshotMsg{At: at, Gateways: gws} }

func lastEvent(m *Model) string {
	ev := m.Events()
	if len(ev) == 0 {
		return ""
	}
	return ev[len(ev)-1].Text
}

func TestKeysSwitchViewsAndQuit(t *testing.T) {
	m := newTestModel(t, 1, false)
	steps := []struct {
		key  string
		want View
	}{
		{"tab", ViewCharts}, {"right", ViewLoadgen}, {"l", ViewEvents}, {"tab", ViewOverview},
		{"shift+tab", ViewEvents}, {"left", ViewLoadgen}, {"h", ViewCharts}, {"1", ViewOverview}, {"4", ViewEvents},
		{"x", ViewEvents}, // unbound: nothing changes
	}
	for _, s := range steps {
		_, cmd := m.Update(keyMsg(s.key))
		if cmd != nil {
			t.Errorf("%s: unexpected command", s.key)
		}
		if m.CurrentView() != s.want {
			t.Fatalf("after %s: view %v, want %v", s.key, m.CurrentView(), s.want)
		}
	}
	for _, k := range []string{"q", "ctrl+c"} {
		_, cmd := m.Update(keyMsg(k))
		if cmd == nil {
			t.Fatalf("%s: no command", k)
		}
		if _, ok := cmd().(tea.QuitMsg); !ok {
			t.Errorf("%s: command is not tea.Quit", k)
		}
	}
}

func TestPauseFreezesFiguresButKeepsListening(t *testing.T) {
	ch := make(chan Snapshot, 1)
	m := NewModel(Config{Gateways: []string{"http://a/metrics"}}, ch)
	_, cmd := m.Update(snap(t0, up(gw("gw0", 100, 100, 0), t0)))
	if cmd == nil {
		t.Fatal("snapshot command not re-armed")
	}
	m.Update(keyMsg("p"))
	if !m.Paused() {
		t.Fatal("p did not pause")
	}
	_, cmd = m.Update(snap(t0.Add(time.Second), up(gw("gw0", 250, 250, 0), t0.Add(time.Second))))
	if cmd == nil {
		t.Fatal("snapshot command not re-armed while paused")
	}
	if got := m.Rows()[0].Conns; got != 100 {
		t.Errorf("paused: conns %v, want the frozen 100", got)
	}
	if !strings.Contains(m.View(), "PAUSED") {
		t.Error("view does not say PAUSED")
	}
	m.Update(keyMsg("p"))
	m.Update(snap(t0.Add(2*time.Second), up(gw("gw0", 300, 300, 0), t0.Add(2*time.Second))))
	if got := m.Rows()[0].Conns; got != 300 || m.Paused() {
		t.Errorf("resumed: conns %v paused %v", got, m.Paused())
	}
	// The re-armed command delivers the next snapshot from the channel.
	ch <- Snapshot{At: t0}
	if _, ok := cmd().(snapshotMsg); !ok {
		t.Error("the command did not deliver a snapshot")
	}
	close(ch)
	if _, ok := cmd().(sourceClosedMsg); !ok {
		t.Error("closed source not reported")
	}
}

func TestRatesFromCounters(t *testing.T) {
	m := newTestModel(t, 1, false)
	a := gw("gw0", 100, 100, 1000)
	a.Requests, a.GCCPU = 50, 1.0
	m.Update(snap(t0, up(a, t0)))
	r := m.Rows()[0]
	if r.ConnectsPS.Known() || r.DeliveriesPS.Known() || r.GCCPUShare.Known() {
		t.Errorf("first scrape has rates: %+v", r)
	}
	b := gw("gw0", 300, 300, 1600)
	b.Requests, b.GCCPU = 350, 1.2
	m.Update(snap(t0.Add(2*time.Second), up(b, t0.Add(2*time.Second))))
	r = m.Rows()[0]
	for name, c := range map[string][2]float64{
		"connects/s":   {float64(r.ConnectsPS), 100},
		"requests/s":   {float64(r.RequestsPS), 150},
		"deliveries/s": {float64(r.DeliveriesPS), 300},
		// 0.2 GC CPU-seconds over 2 s × GOMAXPROCS 2 (no /cpu/classes/total exported)
		"gc cpu share": {float64(r.GCCPUShare), 0.05},
	} {
		if math.Abs(c[0]-c[1]) > 1e-9 {
			t.Errorf("%s = %v, want %v", name, c[0], c[1])
		}
	}
	// With the runtime's total exported, it is the denominator.
	c := gw("gw0", 300, 300, 1600)
	c.GCCPU, c.TotalCPU = 1.3, 10
	m.Update(snap(t0.Add(3*time.Second), up(c, t0.Add(3*time.Second))))
	d := gw("gw0", 300, 300, 1600)
	d.GCCPU, d.TotalCPU = 1.5, 14
	m.Update(snap(t0.Add(5*time.Second), up(d, t0.Add(5*time.Second))))
	if got := float64(m.Rows()[0].GCCPUShare); math.Abs(got-0.05) > 1e-9 {
		t.Errorf("gc cpu share over total = %v, want 0.05", got)
	}
	// A counter that goes down (restart) counts from zero.
	if got := rate(1000, 30, 1); got != 30 {
		t.Errorf("rate after a reset = %v", got)
	}
}

func TestRatesFromCapturedPages(t *testing.T) {
	m := newTestModel(t, 1, true)
	g1 := gatewaySample(readFamilies(t, "gateway-push.txt"))
	g2 := gatewaySample(readFamilies(t, "gateway-push-1s.txt"))
	l1 := loadgenSample(readFamilies(t, "loadgen-push.txt"))
	l2 := loadgenSample(readFamilies(t, "loadgen-push-1s.txt"))
	m.Update(snapshotMsg{At: t0, Gateways: []Scrape{up(&g1, t0)}, Loadgen: &Scrape{At: t0, Loadgen: &l1}})
	t1 := t0.Add(time.Second)
	m.Update(snapshotMsg{At: t1, Gateways: []Scrape{up(&g2, t1)}, Loadgen: &Scrape{At: t1, Loadgen: &l2}})
	r := m.Rows()[0]
	if want := g2.Delivered - g1.Delivered; float64(r.DeliveriesPS) != want || want <= 0 {
		t.Errorf("deliveries/s %v, want %v", r.DeliveriesPS, want)
	}
	if r.State != StateServing || r.Node != "gw0" || r.Conns != 300 || !r.GCPauseP99.Known() || !r.RSSPerConn.Known() || !r.RSSPerConnGross {
		t.Errorf("row %+v", r)
	}
	lg := m.Loadgen()
	if lg.State != StateServing || float64(lg.DeliveredPS) != l2.Delivered-l1.Delivered || lg.Sample.Phase != "push" {
		t.Errorf("loadgen %+v", lg)
	}
	if tot := m.Totals(); tot.Up != 1 || tot.Conns != 300 || tot.DeliveriesPS != r.DeliveriesPS {
		t.Errorf("totals %+v", tot)
	}
}

func TestDownDetectionAndEvents(t *testing.T) {
	m := newTestModel(t, 2, false)
	// gw1 was never up: "unreachable", once.
	m.Update(snap(t0, up(gw("gw0", 10, 10, 0), t0), down(t0)))
	if r := m.Rows(); r[0].State != StateServing || r[1].State != StateDown || r[1].Err != "connection refused" {
		t.Fatalf("rows %+v", r)
	}
	ev := m.Events()
	if len(ev) != 2 || ev[0].Text != "gw0 appeared (std/tcp, serving)" || !strings.Contains(ev[1].Text, "unreachable: connection refused") || !ev[1].Warn {
		t.Fatalf("events %+v", ev)
	}
	m.Update(snap(t0.Add(time.Second), up(gw("gw0", 10, 10, 0), t0.Add(time.Second)), down(t0.Add(time.Second))))
	if n := len(m.Events()); n != 2 {
		t.Errorf("a target that stays down repeats its event: %d events", n)
	}
	if tot := m.Totals(); tot.Up != 1 || tot.Down != 1 || tot.Instances != 2 || tot.Conns != 10 {
		t.Errorf("totals %+v", tot)
	}
	// gw1 comes up, then gw0 goes down, drains…
	t2 := t0.Add(2 * time.Second)
	m.Update(snap(t2, up(gw("gw0", 10, 10, 0), t2), up(gw("gw1", 5, 5, 0), t2)))
	if got := lastEvent(m); got != "gw1 appeared (std/tcp, serving)" {
		t.Errorf("event %q", got)
	}
	t3 := t0.Add(3 * time.Second)
	m.Update(snap(t3, Scrape{At: t3, Err: errors.New(`Get "http://x/metrics": context deadline exceeded (Client.Timeout exceeded)`)}, up(gw("gw1", 5, 5, 0), t3)))
	if got := lastEvent(m); got != "gw0 went down: timeout" {
		t.Errorf("event %q", got)
	}
	if r := m.Rows()[0]; r.State != StateDown || r.Conns.Known() || r.Node != "gw0" {
		t.Errorf("down row %+v", r)
	}
	t4 := t0.Add(4 * time.Second)
	dr := gw("gw1", 5, 5, 0)
	dr.Draining = true
	m.Update(snap(t4, up(gw("gw0", 0, 0, 0), t4), up(dr, t4)))
	ev = m.Events()
	if ev[len(ev)-2].Text != "gw0 is back (serving)" || ev[len(ev)-1].Text != "gw1 started draining" {
		t.Errorf("events %+v", ev[len(ev)-2:])
	}
	if tot := m.Totals(); tot.Draining != 1 || tot.Up != 2 {
		t.Errorf("totals %+v", tot)
	}
	if r := m.Rows()[0]; r.ConnectsPS.Known() {
		t.Errorf("rates right after coming back: %+v", r)
	}
	t5 := t0.Add(5 * time.Second)
	m.Update(snap(t5, up(gw("gw0", 0, 0, 0), t5), up(gw("gw1", 5, 5, 0), t5)))
	if got := lastEvent(m); got != "gw1 stopped draining" {
		t.Errorf("event %q", got)
	}
	if !strings.Contains(m.View(), "gw1 stopped draining") {
		t.Error("the event line does not show the last event")
	}
}

func TestLoadgenBurstsAndProgress(t *testing.T) {
	m := newTestModel(t, 0, true)
	lg := func(connected float64, errs, disc map[string]float64) *Scrape {
		return &Scrape{Loadgen: &LoadgenSample{Target: 1000, Connected: connected, Errors: errs, Disconnects: disc,
			P50: Num(0.002), P90: Num(0.004), P99: Num(0.010), Phase: "ramp"}}
	}
	feed := func(i int, sc *Scrape) {
		at := t0.Add(time.Duration(i) * time.Second)
		sc.At = at
		m.Update(snapshotMsg{At: at, Loadgen: sc})
	}
	feed(0, &Scrape{Err: errors.New("dial tcp: connect: connection refused")})
	if got := lastEvent(m); got != "load generator unreachable: connection refused" {
		t.Errorf("event %q", got)
	}
	feed(1, lg(100, map[string]float64{"refused": 1}, nil))
	feed(2, lg(400, map[string]float64{"refused": 5, "timeout": 1}, nil)) // 5 errors/s: below the default 10
	if strings.Contains(lastEvent(m), "burst") {
		t.Errorf("burst reported below the threshold: %q", lastEvent(m))
	}
	feed(3, lg(900, map[string]float64{"refused": 30, "timeout": 4, "control_503": 1}, nil))
	if got := lastEvent(m); got != "error burst: 29 errors in 1.0s (refused 25, timeout 3, control_503 1)" {
		t.Errorf("event %q", got)
	}
	if got := m.Loadgen().ErrorsPS["refused"]; got != 25 {
		t.Errorf("refused/s = %v", got)
	}
	feed(4, lg(880, map[string]float64{"refused": 30, "timeout": 4, "control_503": 1}, map[string]float64{"reset": 20}))
	if got := lastEvent(m); got != "disconnect burst: 20 connections lost in 1.0s (reset 20)" {
		t.Errorf("event %q", got)
	}
	if got := m.Loadgen().DisconnectsByReasonPS["reset"]; got != 20 {
		t.Errorf("disconnects reset/s = %v", got)
	}
	m.Update(keyMsg("3"))
	v := m.View()
	for _, want := range []string{"connected 880 / target 1000", "88%", "refused", "30", "p99 10.0ms"} {
		if !strings.Contains(v, want) {
			t.Errorf("loadgen view lacks %q:\n%s", want, v)
		}
	}
	feed(5, &Scrape{Err: errors.New("connection refused")})
	if got := lastEvent(m); got != "load generator went down: connection refused" {
		t.Errorf("event %q", got)
	}
}

func TestGatewayErrorBurst(t *testing.T) {
	m := newTestModel(t, 1, false)
	a := gw("gw0", 10, 10, 0)
	m.Update(snap(t0, up(a, t0)))
	b := gw("gw0", 10, 10, 0)
	b.ProtocolErrors, b.SlowConsumers = 12, 3
	m.Update(snap(t0.Add(time.Second), up(b, t0.Add(time.Second))))
	if got := lastEvent(m); got != "gw0: error burst: 12 protocol errors, 3 slow consumers in 1.0s" {
		t.Errorf("event %q", got)
	}
}

func TestGCPauseWindow(t *testing.T) {
	m := newTestModel(t, 1, false)
	inf := math.Inf(1)
	bounds := []float64{1e-4, 1e-3, 1e-2, inf}
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * 10 * time.Second) }
	feed := func(i int, counts ...float64) {
		g := gw("gw0", 10, 10, 0)
		g.GCPauses = Histogram{Bounds: bounds, Counts: counts}
		m.Update(snap(at(i), up(g, at(i))))
	}
	feed(0, 100, 100, 100, 100) // 100 short pauses since start
	if got := float64(m.Rows()[0].GCPauseP99); math.Abs(got-0.99e-4) > 1e-12 {
		t.Errorf("since start: %v", got)
	}
	feed(1, 100, 100, 110, 110) // 10 long pauses in the last 10 s
	if got := float64(m.Rows()[0].GCPauseP99); got < 1e-3 {
		t.Errorf("window p99 = %v, want in the long bucket", got)
	}
	for i := 2; i <= 8; i++ { // no GC for 70 s: the window empties, the p99 since start shows
		feed(i, 100, 100, 110, 110)
	}
	if got := float64(m.Rows()[0].GCPauseP99); got <= 1e-3 {
		t.Errorf("no GC in the window: %v, want the p99 since start", got)
	}
	// The exact longest pause (go_gc_duration_seconds) bounds the estimate from the coarse buckets.
	g := gw("gw0", 10, 10, 0)
	g.GCPauses = Histogram{Bounds: bounds, Counts: []float64{100, 100, 120, 120}}
	g.GCPauseMax = 1.3e-3
	m.Update(snap(at(9), up(g, at(9))))
	if got := float64(m.Rows()[0].GCPauseP99); got != 1.3e-3 {
		t.Errorf("bounded p99 = %v, want the max 1.3ms", got)
	}
}

func TestSaveWritesJSON(t *testing.T) {
	m := newTestModel(t, 2, true)
	m.Update(snap(t0, up(gw("gw0", 10, 10, 0), t0), down(t0)))
	_, cmd := m.Update(keyMsg("s"))
	if cmd == nil {
		t.Fatal("s: no command")
	}
	msg := cmd()
	saved, ok := msg.(savedMsg)
	if !ok || saved.err != nil {
		t.Fatalf("save: %#v", msg)
	}
	if dir, base := filepath.Split(saved.path); filepath.Clean(dir) != m.cfg.OutDir || !strings.HasPrefix(base, "tui-") || !strings.HasSuffix(base, "Z.json") {
		t.Errorf("path %q", saved.path)
	}
	m.Update(msg)
	if !strings.Contains(lastEvent(m), "saved ") {
		t.Errorf("event %q", lastEvent(m))
	}
	b, err := os.ReadFile(saved.path)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Instances []struct {
			Node       string   `json:"node"`
			State      string   `json:"state"`
			Conns      *float64 `json:"conns"`
			ConnectsPS *float64 `json:"connects_per_s"`
		} `json:"instances"`
		Totals  Totals `json:"totals"`
		Loadgen *struct {
			State string `json:"state"`
		} `json:"loadgen"`
		Events []Event `json:"events"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if len(r.Instances) != 2 || r.Instances[0].Node != "gw0" || r.Instances[0].State != "serving" || *r.Instances[0].Conns != 10 ||
		r.Instances[0].ConnectsPS != nil || r.Instances[1].State != "down" || r.Instances[1].Conns != nil {
		t.Errorf("instances in %s", b)
	}
	if r.Totals.Up != 1 || r.Totals.Down != 1 || r.Loadgen == nil || r.Loadgen.State != "waiting" || len(r.Events) != 2 {
		t.Errorf("report %s", b)
	}

	// An unwritable directory is reported, not fatal.
	m.cfg.OutDir = filepath.Join(saved.path, "not-a-dir")
	_, cmd = m.Update(keyMsg("s"))
	m.Update(cmd())
	if !strings.HasPrefix(lastEvent(m), "save failed") {
		t.Errorf("event %q", lastEvent(m))
	}
}

// TestViewFitsTheTerminal renders every view at several sizes, with data and without, and checks
// that no line is wider than the terminal and there are never more lines than it has.
func TestViewFitsTheTerminal(t *testing.T) {
	m := newTestModel(t, 3, true)
	check := func(label string) {
		for _, size := range [][2]int{{80, 24}, {100, 30}, {60, 20}, {40, 12}, {200, 60}, {20, 5}} {
			m.Update(tea.WindowSizeMsg{Width: size[0], Height: size[1]})
			for v := View(0); v < numViews; v++ {
				m.view = v
				out := m.View()
				lines := strings.Split(out, "\n")
				if len(lines) > size[1] {
					t.Errorf("%s %v %dx%d: %d lines", label, v, size[0], size[1], len(lines))
				}
				for i, l := range lines {
					if w := lipgloss.Width(l); w > size[0] {
						t.Errorf("%s %v %dx%d: line %d is %d wide: %q", label, v, size[0], size[1], i, w, l)
					}
				}
			}
		}
	}
	check("empty")
	for i := range 20 {
		at := t0.Add(time.Duration(i) * time.Second)
		g := gw("gw0", float64(100*i), float64(100*i), float64(1000*i))
		g.GCPauses = Histogram{Bounds: []float64{1e-4, 1e-3, math.Inf(1)}, Counts: []float64{float64(i), float64(2 * i), float64(2 * i)}}
		m.Update(snapshotMsg{At: at, Gateways: []Scrape{up(g, at), down(at), up(gw("a-very-long-node-name", 5, 5, 5), at)},
			Loadgen: &Scrape{At: at, Loadgen: &LoadgenSample{Target: 2000, Connected: float64(100 * i), Phase: "ramp",
				Errors: map[string]float64{"refused": float64(i)}, P50: Num(0.001 * float64(i)), P99: Num(0.003 * float64(i))}}})
	}
	check("data")
	m.Update(tea.WindowSizeMsg{Width: 80, Height: 24})
	m.view = ViewOverview
	v := m.View()
	for _, want := range []string{"[overview]", "2/3 up", "gw0", "1900", "down", "refused", "LOADGEN", "2.0K ", "1.9M*", "* RSS/conn includes"} {
		if !strings.Contains(v, want) {
			t.Errorf("overview lacks %q:\n%s", want, v)
		}
	}
	m.Update(tea.WindowSizeMsg{Width: 140, Height: 30})
	v = m.View()
	for _, want := range []string{"ENGINE/TR", "std/tcp", "RSS/CONN", "refused"} {
		if !strings.Contains(v, want) {
			t.Errorf("wide overview lacks %q:\n%s", want, v)
		}
	}
	m.view = ViewCharts
	if v := m.View(); !strings.Contains(v, "connections 1905") || !strings.Contains(v, "⣀") && !strings.Contains(v, "⠉") {
		t.Errorf("charts:\n%s", v)
	}
}
