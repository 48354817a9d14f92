package results

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode"
)

// benchName is the benchmark every phase line belongs to.
const benchName = "BenchmarkPushwire"

// WriteBenchFormat writes r in the Go benchmark text format
// (https://golang.org/design/14313-benchmark-format), so benchstat
// compares runs as it compares `go test -bench` output. Configuration
// lines come first (goos, goarch, cpu, go, gomaxprocs, engine, transport,
// conns, commit; empty ones are left out), then one line per phase:
//
//	BenchmarkPushwire/phase=push	1	75012 deliveries/s	0.85 p99-ms	812 rss-B/conn	…
//
// The iteration count is 1; the metrics are those of Compare with units
// without spaces (times in ms, memory in bytes): among them achieved/s,
// p99-uncorrected-ms, the gateways' cost per operation as cpu-us/op,
// allocs/op and B/op (the units benchstat knows from go test -benchmem)
// and per delivery (cpu-us/delivery, allocs/delivery), and the load
// generator's loadgen-cpu-s and loadgen-rss-B. A repeated phase name gets
// "#2", "#3"…; characters that would break the name become '_'.
//
// benchstat puts results with different configuration values in separate
// tables, so name the key that differs, for example:
//
//	benchstat -col engine -ignore commit std.txt gnet.txt
//	benchstat -col commit before.txt after.txt
func (r *Result) WriteBenchFormat(w io.Writer) error {
	bw := bufio.NewWriter(w)
	config := [][2]string{
		{"goos", r.Env.OS},
		{"goarch", r.Env.Arch},
		{"cpu", r.Env.CPUModel},
		{"go", r.Env.GoVersion},
		{"gomaxprocs", positive(r.Env.GOMAXPROCS)},
		{"engine", r.Engine},
		{"transport", r.Transport},
		{"conns", r.conns()},
		{"commit", r.Env.Commit},
	}
	for _, kv := range config {
		if v := oneLine(kv[1]); v != "" {
			_, _ = fmt.Fprintf(bw, "%s: %s\n", kv[0], v) // bw keeps its first error for Flush
		}
	}
	for i, key := range phaseKeys(r.Phases) {
		p := &r.Phases[i]
		var line strings.Builder
		line.WriteString(benchName + "/phase=" + benchNamePart(key) + "\t1")
		n := 0
		for _, m := range metrics {
			v, ok := m.value(p)
			if !ok {
				continue
			}
			n++
			line.WriteString("\t" + strconv.FormatFloat(v, 'f', -1, 64) + " " + m.unit)
		}
		if n == 0 {
			continue // a benchmark line needs at least one value
		}
		line.WriteByte('\n')
		_, _ = bw.WriteString(line.String()) // bw keeps its first error for Flush
	}
	return bw.Flush()
}

// conns returns the run's target connections: config "conns" when set,
// else the ramp phase's target, else "".
func (r *Result) conns() string {
	if v, ok := r.Config["conns"]; ok && v != nil {
		return fmt.Sprint(v)
	}
	for i := range r.Phases {
		if r.Phases[i].Name == PhaseRamp && r.Phases[i].Target > 0 {
			return strconv.Itoa(r.Phases[i].Target)
		}
	}
	return ""
}

// positive formats n, or "" when n is not positive.
func positive(n int) string {
	if n <= 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// oneLine collapses all white space in s, newlines included, to single
// spaces.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// benchNamePart makes s usable inside a benchmark name: no white space,
// no '/' or '=' (which separate sub-names and keys) and no '-' (a trailing
// "-N" reads as GOMAXPROCS).
func benchNamePart(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == '=' || r == '-' || unicode.IsSpace(r) || unicode.IsControl(r) {
			return '_'
		}
		return r
	}, s)
}
