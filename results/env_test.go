package results

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestCaptureEnv(t *testing.T) {
	e := CaptureEnv("abc123")
	if e.Commit != "abc123" || e.GoVersion != runtime.Version() || e.OS != runtime.GOOS ||
		e.Arch != runtime.GOARCH || e.GOMAXPROCS < 1 || e.Cores < 1 {
		t.Errorf("runtime fields: %+v", e)
	}
	if runtime.GOOS != "linux" {
		t.Skip("the /proc fields are Linux only")
	}
	if e.CPUModel == "" && runtime.GOARCH == "amd64" {
		t.Error("no CPUModel")
	}
	if e.Kernel == "" {
		t.Error("no Kernel")
	}
	if e.MemoryBytes < 64<<20 {
		t.Errorf("MemoryBytes = %d", e.MemoryBytes)
	}
	if e.FileLimit == 0 {
		t.Error("no FileLimit")
	}
	if len(e.LoadAvg) != 3 {
		t.Errorf("LoadAvg = %v", e.LoadAvg)
	}
	t.Logf("%+v", e)
}

func TestProcParsing(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cpuinfo := write("cpuinfo", "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\nmodel\t: 85\n\nprocessor\t: 1\nmodel name\t: other\n")
	meminfo := write("meminfo", "MemTotal:       24576000 kB\nMemFree:        1000 kB\n")
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"cpu model", cpuModel(cpuinfo), "Intel(R) Xeon(R) Processor"},
		{"cpu model, no file", cpuModel(filepath.Join(dir, "none")), ""},
		{"cpu model, no field", cpuModel(meminfo), ""},
		{"memory", memTotal(meminfo), uint64(24576000 * 1024)},
		{"memory, no file", memTotal(filepath.Join(dir, "none")), uint64(0)},
		{"memory, garbage", memTotal(write("garbage", "MemTotal: lots\n")), uint64(0)},
		{"kernel", readTrimmed(write("osrelease", "6.18.44-fc\n")), "6.18.44-fc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestLoadParsing(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sockstat := "sockets: used 15\nTCP: inuse 42 orphan 0 tw 3 alloc 44 mem 144\nUDP: inuse 0 mem 338\n"
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"loadavg", fmt.Sprint(loadAvg(write("loadavg", "0.23 1.12 2.04 1/90 1557\n"))), "[0.23 1.12 2.04]"},
		{"loadavg, short", fmt.Sprint(loadAvg(write("short", "0.23\n"))), "[]"},
		{"loadavg, garbage", fmt.Sprint(loadAvg(write("garbage", "a b c d\n"))), "[]"},
		{"loadavg, no file", fmt.Sprint(loadAvg(filepath.Join(dir, "none"))), "[]"},
		{"tcp in use", tcpInUse(write("sockstat", sockstat)), 42},
		{"tcp in use, no TCP line", tcpInUse(write("nosock", "sockets: used 15\n")), 0},
		{"tcp in use, no file", tcpInUse(filepath.Join(dir, "none")), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.got != tt.want {
				t.Errorf("got %v, want %v", tt.got, tt.want)
			}
		})
	}
}

func TestReadProcStat(t *testing.T) {
	tests := []struct {
		in   string
		want procStat
		ok   bool
	}{
		{"1559 (cat) R 1555 1555 30928 0 -1 4194304 102 0 0 0 7 3 0 0 20 0 1 0", procStat{1559, 1555, "cat", 10}, true},
		{"12 (a b) c)) S 1 12 12 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0", procStat{12, 1, "a b) c)", 200}, true},
		{"12 (short) S 1 2", procStat{}, false},
		{"x (bad) S 1 12 12 0 -1 0 0 0 0 0 150 50 0 0", procStat{}, false},
		{"no parens", procStat{}, false},
	}
	for _, tt := range tests {
		got, ok := readProcStat([]byte(tt.in))
		if got != tt.want || ok != tt.ok {
			t.Errorf("readProcStat(%q) = %+v, %v; want %+v, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestBusyBetween(t *testing.T) {
	before := map[int]procStat{
		10: {10, 1, "redis-server", 100},
		11: {11, 1, "idle", 100},
		12: {12, 1, "go build", 100},
		13: {13, 1, "ours", 0},
		14: {14, 1, "restarted", 500},
	}
	after := map[int]procStat{
		10: {10, 1, "redis-server", 130}, // 0.3 s over 0.5 s: 60%
		11: {11, 1, "idle", 102},         // 4%: below the threshold
		12: {12, 1, "go build", 110},     // 20%
		13: {13, 1, "ours", 50},          // the run's own
		14: {14, 1, "restarted", 10},     // a new process under an old pid
		15: {15, 1, "new", 50},           // not seen before
	}
	got := busyBetween(before, after, 0.5, map[int]bool{13: true})
	want := []string{"10 redis-server 60%", "12 go_build 20%"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	if got := busyBetween(before, after, 0, nil); got != nil {
		t.Errorf("no time elapsed: got %q", got)
	}
}

func TestOwnTree(t *testing.T) {
	self := os.Getpid()
	procs := map[int]procStat{
		self:      {self, 1, "me", 0},
		self + 1:  {self + 1, self, "child", 0},
		self + 2:  {self + 2, self + 1, "grandchild", 0},
		self + 3:  {self + 3, 1, "stranger", 0},
		self + 40: {self + 40, self + 3, "stranger's child", 0},
	}
	own := ownTree(t.TempDir(), procs) // no exe links there: the tree is rooted at this process
	for pid, want := range map[int]bool{self: true, self + 1: true, self + 2: true, self + 3: false, self + 40: false} {
		if own[pid] != want {
			t.Errorf("pid %d (%s): own %v, want %v", pid, procs[pid].name, own[pid], want)
		}
	}
}

// TestBusyProcs spins two shell loops on the real machine: one a child of this process (the
// run's own: left out) and one handed to init (another load: listed).
func TestBusyProcs(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("no sh")
	}
	child := exec.Command("sh", "-c", "while :; do :; done")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	out, err := exec.Command("sh", "-c", "(while :; do :; done) >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(orphan, syscall.SIGKILL) })
	var busy []string
	deadline := time.Now().Add(10 * time.Second)
	prefix := strconv.Itoa(orphan) + " "
	for !slices.ContainsFunc(busy, func(s string) bool { return strings.HasPrefix(s, prefix) }) {
		if time.Now().After(deadline) {
			t.Fatalf("the orphaned loop %d is not listed: %q", orphan, busy)
		}
		busy = busyProcs("/proc", 300*time.Millisecond)
	}
	for _, b := range busy {
		if strings.HasPrefix(b, strconv.Itoa(child.Process.Pid)+" ") {
			t.Errorf("this process's own child is listed: %q", busy)
		}
	}
	t.Logf("busy: %q", busy)
}

func TestConditionsAndWarnings(t *testing.T) {
	tests := []struct {
		name       string
		env        Env
		conditions []string
		warnings   []string
	}{
		{"nothing recorded", Env{Cores: 2}, nil, nil},
		{"quiet", Env{Cores: 2, LoadAvg: []float64{0.5, 0.4, 0.3}, TCPSockets: 12},
			[]string{"before the run: load 0.50 0.40 0.30 on 2 cores  TCP sockets in use 12", "other busy processes: none above 5% of a core"}, nil},
		{"loaded", Env{Cores: 2, LoadAvg: []float64{3.1, 2, 1}, TCPSockets: 3, Busy: []string{"10 redis-server 60%", "12 go_build 20%"}},
			[]string{"before the run: load 3.10 2.00 1.00 on 2 cores  TCP sockets in use 3", "other busy processes: 10 redis-server 60%, 12 go_build 20%"},
			[]string{"warning: load average 3.10 is above the 2 cores: other work competed with the run",
				"warning: process 10 redis-server used 60% of a core before the run"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.env.Conditions(); !slices.Equal(got, tt.conditions) {
				t.Errorf("Conditions() = %q, want %q", got, tt.conditions)
			}
			if got := tt.env.Warnings(); !slices.Equal(got, tt.warnings) {
				t.Errorf("Warnings() = %q, want %q", got, tt.warnings)
			}
		})
	}
}

func TestPlacementString(t *testing.T) {
	tests := []struct {
		p    *Placement
		want string
	}{
		{nil, ""},
		{&Placement{Method: "sched_setaffinity"}, ""},
		{&Placement{Method: "sched_setaffinity", Gateway: []int{1}, Loadgen: []int{0}}, "placement: gateways on CPUs 1, load generator on CPUs 0 (sched_setaffinity)"},
		{&Placement{Method: "sched_setaffinity", Gateway: []int{0, 1, 2, 5, 7, 8}}, "placement: gateways on CPUs 0-2,5,7-8, load generator on any CPU (sched_setaffinity)"},
	}
	for _, tt := range tests {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.p, got, tt.want)
		}
	}
}
