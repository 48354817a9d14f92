package report

import (
	"errors"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"gonum.org/v1/plot/plotter"

	"github.com/pushwire/pushwire/results"
)

// series returns n one-second samples of a phase: conns from c0 rising by dc per second, the
// deliveries of the second, latency p50/p99.
func synthSeries(n int, c0, dc int, delivered int64, p50 float64) []results.Sample {
	ss := make([]results.Sample, n)
	for i := range ss {
		conns := c0 + dc*(i+1)
		ss[i] = results.Sample{
			T: float64(i + 1), Conns: conns, RSSBytes: uint64(20<<20 + conns*2048), HeapBytes: uint64(8<<20 + conns*1024),
			Sent: delivered / 10, Delivered: delivered + int64(i*50), P50: p50, P99: p50 * 4,
			GCCount: uint64(i % 2), GCPauseMax: 0.0002 * float64(i%3), CPUSeconds: 0.4, LoadgenCPU: 0.3,
		}
	}
	return ss
}

// synthRun returns a plain run of engine: ramp, idle, upstream (not on the floor), push, group-all
// and broadcast, with series, costs and latencies scaled by f (the engine's speed) and round.
func synthRun(engine string, round int, start time.Time, f float64) *results.Result {
	jitter := 1 + 0.02*float64(round)
	lat := func(p50 float64) *results.Latency {
		p50 *= jitter / f
		return &results.Latency{Count: 10000, P50: p50, P90: p50 * 2, P99: p50 * 5, P999: p50 * 9, Max: p50 * 12, Mean: p50 * 1.3}
	}
	gw := func(cpu float64) results.Gateway {
		return results.Gateway{Instances: 1, RSSBytes: 60 << 20, RSSPerConn: 2048 / f, HeapBytes: 30 << 20, HeapPerConn: 1024 / f,
			Goroutines: 100, GCPauseP50: 0.0001, GCPauseP99: 0.0004 / f, GCPauseMax: 0.001 / f, GCCount: 3, GCCPUShare: 0.02, CPUSeconds: cpu}
	}
	r := &results.Result{
		StartedAt: start, Duration: 40, Engine: engine, Transport: "tcp",
		Config: map[string]any{"conns": 2000, "push_rate": 2000},
		Env: results.Env{Commit: "abc123", GoVersion: "go1.26", OS: "linux", Arch: "amd64", CPUModel: "Test CPU", Kernel: "6.1",
			GOMAXPROCS: 2, Cores: 2, MemoryBytes: 24 << 30, FileLimit: 20000, LoadAvg: []float64{0.5, 0.4, 0.3},
			Busy: []string{"4242 redis-server 7%"}, TCPSockets: 12},
		Placement: &results.Placement{Method: "sched_setaffinity", Gateway: []int{0}, Loadgen: []int{1}},
	}
	r.Phases = append(r.Phases,
		results.Phase{Name: results.PhaseRamp, Duration: 5, Conns: 2000, Target: 2000, ConnectRate: 400 * f * jitter, Offered: 500,
			Achieved: 400 * f * jitter, Gateway: gw(1), Series: synthSeries(5, 0, 400, 0, 0),
			Cost:      &results.Cost{Op: "connect", Ops: 2000, CPUPerOp: 50 / f, AllocsPerOp: 40, AllocBytesPerOp: 4000},
			Loadgen:   &results.Loadgen{Processes: 2, CPUSeconds: 1.5, RSSBytes: 50 << 20},
			Saturated: f < 1, Saturation: []string{"sent 400/s of the 500/s offered"}},
		results.Phase{Name: results.PhaseIdle, Duration: 4, Conns: 2000, Target: 2000, Gateway: gw(0.1), Series: synthSeries(4, 2000, 0, 0, 0)},
	)
	if engine != FloorEngine {
		r.Phases = append(r.Phases, results.Phase{Name: results.PhaseUpstream, Duration: 5, Conns: 2000, Target: 2000,
			Offered: 1000, Achieved: 1000, Deliveries: 1000, Latency: lat(1), Sent: 5000, Delivered: 5000, Gateway: gw(2),
			Cost:   &results.Cost{Op: "request", Ops: 5000, CPUPerOp: 30 / f, AllocsPerOp: 20, AllocBytesPerOp: 900},
			Series: synthSeries(5, 2000, 0, 1000, 1)})
	}
	for _, ph := range []struct {
		name string
		rate float64
		p50  float64
	}{{results.PhasePush, 2000, 1}, {phaseGroupAll, 20000 * f, 80}, {results.PhaseBroadcast, 18000 * f, 90}} {
		p := results.Phase{Name: ph.name, Duration: 5, Conns: 2000, Target: 2000, Offered: 2000, Achieved: 2000 * jitter,
			Deliveries: ph.rate * jitter, Latency: lat(ph.p50), LatencyUncorrected: lat(ph.p50 / 2), Sent: 10000, Delivered: 10000,
			Gateway: gw(3 / f), Series: synthSeries(5, 2000, 0, int64(ph.rate), ph.p50),
			Cost: &results.Cost{Op: "push", Ops: 10000, CPUPerOp: 100 / f, AllocsPerOp: 12, AllocBytesPerOp: 700,
				Deliveries: 10000, CPUPerDelivery: 20 / f, AllocsPerDelivery: 1},
			Loadgen: &results.Loadgen{Processes: 2, CPUSeconds: 2, RSSBytes: 60 << 20}}
		if engine == "gnet" && ph.name == results.PhaseBroadcast && round == 2 {
			p.Saturated = true
			p.Saturation = []string{"latency grew from 12 ms to 480 ms"}
		}
		r.Phases = append(r.Phases, p)
	}
	return r
}

// burnCPU spins for d of wall time so a CPU profile has samples in it.
func burnCPU(d time.Duration) float64 {
	x := 1.0
	for end := time.Now().Add(d); time.Now().Before(end); {
		for i := 0; i < 100000; i++ {
			x = math.Sqrt(x + float64(i))
		}
	}
	return x
}

var sink float64

// writeCPUProfile writes a CPU profile of burnCPU to path.
func writeCPUProfile(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		t.Fatalf("StartCPUProfile: %v", err)
	}
	sink += burnCPU(400 * time.Millisecond)
	pprof.StopCPUProfile()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// sittingDir writes 3 rounds of std and gnet and the floor into a directory, interleaved as
// bench-all runs them, with a CPU profile of std's push phase in round 1.
func sittingDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeCPUProfile(t, filepath.Join(dir, "profiles", "push-n1-cpu.pprof"))
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	i := 0
	for round := 1; round <= 3; round++ {
		for _, e := range []struct {
			name string
			f    float64
		}{{"std", 1}, {"gnet", 1.3}, {FloorEngine, 2}} {
			r := synthRun(e.name, round, t0.Add(time.Duration(i)*time.Minute), e.f)
			i++
			if e.name == "std" && round == 1 {
				r.Phases[3].Profiles = []results.Profile{{Node: "n1", Kind: "cpu", Path: "profiles/push-n1-cpu.pprof"}}
			}
			if _, err := results.Write(dir, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

// checkPNG decodes path and checks it is a real picture: a usable size and more than one colour.
func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b := img.Bounds()
	if b.Dx() < 600 || b.Dy() < 300 {
		t.Errorf("%s: %d×%d pixels, want at least 600×300", path, b.Dx(), b.Dy())
	}
	if n := colours(img, 10); n < 10 {
		t.Errorf("%s: %d colours, want a drawn chart", path, n)
	}
}

// colours counts the distinct colours of img, up to limit.
func colours(img image.Image, limit int) int {
	seen := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[[4]uint32{r, g, bl, a}] = true
			if len(seen) >= limit {
				return len(seen)
			}
		}
	}
	return len(seen)
}

func TestGenerate(t *testing.T) {
	dir := sittingDir(t)
	md, err := Generate(dir, Options{Title: "test sitting"})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	if md != filepath.Join(dir, ReportFile) {
		t.Errorf("Generate returned %s, want %s", md, filepath.Join(dir, ReportFile))
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	wantCharts := []string{"connections", "rss-over-time", "memory-per-conn", "deliveries-push", "deliveries-group-all",
		"deliveries-broadcast", "latency-push", "latency-broadcast", "gc-pause-p99", "gc-pause-max"}
	for _, c := range wantCharts {
		ref := "](charts/" + c + ".png)"
		if !strings.Contains(text, ref) {
			t.Errorf("report.md does not embed %s", c)
		}
		checkPNG(t, filepath.Join(dir, ChartsDir, c+".png"))
	}
	for _, want := range []string{
		"# test sitting",
		"std (3 runs), gnet (3 runs), floor (3 runs)", // engines in order, the floor last
		"| figure | std (3) | gnet (3) | floor (3) |", // a column per engine
		"### broadcast — SAT (gnet)",                  // the saturated phase in its title
		"**SAT** 1/3",                                 // and in its table
		"gnet round 2 (",                              // with its reason
		"latency grew from 12 ms to 480 ms",           //
		"× floor",                                     // ratios to the floor
		"sched_setaffinity: gateways (with control and the backend) on CPUs 0, load generator on CPUs 1", // placement
		"4242 redis-server 7%",  // busy processes
		"0.50 0.40 0.30",        // load average
		"std round 2 of 3",      // the run whose series are charted
		"## Where the CPU goes", //
		"### std: push",         //
		"report.burnCPU",        // the profiled function
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	// The floor runs no upstream phase: its cell is "—", and upstream figures have no floor ratio.
	up := section(text, "### upstream")
	if !strings.Contains(up, "| — |") {
		t.Errorf("upstream table has no — for the floor:\n%s", up)
	}
	if strings.Contains(up, "× floor") {
		t.Errorf("upstream table has a floor ratio:\n%s", up)
	}
	// Idle memory per connection: std's median 2 KB against the floor's 1 KB.
	idle := section(text, "### idle")
	if !strings.Contains(idle, "| RSS / conn (KB) | 2.00 · 2.00× floor |") {
		t.Errorf("idle table lacks std's RSS/conn with its floor ratio:\n%s", idle)
	}
	// The ramp connect rate spreads 2% a round: not flagged; the median is round 2's.
	ramp := section(text, "### ramp")
	if !strings.Contains(ramp, "| connects /s | 416 (408–424) · 0.50× floor |") {
		t.Errorf("ramp table lacks std's connect rate median (min–max) with its floor ratio:\n%s", ramp)
	}
}

// section returns text from the heading to the next heading.
func section(text, heading string) string {
	i := strings.Index(text, heading+"\n")
	if i < 0 {
		return ""
	}
	rest := text[i+len(heading)+1:]
	if j := strings.Index(rest, "\n#"); j >= 0 {
		rest = rest[:j]
	}
	return rest
}

func TestGenerateNoResults(t *testing.T) {
	dir := t.TempDir()
	_, err := Generate(dir, Options{})
	if !errors.Is(err, ErrNoResults) {
		t.Fatalf("empty directory: err = %v, want ErrNoResults", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.json"), []byte(`{"x": 1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Generate(dir, Options{})
	if !errors.Is(err, ErrNoResults) || !strings.Contains(err.Error(), "notes.json") {
		t.Fatalf("directory without a result: err = %v, want ErrNoResults naming notes.json", err)
	}
	if _, err := Generate(filepath.Join(dir, "missing"), Options{}); err == nil {
		t.Fatal("a missing directory gave no error")
	}
}

// Results written before series were recorded: the report says which charts it left out and why.
func TestGenerateWithoutSeries(t *testing.T) {
	dir := t.TempDir()
	for i, e := range []string{"std", "gnet"} {
		r := synthRun(e, 1, time.Date(2026, 11, 30, 12, i, 0, 0, time.UTC), 1)
		for j := range r.Phases {
			r.Phases[j].Series = nil
		}
		if e == "gnet" {
			r.Transport = "ws"
		}
		if _, err := results.Write(dir, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.json"), []byte(`{}`), 0o644); err != nil {
		t.Fatal(err)
	}
	md, err := Generate(dir, Options{})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{
		"_No connections chart: the results hold no data for it._",
		"No per-second series in the run of std, gnet",
		"notes.json: ", // the skipped file, named
		"](charts/latency-push.png)",
		"## Where the CPU goes",
		"No CPU profiles in these results",
		"the runs are of 2 transports and are grouped by engine alone",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, ChartsDir, "connections.png")); err == nil {
		t.Error("a connections chart was drawn without series")
	}
}

func TestTopFunctions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cpu.pprof")
	writeCPUProfile(t, path)
	top, err := topFunctions([]string{path, path}, topN)
	if err != nil {
		t.Fatalf("topFunctions: %v", err)
	}
	if top.files != 2 || top.total <= 0 || top.unit != "nanoseconds" {
		t.Fatalf("files %d, total %d %s: want 2 profiles with CPU nanoseconds", top.files, top.total, top.unit)
	}
	if len(top.byFlat) == 0 || len(top.byFlat) > topN || len(top.byCum) == 0 || len(top.byCum) > topN {
		t.Fatalf("%d by flat, %d by cum: want 1..%d each", len(top.byFlat), len(top.byCum), topN)
	}
	found := false
	for _, f := range top.byCum {
		if strings.HasSuffix(f.name, "report.burnCPU") {
			found = true
			if f.cum < top.total/2 {
				t.Errorf("burnCPU cum %d of %d: want most of the profile", f.cum, top.total)
			}
		}
		if f.flat > f.cum {
			t.Errorf("%s: flat %d > cum %d", f.name, f.flat, f.cum)
		}
	}
	if !found {
		t.Errorf("burnCPU not among the top by cum: %+v", top.byCum)
	}
	for i := 1; i < len(top.byFlat); i++ {
		if top.byFlat[i].flat > top.byFlat[i-1].flat {
			t.Errorf("by flat not sorted: %+v", top.byFlat)
		}
	}
	if _, err := topFunctions([]string{filepath.Join(t.TempDir(), "none.pprof")}, topN); err == nil {
		t.Error("a missing profile gave no error")
	}
	bad := filepath.Join(t.TempDir(), "bad.pprof")
	if err := os.WriteFile(bad, []byte("not a profile"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := topFunctions([]string{bad}, topN); err == nil {
		t.Error("a file that is not a profile gave no error")
	}
}

// capacityRun is a capacity search of engine: connect and push steps, the push step at 4000/s
// saturated, and broadcast steps held to their own limit of 500 ms (1/s at 200 ms held, 2/s at
// 700 ms did not).
func capacityRun(engine string, start time.Time, f float64) *results.Result {
	r := &results.Result{StartedAt: start, Engine: engine, Transport: "tcp", Env: results.Env{Cores: 2},
		Phases: []results.Phase{{Name: results.PhaseRamp, Conns: 1000, Target: 1000, ConnectRate: 1000}}}
	for _, rate := range []float64{1000, 2000, 4000} {
		p := results.Phase{Name: "push@" + human(rate), Workload: results.WorkloadPush, Offered: rate, Achieved: math.Min(rate, 3000*f),
			Sent: int64(rate), Delivered: int64(rate), Latency: &results.Latency{Count: 100, P50: rate / 1000 / f, P99: rate * rate / 1e5 / f}}
		if rate == 4000 {
			p.Saturated, p.Saturation = true, []string{"sent 3000/s of the 4000/s offered"}
		}
		r.Phases = append(r.Phases, p)
		c := results.Phase{Name: "connect@" + human(rate), Workload: results.WorkloadConnect, Offered: rate, Achieved: rate * 0.99}
		r.Phases = append(r.Phases, c)
	}
	for _, rate := range []float64{1, 2} {
		r.Phases = append(r.Phases, results.Phase{Name: "broadcast@" + human(rate), Workload: results.WorkloadBroadcast,
			Offered: rate, Achieved: rate, Sent: 1000 * int64(rate), Delivered: 1000 * int64(rate),
			Latency: &results.Latency{Count: 1000, P50: 100, P99: 200 + 500*(rate-1)}})
	}
	r.Capacity = &results.Capacity{P99Limit: 50, Limits: map[string]float64{results.WorkloadBroadcast: 500}, Ceilings: []results.Ceiling{
		{Workload: results.WorkloadPush, Unit: "pushes", Rate: 2000 * f, P99: 40, FailedAt: 4000, Why: "saturated", Steps: 3, P99Limit: 50},
		{Workload: results.WorkloadConnect, Unit: "connects", Rate: 4000, Steps: 3, P99Limit: 50},
		{Workload: results.WorkloadBroadcast, Unit: "messages", Rate: 1, Deliveries: 1000, P99: 200, FailedAt: 2,
			Why: "p99 700 ms over the 500 ms limit", Steps: 2, P99Limit: 500},
	}}
	return r
}

func TestGenerateCapacity(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for i, e := range []string{"std", FloorEngine, "nbio"} {
		if _, err := results.Write(dir, capacityRun(e, t0.Add(time.Duration(i)*time.Minute), 1+float64(i)/2)); err != nil {
			t.Fatal(err)
		}
	}
	md, err := Generate(dir, Options{})
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{"## Capacity", "```text", "#### push (p99 limit 50.0 ms)", "#### connect", "**SAT**",
		"| offered /s | std (round 1) | nbio (round 1) | floor (round 1) |",
		"p99 limit 50.0 ms; broadcast 500 ms", "#### broadcast (p99 limit 500 ms)",
		"p99 200 ms |", "p99 700 ms (over the limit)"} {
		if !strings.Contains(text, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	for _, c := range []string{"capacity-push", "capacity-connect", "capacity-broadcast"} {
		if !strings.Contains(text, "](charts/"+c+".png)") {
			t.Errorf("report.md does not embed %s", c)
		}
		checkPNG(t, filepath.Join(dir, ChartsDir, c+".png"))
	}
}

func TestWriteBenchFiles(t *testing.T) {
	dir := sittingDir(t)
	runs, err := ReadRuns([]string{dir})
	if err != nil {
		t.Fatalf("ReadRuns: %v", err)
	}
	if len(runs) != 9 {
		t.Fatalf("%d runs, want 9", len(runs))
	}
	out := filepath.Join(t.TempDir(), "bench")
	files, err := WriteBenchFiles(out, runs)
	if err != nil {
		t.Fatalf("WriteBenchFiles: %v", err)
	}
	want := []string{"std.txt", "gnet.txt", "floor.txt"}
	if len(files) != len(want) {
		t.Fatalf("files %v, want %v", files, want)
	}
	for i, f := range files {
		if filepath.Base(f) != want[i] {
			t.Errorf("file %d is %s, want %s", i, filepath.Base(f), want[i])
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(b), "BenchmarkPushwire/phase=push\t"); n != 3 {
			t.Errorf("%s: %d lines of the push phase, want one per round (3)", f, n)
		}
		if !strings.Contains(string(b), "engine: "+strings.TrimSuffix(want[i], ".txt")) {
			t.Errorf("%s lacks its engine line", f)
		}
	}
	if _, err := ReadRuns([]string{filepath.Join(dir, "missing.json")}); err == nil {
		t.Error("a missing file gave no error")
	}
	if _, err := WriteBenchFiles(out, nil); !errors.Is(err, ErrNoResults) {
		t.Errorf("no runs: err = %v, want ErrNoResults", err)
	}
}

func TestPerSecond(t *testing.T) {
	delivered := func(s *results.Sample) int64 { return s.Delivered }
	tests := []struct {
		name string
		in   []results.Sample
		want plotter.XYs
	}{
		{"whole seconds and a short tail merged", []results.Sample{{T: 1, Delivered: 300}, {T: 2, Delivered: 296}, {T: 3, Delivered: 304}, {T: 3.25, Delivered: 1}},
			plotter.XYs{{X: 1, Y: 300}, {X: 2, Y: 296}, {X: 3.25, Y: 305 / 1.25}}},
		{"one short sample", []results.Sample{{T: 0.5, Delivered: 300}}, plotter.XYs{{X: 0.5, Y: 600}}},
		{"two samples, the second short", []results.Sample{{T: 1, Delivered: 300}, {T: 1.1, Delivered: 30}}, plotter.XYs{{X: 1.1, Y: 330 / 1.1}}},
		{"none", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := perSecond(tt.in, delivered)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if math.Abs(got[i].X-tt.want[i].X) > 1e-9 || math.Abs(got[i].Y-tt.want[i].Y) > 1e-9 {
					t.Errorf("point %d: got %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestNiceTicks(t *testing.T) {
	labels := func(min, max float64) []string {
		var out []string
		for _, tk := range (niceTicks{}).Ticks(min, max) {
			if tk.Label != "" {
				out = append(out, tk.Label)
			}
		}
		return out
	}
	tests := []struct {
		min, max float64
		want     string
	}{
		{0, 27, "0 5 10 15 20 25"},
		{0, 4000, "0 1000 2000 3000 4000"},
		{0, 20000, "0 5k 10k 15k 20k"},
		{0, 2.5, "0 0.5 1.0 1.5 2.0 2.5"},
		{0, 300, "0 50 100 150 200 250 300"},
		{0, 1.2e6, "0 0.2M 0.4M 0.6M 0.8M 1.0M 1.2M"},
		{0.05, 0.31, "0.05 0.10 0.15 0.20 0.25 0.30"},
		{3, 3, "3"},
	}
	for _, tt := range tests {
		if got := strings.Join(labels(tt.min, tt.max), " "); got != tt.want {
			t.Errorf("Ticks(%v, %v) = %q, want %q", tt.min, tt.max, got, tt.want)
		}
	}
}
