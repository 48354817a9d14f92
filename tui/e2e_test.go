package tui_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/client"
)

// TestE2ETmux runs the dashboard in tmux against a live local deployment — control, two gateway
// processes and a load generator holding 200 connections, plus a target nobody listens on — and
// reads the screen with tmux capture-pane until it shows 2 of 3 instances up, the dead one down
// and connections (non-zero); then it shows the charts (tab), saves a snapshot with s and quits
// with q.
//
// It uses $PUSHWIRE_BIN when set (make tui-e2e passes bin/pushwire), else builds the binary.
// Without tmux it is skipped, unless CI=true, where it fails (make tools installs tmux).
func TestE2ETmux(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: skipped with -short")
	}
	if _, err := exec.LookPath("tmux"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tmux is not installed and CI=true: the dashboard end-to-end test needs it (make tools installs it)")
		}
		t.Skip("tmux is not installed: skipping the dashboard end-to-end test (make tools installs it)")
	}
	dir := t.TempDir()
	bin := pushwireBinary(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	dep, err := bench.Deploy(ctx, bench.DeployConfig{Binary: bin, Instances: 2, LogDir: filepath.Join(dir, "logs"),
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := dep.Stop(); err != nil {
			t.Logf("stopping the deployment: %v", err)
		}
	})

	// Control answers connects once it has seen the gateways ready: wait for one to succeed, so
	// the load generator's single attempt per connection does not meet a 503.
	waitConnect(t, ctx, dep)

	const conns = 200
	lgAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	lgLog, err := os.Create(filepath.Join(dir, "loadgen.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lgLog.Close() }() // the child's log: read only when the test fails
	lg := exec.Command(bin, "loadgen", "--control", dep.ControlURL, "--gateways", strings.Join(dep.GatewayHTTP, ","),
		"--app", dep.App, "--secret", dep.Secret, "--push-key", dep.PushKey,
		"--conns", strconv.Itoa(conns), "--rate", "400", "--idle", "10m", "--push-rate", "1", "--push-duration", "1s",
		"--metrics", lgAddr, "--result-file", filepath.Join(dir, "loadgen-result.json"))
	lg.Stdout, lg.Stderr = lgLog, lgLog
	lg.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := lg.Start(); err != nil {
		t.Fatal(err)
	}
	lgDone := make(chan struct{})
	go func() { _ = lg.Wait(); close(lgDone) }()
	t.Cleanup(func() {
		_ = lg.Process.Signal(syscall.SIGTERM)
		select {
		case <-lgDone:
		case <-time.After(20 * time.Second):
			_ = lg.Process.Kill()
			<-lgDone
		}
	})

	dead := "127.0.0.1:" + strconv.Itoa(freePort(t)) // nobody listens here
	targets := append(dep.MetricsURLs(), dead)
	outDir := filepath.Join(dir, "snapshots")
	exitFile := filepath.Join(dir, "tui.exit")
	session := fmt.Sprintf("pushwire-tui-e2e-%d", os.Getpid())
	tuiCmd := fmt.Sprintf("%s tui --targets %s --loadgen %s --out %s --log-file %s; echo $? > %s",
		bin, strings.Join(targets, ","), lgAddr, outDir, filepath.Join(dir, "tui.log"), exitFile)
	if out, err := exec.Command("tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", tuiCmd).CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("tmux", "kill-session", "-t", session).Run() })

	capture := func() string {
		out, err := exec.Command("tmux", "capture-pane", "-p", "-t", session).Output()
		if err != nil {
			return ""
		}
		return string(out)
	}
	// The right instance count (2 of 3 up: the dead target is down), non-zero connections in
	// total, and the load generator's progress against its target.
	total := regexp.MustCompile(`(?m)^total\s+2/3 up\s+(\d+)`)
	progress := regexp.MustCompile(`connected (\d+)/` + strconv.Itoa(conns))
	waitScreen(t, capture, 60*time.Second, func(s string) bool {
		m, p := total.FindStringSubmatch(s), progress.FindStringSubmatch(s)
		return m != nil && m[1] != "0" && p != nil && p[1] != "0"
	})
	// Once the ramp is over, the gateways' total and the load generator agree.
	screen := waitScreen(t, capture, 30*time.Second, func(s string) bool {
		m, p := total.FindStringSubmatch(s), progress.FindStringSubmatch(s)
		return m != nil && p != nil && m[1] == p[1] && strings.Contains(s, "LOADGEN idle")
	})
	t.Logf("screen:\n%s", screen)
	for _, want := range []string{"gw0", "gw1", "serving", "down", "refused", "2/3 up"} {
		if !strings.Contains(screen, want) {
			t.Errorf("the screen lacks %q", want)
		}
	}

	// tab shows the charts: the connections chart's title with the total, and lines in braille.
	if err := exec.Command("tmux", "send-keys", "-t", session, "Tab").Run(); err != nil {
		t.Fatal(err)
	}
	screen = waitScreen(t, capture, 10*time.Second, func(s string) bool {
		return strings.Contains(s, "[charts]") && strings.Contains(s, "connections "+strconv.Itoa(conns)) &&
			strings.ContainsFunc(s, func(r rune) bool { return r > 0x2800 && r <= 0x28ff })
	})
	t.Logf("charts:\n%s", screen)

	// s saves a snapshot; q quits cleanly.
	if err := exec.Command("tmux", "send-keys", "-t", session, "s").Run(); err != nil {
		t.Fatal(err)
	}
	waitScreen(t, capture, 10*time.Second, func(s string) bool { return strings.Contains(s, "saved ") })
	files, _ := filepath.Glob(filepath.Join(outDir, "tui-*.json"))
	if len(files) != 1 {
		t.Errorf("snapshots: %v", files)
	}
	if err := exec.Command("tmux", "send-keys", "-t", session, "q").Run(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, err := os.ReadFile(exitFile)
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			if code := string(bytes.TrimSpace(b)); code != "0" {
				t.Errorf("pushwire tui exited with %s", code)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("pushwire tui did not exit after q")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitScreen polls the screen until ok accepts it, failing the test with the last screen at
// the deadline.
func waitScreen(t *testing.T, capture func() string, within time.Duration, ok func(string) bool) string {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s := capture()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("the screen did not show what was expected within %v; last screen:\n%s", within, s)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func pushwireBinary(t *testing.T, dir string) string {
	t.Helper()
	if b := os.Getenv("PUSHWIRE_BIN"); b != "" {
		abs, err := filepath.Abs(b)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	bin := filepath.Join(dir, "pushwire")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/pushwire")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building pushwire: %v\n%s", err, out)
	}
	return bin
}

func freePort(t *testing.T) int {
	t.Helper()
	p, err := bench.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitConnect connects one client through control until it succeeds (bounded).
func waitConnect(t *testing.T, ctx context.Context, dep *bench.Deployment) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := client.New(client.Config{ControlURL: dep.ControlURL, App: dep.App, Secret: dep.Secret, Device: "e2e-probe",
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Connect(ctx)
		_ = c.Close()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no connect through control within 30s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
