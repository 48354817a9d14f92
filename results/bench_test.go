package results

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
	"testing"
)

func TestWriteBenchFormat(t *testing.T) {
	dup := sample()
	dup.Phases = append(dup.Phases, dup.Phases[4])
	dup.Phases[len(dup.Phases)-1].Name = "push"
	dup.Phases = append(dup.Phases, Phase{Name: "odd/name=x-1"})
	dup.Phases = append(dup.Phases, Phase{Name: "fan out-2", Deliveries: 10})
	dup.Env.CPUModel = "Some\nCPU"

	tests := []struct {
		name   string
		r      *Result
		config []string
		lines  []string // benchmark names in order
		units  []string // units that must appear
	}{
		{"sample", sample(),
			[]string{"goos: linux", "goarch: amd64", "cpu: Intel(R) Xeon(R) Processor", "go: go1.26.8",
				"gomaxprocs: 2", "engine: gnet", "transport: tcp", "conns: 10000",
				"commit: 0123456789abcdef0123456789abcdef01234567"},
			[]string{"ramp", "idle", "heartbeat", "upstream", "push", "group", "broadcast"},
			[]string{"conns", "connects/s", "rss-B/conn", "heap-B/conn", "goroutines", "gc-p99-ms",
				"gc-cpu-pct", "cpu-sec", "deliveries/s", "p50-ms", "p99-ms", "p999-ms", "max-ms",
				"sent", "delivered", "missing"}},
		{"odd names", dup,
			[]string{"cpu: Some CPU"},
			[]string{"ramp", "idle", "heartbeat", "upstream", "push", "group", "broadcast", "push#2", "fan_out_2"},
			nil},
		{"empty", &Result{}, nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := tt.r.WriteBenchFormat(&buf); err != nil {
				t.Fatal(err)
			}
			var config, names []string
			units := map[string]bool{}
			sc := bufio.NewScanner(&buf)
			for sc.Scan() {
				line := sc.Text()
				f := strings.Fields(line)
				if !strings.HasPrefix(line, "Benchmark") {
					// A configuration line: "key: value", key lower case without spaces.
					k, _, ok := strings.Cut(line, ": ")
					if !ok || k == "" || strings.ToLower(k) != k || strings.ContainsAny(k, " \t") {
						t.Errorf("bad configuration line %q", line)
					}
					if len(names) > 0 {
						t.Errorf("configuration line %q after a benchmark line", line)
					}
					config = append(config, line)
					continue
				}
				// name, iterations, then value-unit pairs.
				if len(f) < 4 || len(f)%2 != 0 {
					t.Errorf("benchmark line %q has %d fields, want name, iterations and value-unit pairs", line, len(f))
					continue
				}
				name, ok := strings.CutPrefix(f[0], "BenchmarkPushwire/phase=")
				if !ok {
					t.Errorf("benchmark name %q", f[0])
				}
				if strings.ContainsAny(name, "/=") || strings.Contains(name, "-") {
					t.Errorf("phase %q in a benchmark name would be misparsed", name)
				}
				names = append(names, name)
				if n, err := strconv.Atoi(f[1]); err != nil || n != 1 {
					t.Errorf("iterations %q, want 1", f[1])
				}
				for i := 2; i < len(f); i += 2 {
					if _, err := strconv.ParseFloat(f[i], 64); err != nil {
						t.Errorf("value %q of %q: %v", f[i], f[i+1], err)
					}
					units[f[i+1]] = true
				}
			}
			if strings.Join(config, "|") != strings.Join(tt.config, "|") && tt.name != "odd names" {
				t.Errorf("config lines\n%q\nwant\n%q", config, tt.config)
			}
			for _, c := range tt.config {
				if !contains(config, c) {
					t.Errorf("no config line %q in %q", c, config)
				}
			}
			if strings.Join(names, " ") != strings.Join(tt.lines, " ") {
				t.Errorf("phases %q, want %q", names, tt.lines)
			}
			for _, u := range tt.units {
				if !units[u] {
					t.Errorf("no %q metric", u)
				}
			}
		})
	}
}

func TestBenchFormatValues(t *testing.T) {
	var buf bytes.Buffer
	if err := sample().WriteBenchFormat(&buf); err != nil {
		t.Fatal(err)
	}
	want := "BenchmarkPushwire/phase=push\t1\t10000 conns\t1300 rss-B/conn\t950 heap-B/conn\t16 goroutines\t" +
		"0.31 gc-p99-ms\t2.1 gc-cpu-pct\t3.5 cpu-sec\t75012 deliveries/s\t0.31 p50-ms\t0.85 p99-ms\t" +
		"1.275 p999-ms\t12.5 max-ms\t2250000 sent\t2249000 delivered\t0 missing\n"
	if !strings.Contains(buf.String(), want) {
		t.Errorf("output\n%s\nlacks\n%s", buf.String(), want)
	}
}

// The figures of a measured run: rates achieved, the uncorrected p99, the cost per operation in the
// units benchstat knows (allocs/op, B/op), and the load generator's spend.
func TestBenchFormatMeasured(t *testing.T) {
	var buf bytes.Buffer
	if err := measured().WriteBenchFormat(&buf); err != nil {
		t.Fatal(err)
	}
	lines := map[string]string{}
	for l := range strings.Lines(buf.String()) {
		if name, rest, ok := strings.Cut(l, "\t"); ok {
			lines[strings.TrimPrefix(name, "BenchmarkPushwire/phase=")] = rest
		}
	}
	for _, tt := range []struct {
		phase string
		want  []string // "value unit" pairs on its line
		not   []string // units not on it
	}{
		{"ramp", []string{"12345.6 achieved/s", "61.5 cpu-us/op", "95 allocs/op", "9100 B/op", "1.5 loadgen-cpu-s", "100663296 loadgen-rss-B"},
			[]string{"cpu-us/delivery", "p99-uncorrected-ms"}},
		{"idle", []string{"3 loadgen-cpu-s"}, []string{"achieved/s", "cpu-us/op"}},
		{"upstream", []string{"14990 achieved/s", "1.9 p99-uncorrected-ms", "42.25 cpu-us/op", "31 allocs/op", "0 B/op",
			"42.26 cpu-us/delivery"}, nil},
		{"push", []string{"75100 achieved/s", "0.61 p99-uncorrected-ms", "18.7 cpu-us/op", "12.5 allocs/op",
			"18.71 cpu-us/delivery", "12.5 allocs/delivery"}, nil},
		{"broadcast", nil, []string{"achieved/s", "cpu-us/op", "p99-uncorrected-ms"}},
	} {
		line := "\t" + strings.TrimSuffix(lines[tt.phase], "\n") + "\t"
		for _, w := range tt.want {
			if !strings.Contains(line, "\t"+w+"\t") {
				t.Errorf("%s: %q lacks %q", tt.phase, line, w)
			}
		}
		for _, u := range tt.not {
			if strings.Contains(line, " "+u+"\t") {
				t.Errorf("%s: %q has %q, which the phase did not measure", tt.phase, line, u)
			}
		}
	}
}

func TestCompareMeasured(t *testing.T) {
	base, other := measured(), measured()
	other.Phases[4].Cost.CPUPerOp *= 2
	other.Phases[4].LatencyUncorrected.P99 = 0.305
	other.Phases[5].Achieved = 50
	other.Phases[5].Cost.AllocsPerDelivery = 4.2
	other.Phases[1].Loadgen.CPUSeconds = 0.75
	other.Phases[0].Loadgen = nil
	got := map[string]Ratio{}
	for _, r := range Compare(base, other) {
		got[r.Phase+"/"+r.Metric] = r
	}
	for _, tt := range []struct {
		key   string
		ratio float64 // 0: no ratio
		lower bool
	}{
		{"push/cpu_us_per_op", 2, true},
		{"push/latency_p99_uncorrected", 0.5, true},
		{"group/achieved_per_s", 0.5, false},
		{"group/allocs_per_delivery", 2, true},
		{"idle/loadgen_cpu_seconds", 0.25, true},
		{"ramp/loadgen_cpu_seconds", 0, true}, // other did not measure it
		{"ramp/loadgen_rss", 0, true},
		{"ramp/cpu_us_per_delivery", 0, true}, // a connect delivers nothing
		{"broadcast/achieved_per_s", 0, false},
	} {
		r, ok := got[tt.key]
		switch {
		case tt.ratio == 0 && ok:
			t.Errorf("%s: %+v, want no ratio", tt.key, r)
		case tt.ratio != 0 && !ok:
			t.Errorf("%s: no ratio", tt.key)
		case ok && (r.Ratio != tt.ratio || r.LowerIsBetter != tt.lower):
			t.Errorf("%s: %+v, want %v, lower is better %v", tt.key, r, tt.ratio, tt.lower)
		}
	}
}

func TestBenchFormatConns(t *testing.T) {
	r := sample()
	delete(r.Config, "conns")
	r.Phases[0].Target = 777
	var buf bytes.Buffer
	if err := r.WriteBenchFormat(&buf); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "\nconns: 777\n") {
		t.Errorf("conns not taken from the ramp target:\n%s", buf.String())
	}
	if err := r.WriteBenchFormat(failWriter{}); err == nil {
		t.Error("WriteBenchFormat hid the write error")
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}
