package results

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Files CaptureEnv reads on Linux; variables so tests can point them elsewhere.
var (
	cpuinfoPath   = "/proc/cpuinfo"
	meminfoPath   = "/proc/meminfo"
	osreleasePath = "/proc/sys/kernel/osrelease"
	loadavgPath   = "/proc/loadavg"
	sockstatPath  = "/proc/net/sockstat"
	procDir       = "/proc"
	// busyWindow is how long CaptureEnv watches the other processes' CPU.
	busyWindow = 500 * time.Millisecond
)

// Thresholds of the machine's load before a run.
const (
	// BusyShare is the share of one core above which another process is listed in Env.Busy.
	BusyShare = 0.05
	// BusyWarnShare is the share of one core above which a busy process earns a warning.
	BusyWarnShare = 0.5
	// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat (100 on every Linux
	// architecture Go supports).
	clockTicks = 100
)

// CaptureEnv describes the machine and build this process runs on: Go
// version, OS, architecture, GOMAXPROCS and logical CPUs from the runtime,
// the CPU model from /proc/cpuinfo ("model name"), the memory from
// /proc/meminfo (MemTotal), the kernel release from
// /proc/sys/kernel/osrelease, the host name and the RLIMIT_NOFILE soft
// limit; and the machine's load before the run: the load averages
// (/proc/loadavg), the TCP sockets in use (/proc/net/sockstat) and the other
// processes that used more than BusyShare of a core over half a second
// (/proc/<pid>/stat), busiest first, leaving out this process's own tree (the
// bench and every process it started: see ownTree). commit is stored as given; when empty, the VCS revision stamped
// in the binary by the go command is used, suffixed "-dirty" for a modified
// tree. A field it cannot read stays empty; it never fails.
func CaptureEnv(commit string) Env {
	e := Env{
		Commit:      commit,
		GoVersion:   runtime.Version(),
		OS:          runtime.GOOS,
		Arch:        runtime.GOARCH,
		GOMAXPROCS:  runtime.GOMAXPROCS(0),
		Cores:       runtime.NumCPU(),
		CPUModel:    cpuModel(cpuinfoPath),
		MemoryBytes: memTotal(meminfoPath),
		Kernel:      readTrimmed(osreleasePath),
		FileLimit:   fileLimit(),
		LoadAvg:     loadAvg(loadavgPath),
		TCPSockets:  tcpInUse(sockstatPath),
	}
	e.Busy = busyProcs(procDir, busyWindow)
	if e.Commit == "" {
		e.Commit = buildCommit()
	}
	if h, err := os.Hostname(); err == nil {
		e.Hostname = h
	}
	return e
}

// buildCommit returns the vcs.revision the go command stamped into the
// binary, with "-dirty" when vcs.modified is true, or "".
func buildCommit() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	var rev string
	var dirty bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// cpuModel returns the first "model name" in a /proc/cpuinfo file, or "".
func cpuModel(path string) string {
	v, _ := procField(path, "model name")
	return v
}

// memTotal returns MemTotal of a /proc/meminfo file in bytes, or 0.
func memTotal(path string) uint64 {
	v, ok := procField(path, "MemTotal")
	if !ok {
		return 0
	}
	f := strings.Fields(v) // "24576000 kB"
	if len(f) == 0 {
		return 0
	}
	n, err := strconv.ParseUint(f[0], 10, 64)
	if err != nil {
		return 0
	}
	if len(f) > 1 && strings.EqualFold(f[1], "kB") {
		n *= 1024
	}
	return n
}

// procField returns the value of the first "key : value" line of a /proc
// text file whose key is key.
func procField(path, key string) (string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v), true
		}
	}
	return "", false
}

// readTrimmed returns the contents of a small file without surrounding
// space, or "".
func readTrimmed(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// loadAvg returns the 1, 5 and 15 minute load averages of a /proc/loadavg file, or nil.
func loadAvg(path string) []float64 {
	f := strings.Fields(readTrimmed(path))
	if len(f) < 3 {
		return nil
	}
	out := make([]float64, 3)
	for i := range out {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return nil
		}
		out[i] = v
	}
	return out
}

// tcpInUse returns "TCP: inuse N" of a /proc/net/sockstat file, or 0.
func tcpInUse(path string) int {
	v, ok := procField(path, "TCP") // "inuse 1 orphan 0 tw 0 alloc 1 mem 144"
	if !ok {
		return 0
	}
	f := strings.Fields(v)
	for i := 0; i+1 < len(f); i += 2 {
		if f[i] == "inuse" {
			n, err := strconv.Atoi(f[i+1])
			if err == nil {
				return n
			}
		}
	}
	return 0
}

// procStat is what busyProcs reads of one /proc/<pid>/stat.
type procStat struct {
	pid, ppid int
	name      string
	ticks     uint64 // utime + stime
}

// readProcStat parses /proc/<pid>/stat text: the command name is in parentheses and may hold
// spaces or ')', so the fields are counted from the last ')'.
func readProcStat(b []byte) (procStat, bool) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return procStat{}, false
	}
	f := strings.Fields(string(b[end+1:])) // f[0] is field 3 (state): field n is f[n-3]
	if len(f) < 15-3+1 {
		return procStat{}, false
	}
	ppid, err1 := strconv.Atoi(f[4-3])
	utime, err2 := strconv.ParseUint(f[14-3], 10, 64)
	stime, err3 := strconv.ParseUint(f[15-3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return procStat{}, false
	}
	return procStat{pid: pid, ppid: ppid, name: string(b[open+1 : end]), ticks: utime + stime}, true
}

// scanProcs reads the stat of every process under dir (a /proc), by pid.
func scanProcs(dir string) map[int]procStat {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := make(map[int]procStat, len(ents))
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		if s, ok := readProcStat(b); ok {
			out[s.pid] = s
		}
	}
	return out
}

// busyProcs returns the processes under dir (a /proc) that used more than BusyShare of a core
// over window, as "pid name cpu%", busiest first, leaving out ownTree's processes. It returns nil
// when dir cannot be read.
func busyProcs(dir string, window time.Duration) []string {
	before := scanProcs(dir)
	if len(before) == 0 {
		return nil
	}
	start := time.Now()
	time.Sleep(window)
	after := scanProcs(dir)
	return busyBetween(before, after, time.Since(start).Seconds(), ownTree(dir, after))
}

// busyBetween lists the processes of after, not in own, whose CPU time grew by more than
// BusyShare of elapsed seconds since before, as "pid name cpu%", busiest first.
func busyBetween(before, after map[int]procStat, elapsed float64, own map[int]bool) []string {
	if elapsed <= 0 {
		return nil
	}
	type busy struct {
		procStat
		share float64
	}
	var list []busy
	for pid, a := range after {
		b, ok := before[pid]
		if !ok || own[pid] || a.ticks < b.ticks {
			continue
		}
		share := float64(a.ticks-b.ticks) / clockTicks / elapsed
		if share > BusyShare {
			list = append(list, busy{a, share})
		}
	}
	slices.SortFunc(list, func(x, y busy) int { return cmp.Or(cmp.Compare(y.share, x.share), cmp.Compare(x.pid, y.pid)) })
	out := make([]string, len(list))
	for i, b := range list {
		out[i] = fmt.Sprintf("%d %s %.0f%%", b.pid, strings.ReplaceAll(b.name, " ", "_"), b.share*100)
	}
	return out
}

// ownTree returns the processes of this process's own tree: its topmost ancestor that runs the
// same executable (the bench, when the load generator captures the environment; this process
// when it is the bench) and every descendant of that ancestor (the gateways, control, the
// backend, the load generator and its workers). Their CPU is the run's, not another load.
func ownTree(dir string, procs map[int]procStat) map[int]bool {
	self := os.Getpid()
	// A binary rebuilt while the run goes on reads "<path> (deleted)" in its older processes.
	exeOf := func(pid int) (string, error) {
		s, err := os.Readlink(filepath.Join(dir, strconv.Itoa(pid), "exe"))
		return strings.TrimSuffix(s, " (deleted)"), err
	}
	exe, err := exeOf(self)
	root := self
	if err == nil {
		for p := procs[self].ppid; p > 1 && p != root; p = procs[p].ppid {
			if pe, err := exeOf(p); err != nil || pe != exe {
				break
			}
			root = p
		}
	}
	own := map[int]bool{root: true, self: true}
	for changed := true; changed; { // descendants: repeat until no process joins
		changed = false
		for pid, s := range procs {
			if !own[pid] && own[s.ppid] {
				own[pid], changed = true, true
			}
		}
	}
	return own
}

// Conditions describes the machine's load before the run in a line or two: the load averages
// against the cores, the TCP sockets in use, and the other busy processes; nil when none was
// recorded.
func (e *Env) Conditions() []string {
	var parts []string
	if len(e.LoadAvg) == 3 {
		s := fmt.Sprintf("load %.2f %.2f %.2f", e.LoadAvg[0], e.LoadAvg[1], e.LoadAvg[2])
		if e.Cores > 0 {
			s += fmt.Sprintf(" on %d cores", e.Cores)
		}
		parts = append(parts, s)
	}
	if e.TCPSockets > 0 {
		parts = append(parts, fmt.Sprintf("TCP sockets in use %d", e.TCPSockets))
	}
	var out []string
	if len(parts) > 0 {
		out = append(out, "before the run: "+strings.Join(parts, "  "))
	}
	if len(e.Busy) > 0 {
		out = append(out, "other busy processes: "+strings.Join(e.Busy, ", "))
	} else if len(parts) > 0 {
		out = append(out, "other busy processes: none above "+strconv.Itoa(int(BusyShare*100))+"% of a core")
	}
	return out
}

// Warnings returns a line per condition that makes the run's figures doubtful: a 1-minute load
// average above the core count, or another process using more than BusyWarnShare of a core.
func (e *Env) Warnings() []string {
	var out []string
	if len(e.LoadAvg) > 0 && e.Cores > 0 && e.LoadAvg[0] > float64(e.Cores) {
		out = append(out, fmt.Sprintf("warning: load average %.2f is above the %d cores: other work competed with the run", e.LoadAvg[0], e.Cores))
	}
	for _, b := range e.Busy {
		f := strings.Fields(b)
		if len(f) == 0 {
			continue
		}
		pct, err := strconv.ParseFloat(strings.TrimSuffix(f[len(f)-1], "%"), 64)
		if err == nil && pct > BusyWarnShare*100 {
			out = append(out, fmt.Sprintf("warning: process %s used %.0f%% of a core before the run", strings.Join(f[:len(f)-1], " "), pct))
		}
	}
	return out
}

// String describes the placement in a line: "placement: gateways on CPUs 1, load generator on CPUs
// 0 (sched_setaffinity)"; "" for none.
func (p *Placement) String() string {
	if p == nil || len(p.Gateway) == 0 && len(p.Loadgen) == 0 {
		return ""
	}
	set := func(cpus []int) string {
		if len(cpus) == 0 {
			return "any CPU"
		}
		return "CPUs " + CPUList(cpus)
	}
	return fmt.Sprintf("placement: gateways on %s, load generator on %s (%s)", set(p.Gateway), set(p.Loadgen), p.Method)
}

// CPUList renders sorted CPU numbers as a list with ranges, as Linux writes them: "0-3,6".
func CPUList(cpus []int) string {
	var parts []string
	for i := 0; i < len(cpus); {
		j := i
		for j+1 < len(cpus) && cpus[j+1] == cpus[j]+1 {
			j++
		}
		if j > i {
			parts = append(parts, fmt.Sprintf("%d-%d", cpus[i], cpus[j]))
		} else {
			parts = append(parts, strconv.Itoa(cpus[i]))
		}
		i = j + 1
	}
	return strings.Join(parts, ",")
}
