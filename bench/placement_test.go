package bench

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

	"github.com/pushwire/pushwire/results"
)

func TestParseCPUs(t *testing.T) {
	avail := []int{0, 1, 2, 3}
	tests := []struct {
		spec    string
		gw, lg  []int
		wantErr string
	}{
		{spec: "gateway=1,loadgen=0", gw: []int{1}, lg: []int{0}},
		{spec: "gateway=0-1,loadgen=2,3", gw: []int{0, 1}, lg: []int{2, 3}},
		{spec: "loadgen=3, gateway=0,2", gw: []int{0, 2}, lg: []int{3}},
		{spec: "gateway=1-2,loadgen=2-3", gw: []int{1, 2}, lg: []int{2, 3}}, // overlap: allowed
		{spec: "gateway=1,1,0", gw: []int{0, 1}},                            // the loadgen where the kernel puts it
		{spec: "", wantErr: `--cpus "": empty`},
		{spec: "gateway=", wantErr: "gateway: an empty CPU list"},
		{spec: "gateway=1,loadgen=", wantErr: "loadgen: an empty CPU list"},
		{spec: "gateway=4,loadgen=0", wantErr: "gateway: CPU 4 is not one this machine lets the bench use (0-3)"},
		{spec: "gateway=1,loadgen=x", wantErr: `loadgen: "x" is not a CPU number`},
		{spec: "gateway=3-1", wantErr: `range "3-1" runs backwards`},
		{spec: "gateway=-1", wantErr: `"-1" is not a CPU number`},
		{spec: "gateway=1,gateway=2", wantErr: "gateway= given twice"},
		{spec: "gw=1", wantErr: `unknown part "gw"`},
		{spec: "1,gateway=0", wantErr: `"1" names no part`},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			p, err := ParseCPUs(tt.spec, avail)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "--cpus") {
					t.Fatalf("error %v, want one naming --cpus with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(p.Gateway, tt.gw) || !slices.Equal(p.Loadgen, tt.lg) {
				t.Errorf("gateway %v loadgen %v, want %v %v", p.Gateway, p.Loadgen, tt.gw, tt.lg)
			}
			if r := p.Result(); r == nil || r.Method != "sched_setaffinity" || !slices.Equal(r.Gateway, tt.gw) {
				t.Errorf("Result() = %+v", r)
			}
		})
	}
	if formatCPUs([]int{0, 1, 2, 5, 7, 8}) != "0-2,5,7-8" {
		t.Errorf("formatCPUs: %s", formatCPUs([]int{0, 1, 2, 5, 7, 8}))
	}
	if (*Placement)(nil).Result() != nil {
		t.Error("no placement: want a nil result placement")
	}
}

// cpusAllowed reads Cpus_allowed_list of /proc/<pid>/status.
func cpusAllowed(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("no Cpus_allowed_list for %d", pid)
	return ""
}

// TestStartOn starts a shell on one CPU that starts a child of its own (as the load generator
// starts its workers): both run on that CPU only, and this process's threads keep every CPU.
func TestStartOn(t *testing.T) {
	avail, err := AvailableCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(avail) < 2 {
		t.Skipf("one CPU (%v): nothing to place", avail)
	}
	want := avail[len(avail)-1]
	cmd := exec.Command("sh", "-c", "sleep 60 & echo $!; wait")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := startOn([]int{want}, cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var grandchild int
	if _, err := fmt.Fscan(out, &grandchild); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(grandchild, syscall.SIGKILL) })
	if got := cpusAllowed(t, cmd.Process.Pid); got != strconv.Itoa(want) {
		t.Errorf("child: Cpus_allowed_list %s, want %d", got, want)
	}
	if got := cpusAllowed(t, grandchild); got != strconv.Itoa(want) {
		t.Errorf("the child's child: Cpus_allowed_list %s, want %d", got, want)
	}
	// The thread that forked got its set back: a child started without a placement has every CPU.
	for range 4 {
		c := exec.Command("sleep", "60")
		if err := startOn(nil, c); err != nil {
			t.Fatal(err)
		}
		got := cpusAllowed(t, c.Process.Pid)
		_ = c.Process.Kill()
		_ = c.Wait()
		if got != formatCPUs(avail) {
			t.Errorf("a child started without a placement: Cpus_allowed_list %s, want %s", got, formatCPUs(avail))
		}
	}
}

// TestStartOnGOMAXPROCS runs this test binary as a child on one CPU: the Go runtime in it sizes
// GOMAXPROCS to that one.
func TestStartOnGOMAXPROCS(t *testing.T) {
	if os.Getenv("PUSHWIRE_PRINT_GOMAXPROCS") == "1" {
		fmt.Printf("GOMAXPROCS=%d\n", runtime.GOMAXPROCS(0))
		return
	}
	avail, err := AvailableCPUs()
	if err != nil {
		t.Fatal(err)
	}
	if len(avail) < 2 {
		t.Skipf("one CPU (%v): nothing to place", avail)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStartOnGOMAXPROCS$")
	cmd.Env = append(os.Environ(), "PUSHWIRE_PRINT_GOMAXPROCS=1")
	var buf strings.Builder
	cmd.Stdout = &buf
	if err := startOn([]int{avail[0]}, cmd); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err, buf.String())
	}
	if !strings.Contains(buf.String(), "GOMAXPROCS=1\n") {
		t.Errorf("child on one CPU printed %q", buf.String())
	}
}

func TestRelativeProfiles(t *testing.T) {
	dir := t.TempDir()
	res := &results.Result{Phases: []results.Phase{
		{Name: "push", Profiles: []results.Profile{
			{Node: "gw0", Kind: "cpu", Path: filepath.Join(dir, "profiles", "std-r1", "push-gw0-cpu.pprof")},
			{Node: "gw0", Kind: "heap", Path: "/elsewhere/push-gw0-heap.pprof"},
			{Node: "gw0", Kind: "heap", Path: "already/relative.pprof"},
		}},
	}}
	relativeProfiles(res, dir)
	got := []string{res.Phases[0].Profiles[0].Path, res.Phases[0].Profiles[1].Path, res.Phases[0].Profiles[2].Path}
	want := []string{"profiles/std-r1/push-gw0-cpu.pprof", "/elsewhere/push-gw0-heap.pprof", "already/relative.pprof"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}
