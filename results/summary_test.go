package results

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSummary(t *testing.T) {
	long := sample()
	long.Env.CPUModel = strings.Repeat("Very Long CPU Model Name ", 8)
	long.Phases[3].Name = "upstream-with-a-very-long-phase-name"
	long.Engine = strings.Repeat("e", 90)

	bad := sample()
	bad.Phases[0].Conns = 9990
	bad.Phases[4].Missing, bad.Phases[4].Delivered = 12, bad.Phases[4].Delivered-12
	bad.Errors = []string{"one", "two", "three", "four\nfive", "six"}

	tests := []struct {
		name    string
		r       *Result
		want    []string
		notWant []string
	}{
		{"good", sample(), []string{
			"pushwire gnet/tcp  commit 0123456789ab  go1.26.8  GOMAXPROCS 2\n",
			"cpu Intel Xeon Processor  2 cores  24.0 GB RAM  linux 6.18.44  nofile 20000\n",
			"run 20250102T150405Z-gnet-tcp  5m13s  host bench1\n",
			"ramp", "idle", "heartbeat", "upstream", "push", "group", "broadcast",
			"12.3k",   // connect rate
			"1.18",    // idle RSS per connection in KB
			"75.0k",   // push deliveries/s
			"2250000", // sent, exact below a million
			"2940000", // group sent
			"client errors: ramp dial=12 login=3",
			"check: ok",
		}, nil},
		{"problems", bad, []string{
			"check: 7 problems",
			"phase ramp: held 9990 of 10000",
			"phase push: 12 of 2250000 messages missing",
			"run: three",
			"… and 2 more",
		}, []string{"check: ok", "four", "six"}},
		{"long fields", long, []string{"…", "upstream-…"}, nil},
		{"empty", &Result{}, []string{"?/?", "(no phases)", "no phases"}, []string{"deliv/s"}},
		{"no traffic", &Result{Engine: "std", Transport: "tcp", Phases: []Phase{{Name: PhaseRamp, Conns: 5, Target: 5}}},
			[]string{"ramp", "check: ok"}, []string{"deliv/s"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tt.r.Summary(&buf); err != nil {
				t.Fatal(err)
			}
			out := buf.String()
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			for i, l := range lines {
				if n := utf8.RuneCountInString(l); n > 80 {
					t.Errorf("line %d has %d columns: %q", i+1, n, l)
				}
			}
			if len(lines) > 40 {
				t.Errorf("%d lines, want at most 40", len(lines))
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("summary lacks %q", w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(out, w) {
					t.Errorf("summary contains %q", w)
				}
			}
			if t.Failed() || testing.Verbose() {
				t.Logf("summary:\n%s", out)
			}
		})
	}
}

// TestSummaryColumns checks that every cell of a phase row starts where
// its column's header starts.
func TestSummaryColumns(t *testing.T) {
	var buf bytes.Buffer
	if err := sample().Summary(&buf); err != nil {
		t.Fatal(err)
	}
	// starts returns the offsets (in runes: headers hold a µ) of the cells of a line, cells being
	// separated by two spaces or more.
	starts := func(line string) []int {
		var s []int
		l := []rune(line)
		for i := range l {
			if l[i] != ' ' && (i == 0 || i >= 2 && string(l[i-2:i]) == "  ") {
				s = append(s, i)
			}
		}
		return s
	}
	var header []int
	rows := 0
	for l := range strings.Lines(buf.String()) {
		l = strings.TrimSuffix(l, "\n")
		switch {
		case strings.HasPrefix(l, "phase "):
			header = starts(l)
		case l == "", strings.HasPrefix(l, "SAT "), strings.HasPrefix(l, "µs, "): // a table's end, notes below it
			header = nil
		case header != nil:
			rows++
			if got := starts(l); !slices.Equal(got, header) {
				t.Errorf("row %q cells start at %v, header columns at %v", l, got, header)
			}
		}
	}
	if rows != 7+5+5 {
		t.Errorf("%d table rows, want 17", rows)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestSummaryWriteError(t *testing.T) {
	if err := sample().Summary(failWriter{}); err == nil {
		t.Error("Summary hid the write error")
	}
}

func TestHuman(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{0, "0"}, {0.0004, "<0.001"}, {0.0123, "0.012"}, {0.85, "0.850"}, {1.234, "1.23"},
		{12.34, "12.3"}, {999.4, "999"}, {999.6, "1.0k"}, {10000, "10.0k"}, {12345.6, "12.3k"},
		{999960, "1.0M"}, {1.5e6, "1.5M"}, {2e9, "2.0G"}, {-1500, "-1.5k"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.v), func(t *testing.T) {
			if got := human(tt.v); got != tt.want {
				t.Errorf("human(%v) = %q, want %q", tt.v, got, tt.want)
			}
			if got := Human(tt.v); got != tt.want {
				t.Errorf("Human(%v) = %q, want %q", tt.v, got, tt.want)
			}
		})
	}
}

func TestHumanBytes(t *testing.T) {
	tests := []struct {
		b    uint64
		want string
	}{
		{0, "0 B"}, {1023, "1023 B"}, {1024, "1.00 KB"}, {1290240, "1.23 MB"},
		{24 << 30, "24.0 GB"}, {512 << 20, "512 MB"},
	}
	for _, tt := range tests {
		if got := humanBytes(tt.b); got != tt.want {
			t.Errorf("humanBytes(%d) = %q, want %q", tt.b, got, tt.want)
		}
	}
}

// TestSummaryWidestValues fills every column with its widest value: the
// tables must fit 80 columns without being cut.
func TestSummaryWidestValues(t *testing.T) {
	r := sample()
	for i := range r.Phases {
		p := &r.Phases[i]
		p.Name = "abcdefghij"
		p.Conns, p.ConnectRate = 9999999, 999.9e3
		p.Gateway.RSSPerConn, p.Gateway.HeapPerConn = -999.9e3*1024, 999.9e3*1024
		p.Gateway.Goroutines = 9999999
		p.Gateway.GCPauseP99, p.Gateway.GCCPUShare = 999.9e3, 9999
		p.Deliveries = 999.9e3
		p.Latency = &Latency{Count: 1, P50: 0.0001, P99: 999.9e3, Max: 999.9e3}
		p.Sent, p.Delivered, p.Offline, p.Missing = 9999999, 9999999, 9999999, -9999999
		p.Offered, p.Achieved = 999.9e3, 999.9e3
		p.LatencyUncorrected = &Latency{Count: 1, P99: 999.9e3}
		p.Saturated, p.Saturation = true, []string{strings.Repeat("a long reason ", 10)}
		p.Cost = &Cost{Op: "connect", Ops: 1, CPUPerOp: 999.9e3, AllocsPerOp: 999.9e3, Deliveries: 1, CPUPerDelivery: 999.9e3}
		p.Loadgen = &Loadgen{Processes: 1, CPUSeconds: 999.9e3, RSSBytes: 1023 << 40}
	}
	r.Phases = r.Phases[:2]
	var buf bytes.Buffer
	if err := r.Summary(&buf); err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(buf.String()) {
		if strings.HasPrefix(l, "abcdefghij") && strings.Contains(l, "…") {
			t.Errorf("table row cut: %q", l)
		}
		if n := utf8.RuneCountInString(strings.TrimSuffix(l, "\n")); n > 80 {
			t.Errorf("line has %d columns: %q", n, l)
		}
	}
	if t.Failed() {
		t.Logf("summary:\n%s", buf.String())
	}
}

func TestSummaryHostileNames(t *testing.T) {
	r := sample()
	r.Phases[1].Name = "id\tle\nx"
	r.Phases[1].Errors = map[string]int64{"a\tb": 1}
	var buf bytes.Buffer
	if err := r.Summary(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "\nid le x  ") || !strings.Contains(buf.String(), "id le x a b=1") {
		t.Errorf("names not flattened:\n%s", buf.String())
	}
}

func TestSummaryCluster(t *testing.T) {
	r := sample()
	r.Cluster = &Cluster{Route: "redis", Mode: "registry", RedisVersion: "7.2.4", RedisMemoryBytes: 3 << 20, Workers: 7}
	push := &r.Phases[4]
	push.Pushes, push.Forwarded, push.RedisCommands, push.RedisCommandsPerPush = 20000, 16650, 5000, 0.25
	push.Remote = &Remote{Instances: 16650, Reported: 16650, Delivered: 16648, Offline: 1, Stale: 1}
	r.Phases[1].PerInstance = []Instance{{Node: "gw0", Conns: 16667}, {Node: "gw1", Conns: 16666}}
	var b strings.Builder
	if err := r.Summary(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"cluster: route redis, mode registry, redis 7.2.4 (3.00 MB), 7 loadgen workers",
		"push   20000   16650      2                 0.25",
		"0.25",
		"instances: gw0 16667, gw1 16666",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	for line := range strings.Lines(out) {
		if n := utf8.RuneCountInString(strings.TrimRight(line, "\n")); n > summaryWidth {
			t.Errorf("line of %d columns: %q", n, line)
		}
	}
}

// measured is sample with the figures of a run that measured rates, cost and the load
// generator's spend, its push phase saturated.
func measured() *Result {
	r := sample()
	r.Phases[0].Offered, r.Phases[0].Achieved = 12500, 12345.6
	r.Phases[0].Cost = &Cost{Op: "connect", Ops: 10000, CPUPerOp: 61.5, AllocsPerOp: 95, AllocBytesPerOp: 9100}
	for i := range r.Phases {
		r.Phases[i].Loadgen = &Loadgen{Processes: 2, CPUSeconds: 1.5 * float64(i+1), RSSBytes: 96 << 20}
	}
	up := &r.Phases[3]
	up.Offered, up.Achieved = 15000, 14990
	up.LatencyUncorrected = &Latency{Count: 449990, P50: 0.4, P99: 1.9, Max: 16}
	up.Cost = &Cost{Op: "request", Ops: 450000, CPUPerOp: 42.25, AllocsPerOp: 31, Deliveries: 449990, CPUPerDelivery: 42.26}
	push := &r.Phases[4]
	push.Offered, push.Achieved = 100000, 75100
	push.Saturated, push.Saturation = true, []string{"sent 75100/s of the 100000/s offered", "latency grew from 0.3 ms to 12 ms"}
	push.LatencyUncorrected = &Latency{Count: 2249000, P50: 0.2, P99: 0.61, Max: 3}
	push.Cost = &Cost{Op: "push", Ops: 2250000, CPUPerOp: 18.7, AllocsPerOp: 12.5, Deliveries: 2249000, CPUPerDelivery: 18.71, AllocsPerDelivery: 12.5}
	group := &r.Phases[5]
	group.Offered, group.Achieved = 100, 100
	group.Cost = &Cost{Op: "push", Ops: 3000, CPUPerOp: 1250, AllocsPerOp: 2100, Deliveries: 2940000, CPUPerDelivery: 1.28, AllocsPerDelivery: 2.1}
	return r
}

func TestSummaryMeasured(t *testing.T) {
	var buf bytes.Buffer
	if err := measured().Summary(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	row := func(prefix string) string {
		for l := range strings.Lines(out) {
			if strings.HasPrefix(l, prefix) && strings.Contains(l, "  ") {
				return strings.Join(strings.Fields(l), " ")
			}
		}
		return ""
	}
	// the first row of each table for a phase: the gateways, traffic, then cost
	rows := map[string][]string{}
	for l := range strings.Lines(out) {
		f := strings.Fields(l)
		if len(f) > 2 && !strings.HasPrefix(l, " ") {
			rows[f[0]] = append(rows[f[0]], strings.Join(f, " "))
		}
	}
	for _, tt := range []struct {
		phase string
		table int // 1: traffic, 2: cost
		want  string
	}{
		{"ramp", 1, "ramp 12.5k 12.3k - - - - -"},
		{"ramp", 2, "ramp - - 61.5 95.0 - 1.50 96.0 MB"},
		{"idle", 1, "idle - - 1.15 0.830"}, // idle has no traffic: its second row is the cost table's
		{"upstream", 1, "upstream 15.0k 15.0k 15.0k 0.450 2.30 1.90 17.0"},
		{"upstream", 2, "upstream 450000 0 42.2 31.0 42.3 6.00 96.0 MB"},
		{"push", 2, "push 2250000 0 18.7 12.5 18.7 7.50 96.0 MB"},
		{"group", 1, "group 100 100 98.0k 3.20 41.0 - 160"},
		{"group", 2, "group 2940000 0 1.2k 2.1k 1.28 9.00 96.0 MB"},
	} {
		got := rows[tt.phase]
		if len(got) <= tt.table && tt.phase != "idle" || tt.phase == "idle" && !strings.HasPrefix(strings.Join(got, "|"), "idle") {
			t.Errorf("%s: rows %q", tt.phase, got)
			continue
		}
		if tt.phase == "idle" {
			if len(got) != 2 || !strings.HasPrefix(got[1], "idle - - - - - 3.00 96.0 MB") {
				t.Errorf("idle: rows %q, want the gateways' and the cost table's (its load generator spend only)", got)
			}
			continue
		}
		if got[tt.table] != tt.want {
			t.Errorf("%s, table %d:\n got %q\nwant %q", tt.phase, tt.table+1, got[tt.table], tt.want)
		}
	}
	if r := row("push SAT"); r != "push SAT 100.0k 75.1k 75.0k 0.310 0.850 0.610 12.5" {
		t.Errorf("saturated push row %q", r)
	}
	for _, want := range []string{
		"\nSAT push: sent 75100/s of the 100000/s offered; latency grew from 0.3 ms to 12 …\n",
		"check: 1 problem\n  phase push: saturated (sent 75100/s",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	for i, l := range lines {
		if n := utf8.RuneCountInString(l); n > 80 {
			t.Errorf("line %d has %d columns: %q", i+1, n, l)
		}
	}
	if len(lines) > 40 {
		t.Errorf("%d lines, want at most 40", len(lines))
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("summary:\n%s", out)
	}
}

// A capacity search saturates many steps on purpose: the reasons of the first few are listed.
func TestSummaryManySaturated(t *testing.T) {
	r := measured()
	for i := range 9 {
		r.Phases = append(r.Phases, Phase{Name: fmt.Sprintf("push@%d", 1000*(i+1)), Workload: WorkloadPush,
			Offered: float64(1000 * (i + 1)), Achieved: 900, Saturated: true, Saturation: []string{"sent 900/s"}})
	}
	var buf bytes.Buffer
	if err := r.Summary(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if n := strings.Count(out, "\nSAT "); n != summaryProblems+1 {
		t.Errorf("%d SAT lines, want %d:\n%s", n, summaryProblems+1, out)
	}
	if !strings.Contains(out, "\nSAT … and 5 more phases\n") || !strings.Contains(out, "\npush@9000 SAT ") {
		t.Errorf("summary:\n%s", out)
	}
}
