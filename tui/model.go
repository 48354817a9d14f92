// Package tui is pushwire's live dashboard: it polls every gateway's and the load generator's
// Prometheus /metrics once a second and shows, per instance and in total, connections, rates,
// memory and GC, charts over time, the load generator's progress, and an event line.
//
// The bubbletea Model receives each Snapshot through a tea.Cmd that waits on the Poller's
// channel and is re-armed on every snapshot (bubbletea examples/realtime). It redraws only on
// new data, keys and resizes.
package tui

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
)

// keyMap is the dashboard's key bindings.
type keyMap struct {
	Quit, Next, Prev, View, Pause, Save key.Binding
}

// ShortHelp implements help.KeyMap.
func (k keyMap) ShortHelp() []key.Binding {
	return []key.Binding{k.Quit, k.Next, k.Pause, k.Save}
}

// FullHelp implements help.KeyMap.
func (k keyMap) FullHelp() [][]key.Binding {
	return [][]key.Binding{{k.Quit, k.Next, k.Prev, k.View, k.Pause, k.Save}}
}

var keys = keyMap{
	Quit:  key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
	Next:  key.NewBinding(key.WithKeys("tab", "right", "l"), key.WithHelp("tab/←→", "view")),
	Prev:  key.NewBinding(key.WithKeys("shift+tab", "left", "h"), key.WithHelp("shift+tab", "previous view")),
	View:  key.NewBinding(key.WithKeys("1", "2", "3", "4"), key.WithHelp("1-4", "go to view")),
	Pause: key.NewBinding(key.WithKeys("p", " "), key.WithHelp("p", "pause")),
	Save:  key.NewBinding(key.WithKeys("s"), key.WithHelp("s", "save snapshot")),
}

// Num is a float64 that encodes NaN and ±Inf (a figure not known yet) as JSON null.
type Num float64

// MarshalJSON implements json.Marshaler.
func (n Num) MarshalJSON() ([]byte, error) {
	f := float64(n)
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(f)
}

// Known reports whether n is a number (not NaN or ±Inf).
func (n Num) Known() bool { return !math.IsNaN(float64(n)) && !math.IsInf(float64(n), 0) }

var unknown = Num(math.NaN())

// View is one of the dashboard's screens.
type View int

// The views, in tab order.
const (
	ViewOverview View = iota // instance tables, totals, load generator summary
	ViewCharts               // connections, deliveries/s, latency and GC pauses over time
	ViewLoadgen              // the load generator's progress, errors and reconnects by reason
	ViewEvents               // the event log
	numViews
)

var viewNames = [...]string{"overview", "charts", "loadgen", "events"}

func (v View) String() string {
	if v >= 0 && int(v) < len(viewNames) {
		return viewNames[v]
	}
	return fmt.Sprintf("View(%d)", int(v))
}

// State is an instance's state as the dashboard sees it.
type State int

// Instance states.
const (
	StateWaiting  State = iota // not scraped yet
	StateServing               // answering, not draining
	StateDraining              // answering, pushwire_draining = 1
	StateDown                  // the last scrape failed (refused, timeout, bad answer)
)

var stateNames = [...]string{"waiting", "serving", "draining", "down"}

func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Row is one instance's figures as shown. Rates are per second over the last poll interval.
type Row struct {
	URL          string `json:"url"`
	Node         string `json:"node,omitempty"`
	Engine       string `json:"engine,omitempty"`
	Transport    string `json:"transport,omitempty"`
	State        State  `json:"state"`
	Err          string `json:"error,omitempty"` // why it is down
	Conns        Num    `json:"conns"`
	ConnectsPS   Num    `json:"connects_per_s"`   // logins_total{result="ok"}
	RequestsPS   Num    `json:"requests_per_s"`   // frames_in_total{type="REQUEST"}
	DeliveriesPS Num    `json:"deliveries_per_s"` // pushes_total{outcome="delivered"}
	RSS          Num    `json:"rss_bytes"`
	RSSPerConn   Num    `json:"rss_per_conn_bytes"` // (RSS − RSS seen at 0 connections) / conns, else RSS / conns
	// RSSPerConnGross: RSSPerConn includes the process's own RSS (never seen at 0 connections).
	RSSPerConnGross bool `json:"rss_per_conn_gross,omitempty"`
	Heap            Num  `json:"heap_bytes"`
	Goroutines      Num  `json:"goroutines"`
	GCPauseP99      Num  `json:"gc_pause_p99_s"` // over the last minute (since start when no GC ran in it), at most the max pause
	GCCPUShare      Num  `json:"gc_cpu_share"`   // GC CPU over the CPU available (GOMAXPROCS × interval)
}

// Name is the instance's node name, or its host:port until known.
func (r Row) Name() string {
	if r.Node != "" {
		return r.Node
	}
	if u, err := url.Parse(r.URL); err == nil && u.Host != "" {
		return u.Host
	}
	return r.URL
}

// Totals sums the instances that answered.
type Totals struct {
	Instances    int `json:"instances"`
	Up           int `json:"up"`
	Draining     int `json:"draining"`
	Down         int `json:"down"`
	Conns        Num `json:"conns"`
	ConnectsPS   Num `json:"connects_per_s"`
	RequestsPS   Num `json:"requests_per_s"`
	DeliveriesPS Num `json:"deliveries_per_s"`
	RSS          Num `json:"rss_bytes"`
	Heap         Num `json:"heap_bytes"`
	Goroutines   Num `json:"goroutines"`
	GCPauseP99   Num `json:"gc_pause_p99_s"` // the worst instance's
	GCCPUShare   Num `json:"gc_cpu_share"`   // the mean over the instances up
}

// LoadgenFigures is the load generator's state as shown.
type LoadgenFigures struct {
	URL          string             `json:"url"`
	State        State              `json:"state"`
	Err          string             `json:"error,omitempty"`
	Sample       LoadgenSample      `json:"sample"`
	ConnectsPS   Num                `json:"connects_per_s"`
	DeliveredPS  Num                `json:"delivered_per_s"`
	ErrorsPS     map[string]float64 `json:"errors_per_s,omitempty"` // by reason
	ReconnectsPS Num                `json:"reconnects_per_s"`
	// Per reason, per second.
	ReconnectsByReasonPS  map[string]float64 `json:"reconnects_by_reason_per_s,omitempty"`
	DisconnectsByReasonPS map[string]float64 `json:"disconnects_by_reason_per_s,omitempty"`
}

// Event is one line of the event log.
type Event struct {
	At   time.Time `json:"at"`
	Warn bool      `json:"warn,omitempty"`
	Text string    `json:"text"`
}

// Point is one value of a chart series.
type Point struct {
	At time.Time `json:"at"`
	V  Num       `json:"v"`
}

// Chart series names.
const (
	SeriesConns      = "connections"
	SeriesDeliveries = "deliveries_per_s"
	SeriesP50        = "latency_p50_ms"
	SeriesP99        = "latency_p99_ms"
	SeriesGCPause    = "gc_pause_p99_ms"
)

// Config configures the dashboard. The zero value of a field means its documented default.
type Config struct {
	Gateways []string      // gateway /metrics URLs (see MetricsURL); at least one
	Loadgen  string        // the load generator's /metrics URL; default none
	Interval time.Duration // polling interval; default 1s
	OutDir   string        // where s saves snapshots; default "results"
	Burst    float64       // errors within one interval reported as an error burst; default 10
	History  int           // points kept per chart series; default 300
	Log      *slog.Logger  // never the terminal while the dashboard runs; default: discard
	Notes    <-chan string // optional: lines to add to the event log (e.g. from bench)
}

func (c *Config) setDefaults() {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.OutDir == "" {
		c.OutDir = "results"
	}
	if c.Burst <= 0 {
		c.Burst = 10
	}
	if c.History <= 0 {
		c.History = 300
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// gcWindow is how far back the GC pause p99 looks.
const gcWindow = time.Minute

// maxEvents bounds the event log.
const maxEvents = 500

type histAt struct {
	at time.Time
	h  Histogram
}

type instance struct {
	row     Row
	prev    *GatewaySample
	prevAt  time.Time
	seen    bool    // answered at least once
	baseRSS float64 // lowest RSS seen at 0 connections; 0: never seen empty
	pauses  []histAt
}

// Model is the dashboard's bubbletea model. Create it with NewModel.
type Model struct {
	cfg    Config
	snaps  <-chan Snapshot
	view   View
	paused bool
	width  int
	height int

	insts   []*instance
	lg      *LoadgenFigures // nil without a load generator target
	lgPrev  *LoadgenSample
	lgAt    time.Time
	lgSeen  bool
	totals  Totals
	series  map[string][]Point
	events  []Event
	status  string // the last save's outcome
	updated time.Time
	polls   int
	help    help.Model
}

// NewModel returns a dashboard for cfg's targets fed by snaps (nil: no data source, for tests).
func NewModel(cfg Config, snaps <-chan Snapshot) *Model {
	cfg.setDefaults()
	m := &Model{cfg: cfg, snaps: snaps, width: 80, height: 24, series: map[string][]Point{}, help: help.New()}
	for _, u := range cfg.Gateways {
		m.insts = append(m.insts, &instance{row: emptyRow(u, StateWaiting)})
	}
	if cfg.Loadgen != "" {
		m.lg = &LoadgenFigures{URL: cfg.Loadgen, ConnectsPS: unknown, DeliveredPS: unknown, ReconnectsPS: unknown,
			Sample: LoadgenSample{P50: unknown, P90: unknown, P99: unknown}}
	}
	m.computeTotals()
	return m
}

func emptyRow(u string, st State) Row {
	return Row{URL: u, State: st, Conns: unknown, ConnectsPS: unknown, RequestsPS: unknown, DeliveriesPS: unknown,
		RSS: unknown, RSSPerConn: unknown, Heap: unknown, Goroutines: unknown, GCPauseP99: unknown, GCCPUShare: unknown}
}

// Messages.
type (
	snapshotMsg     Snapshot
	noteMsg         string
	sourceClosedMsg struct{}
	savedMsg        struct {
		path string
		err  error
	}
)

// waitForSnapshot is the re-armed command that delivers the poller's next snapshot.
func waitForSnapshot(ch <-chan Snapshot) tea.Cmd {
	if ch == nil {
		return nil
	}
	return func() tea.Msg {
		s, ok := <-ch
		if !ok {
			return sourceClosedMsg{}
		}
		return snapshotMsg(s)
	}
}

func waitForNote(ch <-chan string) tea.Cmd {
	if ch == nil {
		return nil
	}
	return func() tea.Msg {
		s, ok := <-ch
		if !ok {
			return sourceClosedMsg{}
		}
		return noteMsg(s)
	}
}

// Init implements tea.Model: it arms the snapshot (and note) commands.
func (m *Model) Init() tea.Cmd {
	return tea.Batch(waitForSnapshot(m.snaps), waitForNote(m.cfg.Notes))
}

// Update implements tea.Model.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case tea.KeyMsg:
		return m, m.key(msg)
	case snapshotMsg:
		if !m.paused {
			m.apply(Snapshot(msg))
		}
		return m, waitForSnapshot(m.snaps)
	case noteMsg:
		m.event(time.Now(), false, string(msg))
		return m, waitForNote(m.cfg.Notes)
	case savedMsg:
		if msg.err != nil {
			m.status = "save failed: " + msg.err.Error()
			m.event(time.Now(), true, m.status)
		} else {
			m.status = "saved " + msg.path
			m.event(time.Now(), false, m.status)
		}
	}
	return m, nil
}

func (m *Model) key(k tea.KeyMsg) tea.Cmd {
	switch {
	case key.Matches(k, keys.Quit):
		return tea.Quit
	case key.Matches(k, keys.Next):
		m.view = (m.view + 1) % numViews
	case key.Matches(k, keys.Prev):
		m.view = (m.view + numViews - 1) % numViews
	case key.Matches(k, keys.View):
		m.view = View(k.String()[0] - '1')
	case key.Matches(k, keys.Pause):
		m.paused = !m.paused
	case key.Matches(k, keys.Save):
		return m.save(time.Now())
	}
	return nil
}

// Report is what s saves: the figures on screen, the chart series and the events.
type Report struct {
	SavedAt   time.Time          `json:"saved_at"`
	UpdatedAt time.Time          `json:"updated_at"`
	Paused    bool               `json:"paused"`
	Interval  float64            `json:"interval_s"`
	Instances []Row              `json:"instances"`
	Totals    Totals             `json:"totals"`
	Loadgen   *LoadgenFigures    `json:"loadgen,omitempty"`
	Series    map[string][]Point `json:"series"`
	Events    []Event            `json:"events"`
}

// Report returns the figures as they stand.
func (m *Model) Report(now time.Time) Report {
	r := Report{SavedAt: now.UTC(), UpdatedAt: m.updated.UTC(), Paused: m.paused, Interval: m.cfg.Interval.Seconds(),
		Totals: m.totals, Series: m.series, Events: m.events}
	for _, in := range m.insts {
		r.Instances = append(r.Instances, in.row)
	}
	if m.lg != nil {
		lg := *m.lg
		r.Loadgen = &lg
	}
	return r
}

// save encodes the report now and writes it to OutDir/tui-<UTC time>.json off the update loop.
func (m *Model) save(now time.Time) tea.Cmd {
	b, err := json.MarshalIndent(m.Report(now), "", "  ")
	dir := m.cfg.OutDir
	path := filepath.Join(dir, "tui-"+now.UTC().Format("20060102T150405.000Z")+".json")
	log := m.cfg.Log
	return func() tea.Msg {
		if err != nil {
			return savedMsg{err: fmt.Errorf("tui: encoding the snapshot: %w", err)}
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return savedMsg{err: err}
		}
		if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
			return savedMsg{err: err}
		}
		log.Info("snapshot saved", "path", path)
		return savedMsg{path: path}
	}
}

func (m *Model) event(at time.Time, warn bool, text string) {
	m.events = append(m.events, Event{At: at, Warn: warn, Text: text})
	if len(m.events) > maxEvents {
		m.events = append([]Event(nil), m.events[len(m.events)-maxEvents:]...)
	}
	if warn {
		m.cfg.Log.Warn("event", "text", text)
	} else {
		m.cfg.Log.Info("event", "text", text)
	}
}

// rate is the per-second rate of a counter between two readings; a counter that went down
// (restart) counts from zero.
func rate(prev, cur, dt float64) Num {
	if dt <= 0 {
		return unknown
	}
	d := cur - prev
	if d < 0 {
		d = cur
	}
	return Num(d / dt)
}

// apply folds a snapshot into the figures, the series and the event log.
func (m *Model) apply(s Snapshot) {
	m.polls++
	for i, sc := range s.Gateways {
		if i < len(m.insts) {
			m.applyGateway(m.insts[i], sc)
		}
	}
	if s.Loadgen != nil && m.lg != nil {
		m.applyLoadgen(*s.Loadgen)
	}
	m.computeTotals()
	m.pushSeries(s.At)
	m.updated = s.At
}

func (m *Model) applyGateway(in *instance, sc Scrape) {
	if sc.Err != nil || sc.Gateway == nil {
		reason := shortErr(sc.Err)
		if reason == "" {
			reason = "no data"
		}
		if in.row.State != StateDown {
			if in.seen {
				m.event(sc.At, true, fmt.Sprintf("%s went down: %s", in.row.Name(), reason))
			} else {
				m.event(sc.At, true, fmt.Sprintf("%s unreachable: %s", in.row.Name(), reason))
			}
		}
		row := emptyRow(in.row.URL, StateDown)
		row.Node, row.Engine, row.Transport, row.Err = in.row.Node, in.row.Engine, in.row.Transport, reason
		in.row = row
		in.prev = nil
		in.pauses = nil
		return
	}
	g := sc.Gateway
	old := in.row
	row := emptyRow(old.URL, StateServing)
	if g.Draining {
		row.State = StateDraining
	}
	row.Node, row.Engine, row.Transport = g.Node, g.Engine, g.Transport
	row.Conns, row.RSS, row.Heap, row.Goroutines = Num(g.Conns), Num(g.RSS), Num(g.Heap), Num(g.Goroutines)
	name := row.Name()
	switch {
	case !in.seen:
		m.event(sc.At, false, fmt.Sprintf("%s appeared (%s/%s, %s)", name, g.Engine, g.Transport, row.State))
	case old.State == StateDown:
		m.event(sc.At, false, fmt.Sprintf("%s is back (%s)", name, row.State))
	case old.State == StateServing && row.State == StateDraining:
		m.event(sc.At, true, name+" started draining")
	case old.State == StateDraining && row.State == StateServing:
		m.event(sc.At, false, name+" stopped draining")
	}
	if p := in.prev; p != nil {
		dt := sc.At.Sub(in.prevAt).Seconds()
		row.ConnectsPS = rate(p.Logins, g.Logins, dt)
		row.RequestsPS = rate(p.Requests, g.Requests, dt)
		row.DeliveriesPS = rate(p.Delivered, g.Delivered, dt)
		// The runtime's total is the CPU time available (GOMAXPROCS × wall time); when the
		// gateway does not export it, compute it the same way.
		dTotal := g.TotalCPU - p.TotalCPU
		if g.TotalCPU == 0 && p.TotalCPU == 0 {
			dTotal = g.GOMAXPROCS * dt
		}
		if dTotal > 0 && g.GCCPU >= p.GCCPU {
			row.GCCPUShare = Num((g.GCCPU - p.GCCPU) / dTotal)
		}
		if dt > 0 {
			errs := max(g.ProtocolErrors-p.ProtocolErrors, 0) + max(g.SlowConsumers-p.SlowConsumers, 0)
			if errs >= m.cfg.Burst*dt {
				m.event(sc.At, true, fmt.Sprintf("%s: error burst: %.0f protocol errors, %.0f slow consumers in %.1fs",
					name, max(g.ProtocolErrors-p.ProtocolErrors, 0), max(g.SlowConsumers-p.SlowConsumers, 0), dt))
			}
		}
	}
	if g.Conns == 0 && g.RSS > 0 && (in.baseRSS == 0 || g.RSS < in.baseRSS) {
		in.baseRSS = g.RSS
	}
	if g.Conns > 0 {
		row.RSSPerConn = Num((g.RSS - in.baseRSS) / g.Conns)
		row.RSSPerConnGross = in.baseRSS == 0
	}
	// GC pause p99 over the last gcWindow, from the histogram's growth since then.
	in.pauses = append(in.pauses, histAt{at: sc.At, h: g.GCPauses})
	for len(in.pauses) > 1 && sc.At.Sub(in.pauses[1].at) >= gcWindow {
		in.pauses = in.pauses[1:]
	}
	win := g.GCPauses.Sub(in.pauses[0].h)
	if win.Total() == 0 {
		win = g.GCPauses
	}
	p99 := win.Quantile(0.99)
	if g.GCPauseMax > 0 && p99 > g.GCPauseMax { // no quantile exceeds the exact maximum (NaN, 0: unknown)
		p99 = g.GCPauseMax
	}
	row.GCPauseP99 = Num(p99)
	in.row = row
	in.prev, in.prevAt, in.seen = g, sc.At, true
}

func (m *Model) applyLoadgen(sc Scrape) {
	lg := m.lg
	if sc.Err != nil || sc.Loadgen == nil {
		reason := shortErr(sc.Err)
		if reason == "" {
			reason = "no data"
		}
		if lg.State != StateDown {
			if m.lgSeen {
				m.event(sc.At, true, "load generator went down: "+reason)
			} else {
				m.event(sc.At, true, "load generator unreachable: "+reason)
			}
		}
		lg.State, lg.Err = StateDown, reason
		lg.ConnectsPS, lg.DeliveredPS, lg.ReconnectsPS, lg.ErrorsPS = unknown, unknown, unknown, nil
		lg.ReconnectsByReasonPS, lg.DisconnectsByReasonPS = nil, nil
		lg.Sample.P50, lg.Sample.P90, lg.Sample.P99 = unknown, unknown, unknown
		m.lgPrev = nil
		return
	}
	s := sc.Loadgen
	switch {
	case !m.lgSeen:
		m.event(sc.At, false, fmt.Sprintf("load generator appeared (target %.0f connections)", s.Target))
	case lg.State == StateDown:
		m.event(sc.At, false, "load generator is back")
	}
	if s.Phase != "" && s.Phase != lg.Sample.Phase && lg.State != StateDown {
		m.event(sc.At, false, "load generator phase: "+s.Phase)
	}
	lg.State, lg.Err, lg.Sample = StateServing, "", *s
	lg.ConnectsPS, lg.DeliveredPS, lg.ReconnectsPS, lg.ErrorsPS = unknown, unknown, unknown, nil
	lg.ReconnectsByReasonPS, lg.DisconnectsByReasonPS = nil, nil
	if p := m.lgPrev; p != nil {
		dt := sc.At.Sub(m.lgAt).Seconds()
		lg.ConnectsPS = rate(p.Connects, s.Connects, dt)
		lg.DeliveredPS = rate(p.Delivered, s.Delivered, dt)
		lg.ReconnectsPS = rate(sum(p.Reconnects), sum(s.Reconnects), dt)
		if dt > 0 {
			lg.ErrorsPS = reasonRates(s.Errors, p.Errors, dt)
			lg.ReconnectsByReasonPS = reasonRates(s.Reconnects, p.Reconnects, dt)
			lg.DisconnectsByReasonPS = reasonRates(s.Disconnects, p.Disconnects, dt)
			total := sum(lg.ErrorsPS) * dt
			lost := max(sum(s.Disconnects)-sum(p.Disconnects), 0)
			if total >= m.cfg.Burst*dt {
				m.event(sc.At, true, fmt.Sprintf("error burst: %.0f errors in %.1fs (%s)", total, dt, topReasons(s.Errors, p.Errors, 3)))
			}
			if lost >= m.cfg.Burst*dt {
				m.event(sc.At, true, fmt.Sprintf("disconnect burst: %.0f connections lost in %.1fs (%s)", lost, dt, topReasons(s.Disconnects, p.Disconnects, 3)))
			}
		}
	}
	m.lgPrev, m.lgAt, m.lgSeen = s, sc.At, true
}

// reasonRates is the per-second growth of each reason's counter from prev to cur.
func reasonRates(cur, prev map[string]float64, dt float64) map[string]float64 {
	out := make(map[string]float64, len(cur))
	for reason, v := range cur {
		out[reason] = float64(rate(prev[reason], v, dt))
	}
	return out
}

func sum(m map[string]float64) float64 {
	var t float64
	for _, v := range m {
		t += v
	}
	return t
}

// topReasons lists the n reasons that grew most from prev to cur, as "reason N, …".
func topReasons(cur, prev map[string]float64, n int) string {
	type rc struct {
		r string
		d float64
	}
	var l []rc
	for r, v := range cur {
		if d := v - prev[r]; d > 0 {
			l = append(l, rc{r, d})
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].d > l[j].d || (l[i].d == l[j].d && l[i].r < l[j].r) })
	var parts []string
	for i, x := range l {
		if i == n {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s %.0f", x.r, x.d))
	}
	return strings.Join(parts, ", ")
}

func (m *Model) computeTotals() {
	t := Totals{Instances: len(m.insts), GCPauseP99: unknown, GCCPUShare: unknown}
	var conns, connects, reqs, deliv, rss, heap, gor, gcShare float64
	var nRates, nShare, nGC int
	var gcMax float64
	for _, in := range m.insts {
		r := in.row
		switch r.State {
		case StateDown:
			t.Down++
			continue
		case StateWaiting:
			continue
		case StateDraining:
			t.Draining++
		case StateServing:
		}
		t.Up++
		conns += float64(r.Conns)
		rss += float64(r.RSS)
		heap += float64(r.Heap)
		gor += float64(r.Goroutines)
		if r.ConnectsPS.Known() {
			nRates++
			connects += float64(r.ConnectsPS)
			reqs += float64(r.RequestsPS)
			deliv += float64(r.DeliveriesPS)
		}
		if r.GCCPUShare.Known() {
			nShare++
			gcShare += float64(r.GCCPUShare)
		}
		if r.GCPauseP99.Known() {
			nGC++
			gcMax = max(gcMax, float64(r.GCPauseP99))
		}
	}
	t.Conns, t.RSS, t.Heap, t.Goroutines = unknown, unknown, unknown, unknown
	t.ConnectsPS, t.RequestsPS, t.DeliveriesPS = unknown, unknown, unknown
	if t.Up > 0 {
		t.Conns, t.RSS, t.Heap, t.Goroutines = Num(conns), Num(rss), Num(heap), Num(gor)
	}
	if nRates > 0 {
		t.ConnectsPS, t.RequestsPS, t.DeliveriesPS = Num(connects), Num(reqs), Num(deliv)
	}
	if nShare > 0 {
		t.GCCPUShare = Num(gcShare / float64(nShare))
	}
	if nGC > 0 {
		t.GCPauseP99 = Num(gcMax)
	}
	m.totals = t
}

func (m *Model) pushSeries(at time.Time) {
	add := func(name string, v Num) {
		s := append(m.series[name], Point{At: at, V: v})
		if len(s) > m.cfg.History {
			s = append([]Point(nil), s[len(s)-m.cfg.History:]...)
		}
		m.series[name] = s
	}
	add(SeriesConns, m.totals.Conns)
	add(SeriesDeliveries, m.totals.DeliveriesPS)
	add(SeriesGCPause, m.totals.GCPauseP99*1000)
	if m.lg != nil {
		add(SeriesP50, m.lg.Sample.P50*1000)
		add(SeriesP99, m.lg.Sample.P99*1000)
	}
}

// Accessors for tests and callers.

// CurrentView returns the view on screen.
func (m *Model) CurrentView() View { return m.view }

// Paused reports whether updates are paused.
func (m *Model) Paused() bool { return m.paused }

// Rows returns the instances' figures.
func (m *Model) Rows() []Row {
	out := make([]Row, len(m.insts))
	for i, in := range m.insts {
		out[i] = in.row
	}
	return out
}

// Totals returns the totals.
func (m *Model) Totals() Totals { return m.totals }

// Events returns the event log, oldest first.
func (m *Model) Events() []Event { return m.events }

// Loadgen returns the load generator's figures (nil without one).
func (m *Model) Loadgen() *LoadgenFigures { return m.lg }
