package results

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
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
