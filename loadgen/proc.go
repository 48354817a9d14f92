package loadgen

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ, the unit of utime and stime in /proc/<pid>/stat: 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procCPU returns the CPU time (user + system, seconds) process pid has used so far and its
// resident set size (bytes), from /proc/<pid>/stat.
func procCPU(pid int) (cpu float64, rss uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("loadgen: cpu of process %d: %w", pid, err)
	}
	return parseProcStat(b, os.Getpagesize())
}

// parseProcStat reads utime, stime (fields 14, 15) and rss (field 24, in pages) from the text of
// /proc/<pid>/stat. The command name (field 2) is in parentheses and may hold spaces or ')': the
// fields are counted from the last ')'.
func parseProcStat(b []byte, pageSize int) (cpu float64, rss uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("loadgen: /proc stat: no command name in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): field n is f[n-3].
	if len(f) < 24-3+1 {
		return 0, 0, fmt.Errorf("loadgen: /proc stat: %d fields after the command name, want at least 22", len(f))
	}
	utime, err1 := strconv.ParseUint(f[14-3], 10, 64)
	stime, err2 := strconv.ParseUint(f[15-3], 10, 64)
	pages, err3 := strconv.ParseInt(f[24-3], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("loadgen: /proc stat: utime %q, stime %q, rss %q: not numbers", f[14-3], f[15-3], f[24-3])
	}
	return float64(utime+stime) / clockTicks, uint64(max(pages, 0)) * uint64(pageSize), nil
}
