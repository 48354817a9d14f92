package results

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"
)

// Summary layout limits.
const (
	summaryWidth    = 80 // columns per line
	summaryPhaseLen = 10 // runes of a phase name in the tables
	summaryProblems = 5  // Check problems listed before "… and N more"
)

// Summary writes a one-screen plain-text summary of r: lines of at most 80
// columns, under 40 lines for the usual seven phases. Three header lines
// give the engine, transport, commit, Go version and GOMAXPROCS; the CPU
// and machine; the run ID, duration and host. Three tables follow, one row
// per phase:
//   - the gateways: connections held, logins/s, RSS and heap per connection
//     in KB, goroutines, GC pause p99 in ms, GC share of CPU;
//   - traffic, for the phases with a rate or deliveries: the rate offered
//     and the rate achieved (ramp: connects/s), deliveries/s, latency p50,
//     p99 and max in ms from the intended send times, and p99 from the
//     actual sends ("p99 unc"); a saturated phase is marked SAT after its
//     name, and a line per saturated phase below the table (the first five)
//     gives the reasons;
//   - cost: messages sent and missing, the gateways' CPU µs and allocations
//     per operation (a connect, request or push API call) and CPU µs per
//     delivery, the load generator's CPU seconds and RSS;
//
// then the cluster's figures, client errors and the outcome of Check.
//
// "-" marks a figure the phase did not measure. Large numbers are
// shortened (12.3k, 1.5M; 1 KB = 1024 bytes); counts below ten million
// are exact. A line that would still pass 80 columns is cut with "…".
func (r *Result) Summary(w io.Writer) error {
	var buf bytes.Buffer
	r.summary(&buf)
	var out strings.Builder
	for line := range strings.Lines(buf.String()) {
		out.WriteString(clip(strings.TrimRight(line, " \n"), summaryWidth))
		out.WriteByte('\n')
	}
	_, err := io.WriteString(w, out.String())
	return err
}

func (r *Result) summary(buf *bytes.Buffer) {
	e := &r.Env
	line := func(parts ...string) {
		fmt.Fprintln(buf, strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), "  "))
	}
	given := func(ok bool, s string) string {
		if !ok {
			return ""
		}
		return s
	}
	line("pushwire "+orUnknown(r.Engine)+"/"+orUnknown(r.Transport),
		given(e.Commit != "", "commit "+shortCommit(e.Commit)),
		e.GoVersion,
		given(e.GOMAXPROCS > 0, "GOMAXPROCS "+strconv.Itoa(e.GOMAXPROCS)))
	line(given(e.CPUModel != "", "cpu "+cleanCPU(e.CPUModel)),
		given(e.Cores > 0, strconv.Itoa(e.Cores)+" cores"),
		given(e.MemoryBytes > 0, humanBytes(e.MemoryBytes)+" RAM"),
		given(e.Kernel != "", strings.TrimSpace(e.OS+" "+e.Kernel)),
		given(e.FileLimit > 0, "nofile "+count(int64(min(e.FileLimit, math.MaxInt64)))))
	line("run "+r.ID,
		given(r.Duration > 0, seconds(r.Duration)),
		given(e.Hostname != "", "host "+e.Hostname))
	for _, l := range append(e.Conditions(), e.Warnings()...) {
		line(l)
	}
	if pl := r.Placement.String(); pl != "" {
		line(pl)
	}

	keys := phaseKeys(r.Phases)
	for i, k := range keys {
		keys[i] = oneLine(k) // a tab or newline in a name would break the tables
	}
	if len(r.Phases) == 0 {
		fmt.Fprintln(buf, "\n(no phases)")
	} else {
		fmt.Fprintln(buf)
		tw := tabwriter.NewWriter(buf, 0, 0, 2, ' ', 0) // over a bytes.Buffer: its writes do not fail
		_, _ = fmt.Fprintln(tw, "phase\tconns\tconn/s\trss/c KB\theap/c KB\tgorout\tgc p99 ms\tgc cpu%")
		for i := range r.Phases {
			p, g := &r.Phases[i], &r.Phases[i].Gateway
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
				clip(keys[i], summaryPhaseLen),
				count(int64(p.Conns)),
				opt(human(p.ConnectRate), p.ConnectRate > 0),
				opt(human(g.RSSPerConn/1024), g.RSSBytes > 0),
				opt(human(g.HeapPerConn/1024), g.HeapBytes > 0),
				opt(count(int64(g.Goroutines)), g.Goroutines > 0),
				opt(human(g.GCPauseP99*1e3), g.GCCount > 0),
				opt(human(g.GCCPUShare*100), g.CPUSeconds > 0))
		}
		_ = tw.Flush()
	}

	var traffic []int
	for i := range r.Phases {
		p := &r.Phases[i]
		if p.Sent > 0 || p.Delivered > 0 || p.Deliveries > 0 || p.Latency != nil || p.Offered > 0 || p.Saturated {
			traffic = append(traffic, i)
		}
	}
	if len(traffic) > 0 {
		fmt.Fprintln(buf)
		tw := tabwriter.NewWriter(buf, 0, 0, 2, ' ', 0) // over a bytes.Buffer: its writes do not fail
		_, _ = fmt.Fprintln(tw, "phase\toffer/s\tachvd/s\tdeliv/s\tp50 ms\tp99 ms\tp99 unc\tmax ms")
		for _, i := range traffic {
			p := &r.Phases[i]
			l, hasL := latencyOrZero(p.Latency)
			u, hasU := latencyOrZero(p.LatencyUncorrected)
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
				phaseCell(keys[i], p.Saturated),
				opt(human(p.Offered), p.Offered > 0),
				opt(human(p.Achieved), p.Offered > 0 || p.Achieved > 0),
				opt(human(p.Deliveries), p.Deliveries > 0),
				opt(human(l.P50), hasL),
				opt(human(l.P99), hasL),
				opt(human(u.P99), hasU),
				opt(human(l.Max), hasL))
		}
		_ = tw.Flush()
		var sat []int
		for _, i := range traffic {
			if r.Phases[i].Saturated {
				sat = append(sat, i)
			}
		}
		for n, i := range sat {
			if n == summaryProblems && len(sat) > summaryProblems+1 {
				fmt.Fprintf(buf, "SAT … and %d more phases\n", len(sat)-n)
				break
			}
			why := oneLine(strings.Join(r.Phases[i].Saturation, "; "))
			if why == "" {
				why = "no reason recorded"
			}
			fmt.Fprintln(buf, "SAT "+keys[i]+": "+why)
		}
	}

	var costs []int
	for i := range r.Phases {
		p := &r.Phases[i]
		if p.Sent > 0 || p.Delivered > 0 || p.Missing != 0 || p.Cost != nil || p.Loadgen != nil {
			costs = append(costs, i)
		}
	}
	if len(costs) > 0 {
		fmt.Fprintln(buf)
		tw := tabwriter.NewWriter(buf, 0, 0, 2, ' ', 0) // over a bytes.Buffer: its writes do not fail
		_, _ = fmt.Fprintln(tw, "phase\tsent\tmissing\tµs/op\tallocs/op\tµs/deliv\tlg cpu s\tlg rss")
		for _, i := range costs {
			p := &r.Phases[i]
			c, hasC := p.Cost, p.Cost != nil
			if c == nil {
				c = new(Cost)
			}
			lg, hasLG := p.Loadgen, p.Loadgen != nil && p.Loadgen.Processes > 0
			if lg == nil {
				lg = new(Loadgen)
			}
			sent := p.Sent > 0 || p.Delivered > 0
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
				clip(keys[i], summaryPhaseLen),
				opt(count(p.Sent), sent),
				opt(count(p.Missing), sent || p.Missing != 0),
				opt(human(c.CPUPerOp), hasC),
				opt(human(c.AllocsPerOp), hasC),
				opt(human(c.CPUPerDelivery), hasC && c.Deliveries > 0),
				opt(human(lg.CPUSeconds), hasLG),
				opt(humanBytes(lg.RSSBytes), hasLG))
		}
		_ = tw.Flush()
		fmt.Fprintln(buf, "µs, allocs: the gateways', per connect, request or push call; lg: load generator")
	}

	r.clusterSummary(buf, keys)

	fmt.Fprintln(buf)
	if ce := r.clientErrors(keys); ce != "" {
		fmt.Fprintln(buf, "client errors: "+ce)
	}
	err := r.Check()
	if err == nil {
		fmt.Fprintln(buf, "check: ok")
		return
	}
	problems := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		problems = j.Unwrap()
	}
	noun := "problems"
	if len(problems) == 1 {
		noun = "problem"
	}
	fmt.Fprintf(buf, "check: %d %s\n", len(problems), noun)
	for i, p := range problems {
		if i == summaryProblems && len(problems) > summaryProblems+1 {
			fmt.Fprintf(buf, "  … and %d more\n", len(problems)-i)
			break
		}
		fmt.Fprintln(buf, "  "+oneLine(p.Error()))
	}
}

// clusterSummary writes, for a run that recorded its route layer, one line naming it and a table
// of the push phases' cluster figures (forwarded to other instances, remote reports of offline
// or stale targets, Redis commands per push), then each instance's connections at the idle phase
// (or the last phase) when there were several.
func (r *Result) clusterSummary(buf *bytes.Buffer, keys []string) {
	c := r.Cluster
	if c == nil {
		return
	}
	fmt.Fprintln(buf)
	parts := []string{"cluster: route " + orUnknown(c.Route), "mode " + orUnknown(c.Mode)}
	if c.RedisVersion != "" {
		parts = append(parts, "redis "+c.RedisVersion+" ("+humanBytes(c.RedisMemoryBytes)+")")
	}
	if c.Workers > 0 {
		noun := " loadgen workers"
		if c.Workers == 1 {
			noun = " loadgen worker"
		}
		parts = append(parts, strconv.Itoa(c.Workers)+noun)
	}
	fmt.Fprintln(buf, strings.Join(parts, ", "))
	var rows []int
	for i := range r.Phases {
		if r.Phases[i].Pushes > 0 {
			rows = append(rows, i)
		}
	}
	if len(rows) > 0 {
		tw := tabwriter.NewWriter(buf, 0, 0, 2, ' ', 0) // over a bytes.Buffer: its writes do not fail
		_, _ = fmt.Fprintln(tw, "phase	pushes	forwarded	remote off+stale	redis cmds/push")
		for _, i := range rows {
			p := &r.Phases[i]
			var remote int64
			if p.Remote != nil {
				remote = p.Remote.Offline + p.Remote.Stale
			}
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", clip(keys[i], summaryPhaseLen), count(p.Pushes), count(p.Forwarded),
				count(remote), opt(strconv.FormatFloat(p.RedisCommandsPerPush, 'f', 2, 64), p.RedisCommands > 0))
		}
		_ = tw.Flush()
	}
	var inst []Instance
	for i := range r.Phases {
		if len(r.Phases[i].PerInstance) > 0 && (inst == nil || r.Phases[i].Name == PhaseIdle) {
			inst = r.Phases[i].PerInstance
			if r.Phases[i].Name == PhaseIdle {
				break
			}
		}
	}
	if len(inst) > 0 {
		var b []string
		for _, in := range inst {
			b = append(b, orUnknown(in.Node)+" "+count(int64(in.Conns)))
		}
		fmt.Fprintln(buf, "instances: "+strings.Join(b, ", "))
	}
}

// clientErrors renders the phases' client-side errors on one line:
// "ramp dial=12 login=3; push timeout=1".
func (r *Result) clientErrors(keys []string) string {
	var parts []string
	for i := range r.Phases {
		errs := r.Phases[i].Errors
		if len(errs) == 0 {
			continue
		}
		s := keys[i]
		for _, k := range slices.Sorted(maps.Keys(errs)) {
			s += " " + oneLine(k) + "=" + count(errs[k])
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// phaseCell is a phase's name in a table, marked " SAT" when the phase saturated.
func phaseCell(key string, saturated bool) string {
	if !saturated {
		return clip(key, summaryPhaseLen)
	}
	return clip(key, summaryPhaseLen) + " SAT"
}

// latencyOrZero returns l, or a zero Latency and false when the phase measured none.
func latencyOrZero(l *Latency) (*Latency, bool) {
	if l == nil || l.Count == 0 {
		return new(Latency), false
	}
	return l, true
}

// Human formats v shortly as every table of this package does: three
// significant digits below 1000 ("0.012", "1.23", "12.3", "950"), then one
// decimal with a k, M, G or T suffix ("10.0k", "1.5M"). Other packages that
// print the same figures (the report) use it, so a figure reads the same
// everywhere.
func Human(v float64) string { return human(v) }

// human is Human, the short name this package's tables call.
func human(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 0):
		return strconv.FormatFloat(v, 'f', -1, 64)
	case v < 0:
		return "-" + human(-v)
	}
	if v < 999.5 {
		var s string
		switch {
		case v >= 99.95:
			s = strconv.FormatFloat(v, 'f', 0, 64)
		case v >= 9.995:
			s = strconv.FormatFloat(v, 'f', 1, 64)
		case v >= 0.9995:
			s = strconv.FormatFloat(v, 'f', 2, 64)
		default:
			s = strconv.FormatFloat(v, 'f', 3, 64)
		}
		if s == "0.000" {
			return "<0.001"
		}
		return s
	}
	for _, u := range []string{"k", "M", "G", "T"} {
		v /= 1000
		if v < 999.95 || u == "T" {
			return strconv.FormatFloat(v, 'f', 1, 64) + u
		}
	}
	panic("unreachable")
}

// count formats n exactly when it fits 7 columns (-999999 to 9999999),
// else as human does.
func count(n int64) string {
	if n > -1e6 && n < 1e7 {
		return strconv.FormatInt(n, 10)
	}
	return human(float64(n))
}

// humanBytes formats b with 1024-based units and three significant digits:
// "512 B", "1.23 MB", "24.0 GB".
func humanBytes(b uint64) string {
	if b < 1024 {
		return strconv.FormatUint(b, 10) + " B"
	}
	v := float64(b)
	for _, u := range []string{"KB", "MB", "GB", "TB", "PB"} {
		v /= 1024
		if v < 999.5 || u == "PB" {
			prec := 2
			if v >= 99.95 {
				prec = 0
			} else if v >= 9.995 {
				prec = 1
			}
			return strconv.FormatFloat(v, 'f', prec, 64) + " " + u
		}
	}
	panic("unreachable")
}

// seconds formats a duration in seconds: "42.0s", "2m5s".
func seconds(s float64) string {
	if s < 60 {
		return strconv.FormatFloat(s, 'f', 1, 64) + "s"
	}
	return time.Duration(s * float64(time.Second)).Round(time.Second).String()
}

// opt returns s, or "-" when the figure was not measured.
func opt(s string, ok bool) string {
	if !ok {
		return "-"
	}
	return s
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

// shortCommit keeps the first 12 hex digits of a commit hash and any
// suffix such as "-dirty".
func shortCommit(c string) string {
	hash, suffix, _ := strings.Cut(c, "-")
	if len(hash) > 12 {
		hash = hash[:12]
	}
	if suffix != "" {
		return hash + "-" + suffix
	}
	return hash
}

// cleanCPU drops trademark marks from a CPU model name.
func cleanCPU(s string) string {
	s = strings.NewReplacer("(R)", "", "(r)", "", "(TM)", "", "(tm)", "").Replace(s)
	return oneLine(s)
}

// clip shortens s to at most n runes, ending it with "…" when cut.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	rs := []rune(s)
	return string(rs[:n-1]) + "…"
}
