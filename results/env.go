package results

import (
	"bufio"
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
)

// Files CaptureEnv reads on Linux; variables so tests can point them elsewhere.
var (
	cpuinfoPath   = "/proc/cpuinfo"
	meminfoPath   = "/proc/meminfo"
	osreleasePath = "/proc/sys/kernel/osrelease"
)

// CaptureEnv describes the machine and build this process runs on: Go
// version, OS, architecture, GOMAXPROCS and logical CPUs from the runtime,
// the CPU model from /proc/cpuinfo ("model name"), the memory from
// /proc/meminfo (MemTotal), the kernel release from
// /proc/sys/kernel/osrelease, the host name and the RLIMIT_NOFILE soft
// limit. commit is stored as given; when empty, the VCS revision stamped
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
	}
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
