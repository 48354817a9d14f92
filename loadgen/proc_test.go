package loadgen

import (
	"os"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	line := "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 42 123456789 300 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	cpu, rss, err := parseProcStat([]byte(line), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if cpu != 3.25 {
		t.Errorf("cpu = %v, want 3.25 (250+75 ticks)", cpu)
	}
	if rss != 300*4096 {
		t.Errorf("rss = %d, want %d", rss, 300*4096)
	}
	if _, _, err := parseProcStat([]byte("1 (x) S 1 2"), 4096); err == nil {
		t.Error("a short line parsed")
	}
	if _, _, err := parseProcStat([]byte("no name"), 4096); err == nil {
		t.Error("a line without a command name parsed")
	}
}

func TestProcCPUSelf(t *testing.T) {
	cpu, rss, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if cpu < 0 || rss == 0 {
		t.Errorf("cpu %v, rss %d: want cpu ≥ 0 and rss > 0", cpu, rss)
	}
	if _, _, err := procCPU(1 << 30); err == nil {
		t.Error("a process that does not exist has a CPU time")
	}
}
