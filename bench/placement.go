package bench

import (
	"fmt"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/results"
)

// Placement puts the run's processes on CPUs (pushwire bench --cpus gateway=LIST,loadgen=LIST).
// Gateway holds the CPUs of the gateways, control, the demo backend and Redis; Loadgen those of
// the load generator, whose workers inherit them. An empty set leaves those processes where the
// kernel puts them. Each process starts with the set as its affinity, so the Go runtime in it
// sizes GOMAXPROCS to the set.
type Placement struct {
	Gateway []int
	Loadgen []int
}

// ParseCPUs parses the --cpus setting: "gateway=LIST,loadgen=LIST", either part may be left out,
// a LIST like "1", "0-1" or "0,2" (the commas inside a list are told from those between the
// parts by the "name=" that starts a part). Every CPU must be one this process may run on
// (available lists them). The two sets may overlap: the processes then share those CPUs.
func ParseCPUs(spec string, available []int) (*Placement, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("bench: --cpus %q: %s", spec, fmt.Sprintf(format, args...))
	}
	if strings.TrimSpace(spec) == "" {
		return nil, bad("empty: want gateway=LIST,loadgen=LIST (a LIST like 1, 0-1 or 0,2)")
	}
	parts := map[string][]string{}
	var order []string
	cur := ""
	for item := range strings.SplitSeq(spec, ",") {
		item = strings.TrimSpace(item)
		if name, list, ok := strings.Cut(item, "="); ok {
			name = strings.TrimSpace(name)
			if name != "gateway" && name != "loadgen" {
				return nil, bad("unknown part %q: want gateway= and loadgen=", name)
			}
			if _, dup := parts[name]; dup {
				return nil, bad("%s= given twice", name)
			}
			cur = name
			order = append(order, name)
			parts[name] = nil
			item = list
		} else if cur == "" {
			return nil, bad("%q names no part: want gateway=LIST,loadgen=LIST", item)
		}
		parts[cur] = append(parts[cur], item)
	}
	p := &Placement{}
	for _, name := range order {
		set, err := parseCPUList(strings.Join(parts[name], ","))
		if err != nil {
			return nil, bad("%s: %v", name, err)
		}
		for _, c := range set {
			if !slices.Contains(available, c) {
				return nil, bad("%s: CPU %d is not one this machine lets the bench use (%s)", name, c, formatCPUs(available))
			}
		}
		if name == "gateway" {
			p.Gateway = set
		} else {
			p.Loadgen = set
		}
	}
	return p, nil
}

// maxCPUs is the CPUs a unix.CPUSet holds (glibc's CPU_SETSIZE).
const maxCPUs = 1024

// parseCPUList parses "0-2,5" into sorted distinct CPU numbers.
func parseCPUList(s string) ([]int, error) {
	var out []int
	for item := range strings.SplitSeq(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			return nil, fmt.Errorf("an empty CPU list or item (want a list like 1, 0-1 or 0,2)")
		}
		lo, hi, isRange := strings.Cut(item, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 0 || b < 0 {
			return nil, fmt.Errorf("%q is not a CPU number or a range like 0-1", item)
		}
		if b < a {
			return nil, fmt.Errorf("range %q runs backwards", item)
		}
		if b >= maxCPUs {
			return nil, fmt.Errorf("CPU %d is beyond what the kernel interface takes", b)
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// formatCPUs renders CPU numbers as a list with ranges: "0-3,6".
func formatCPUs(cpus []int) string { return results.CPUList(cpus) }

// AvailableCPUs returns the CPUs this process may run on.
func AvailableCPUs() ([]int, error) {
	var set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &set); err != nil {
		return nil, fmt.Errorf("bench: reading this process's CPU affinity: %w", err)
	}
	var out []int
	for c := range maxCPUs {
		if set.IsSet(c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// Result is the placement as recorded in a result; nil without one.
func (p *Placement) Result() *results.Placement {
	if p == nil || len(p.Gateway) == 0 && len(p.Loadgen) == 0 {
		return nil
	}
	return &results.Placement{Method: "sched_setaffinity", Gateway: slices.Clone(p.Gateway), Loadgen: slices.Clone(p.Loadgen)}
}

// startOn starts cmd with its CPU affinity set to cpus (cmd.Start alone when cpus is empty). A
// child inherits the affinity of the thread that forks it: the goroutine is locked to its OS
// thread, whose affinity is set for the fork and restored after it.
func startOn(cpus []int, cmd *exec.Cmd) error {
	return onCPUs(cpus, cmd.Start)
}

// onCPUs runs start on an OS thread whose affinity is cpus (start alone when cpus is empty); the
// processes start forks inherit it.
func onCPUs(cpus []int, start func() error) error {
	if len(cpus) == 0 {
		return start()
	}
	runtime.LockOSThread()
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("bench: --cpus: reading the thread's affinity: %w", err)
	}
	for _, c := range cpus {
		set.Set(c)
	}
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("bench: --cpus %s: %w", formatCPUs(cpus), err)
	}
	err := start()
	if rerr := unix.SchedSetaffinity(0, &old); rerr != nil {
		// The thread keeps the narrow set: it stays locked to this goroutine, and ends with it,
		// rather than run other goroutines on those CPUs.
		return fmt.Errorf("bench: --cpus: restoring the thread's affinity after a start: %w (start: %v)", rerr, err)
	}
	runtime.UnlockOSThread()
	return err
}
