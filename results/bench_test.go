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
