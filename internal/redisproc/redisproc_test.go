package redisproc

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// do sends one inline command and returns the first line of the answer.
func do(t *testing.T, addr, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", cmd, err)
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "$") && line != "$-1" {
		v, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		return strings.TrimSpace(v)
	}
	return line
}

func requireRedis(t *testing.T) {
	t.Helper()
	if _, err := Lookup(); err != nil {
		t.Fatalf("%v", err)
	}
}

func TestStartRestartStop(t *testing.T) {
	requireRedis(t)
	ctx := context.Background()
	p, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop() }()
	if !strings.HasPrefix(p.Addr(), "127.0.0.1:") || p.Port() == 0 {
		t.Fatalf("Addr %q Port %d", p.Addr(), p.Port())
	}
	pid := p.Pid()
	if pid == 0 {
		t.Fatal("Pid 0 for a running server")
	}
	if got := do(t, p.Addr(), "SET k v"); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := do(t, p.Addr(), "GET k"); got != "v" {
		t.Fatalf("GET: %q", got)
	}
	if got := do(t, p.Addr(), "CONFIG GET save"); got != "*2" {
		t.Fatalf("CONFIG GET save: %q", got)
	}

	addr := p.Addr()
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Fatalf("Restart moved the server from %s to %s", addr, p.Addr())
	}
	if p.Pid() == pid || p.Pid() == 0 {
		t.Fatalf("Restart kept pid %d (now %d)", pid, p.Pid())
	}
	if got := do(t, p.Addr(), "GET k"); got != "$-1" {
		t.Fatalf("GET after restart: %q, want nil (no persistence)", got)
	}

	dir := p.Dir()
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if p.Pid() != 0 {
		t.Fatalf("Pid %d after Stop", p.Pid())
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatalf("%s still answers after Stop", addr)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary dir %s left after Stop: %v", dir, err)
	}
	if err := p.Stop(); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
}

func TestKillThenRestart(t *testing.T) {
	requireRedis(t)
	ctx := context.Background()
	dir := t.TempDir()
	p, err := Start(ctx, Options{Dir: dir, Args: []string{"--maxmemory", "16mb"}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop() }()
	pid := p.Pid()
	p.Kill()
	if p.Pid() != 0 {
		t.Fatal("Pid after Kill")
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("process %d still exists after Kill", pid)
	}
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := do(t, p.Addr(), "CONFIG GET maxmemory"); got != "*2" {
		t.Fatalf("CONFIG GET maxmemory: %q", got)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("a given Dir must be kept: %v", err)
	}
}

func TestGivenPortAndBadOptions(t *testing.T) {
	requireRedis(t)
	ctx := context.Background()
	p, err := Start(ctx, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop() }()
	// The port is taken: the second server fails, saying why, within the bound.
	if q, err := Start(ctx, Options{Port: p.Port()}); err == nil {
		_ = q.Stop()
		t.Fatal("second server on a taken port started")
	} else if !strings.Contains(err.Error(), "redis-server") {
		t.Fatalf("error does not name the server: %v", err)
	}
	if _, err := Start(ctx, Options{Port: 70000}); err == nil || !strings.Contains(err.Error(), "Port") {
		t.Fatalf("Port 70000: %v", err)
	}
	if _, err := Start(ctx, Options{Args: []string{"--no-such-option", "1"}}); err == nil {
		t.Fatal("bad argument accepted")
	}
}

func TestNotFound(t *testing.T) {
	t.Setenv("REDIS_SERVER", "/nonexistent/redis-server")
	_, err := Lookup()
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "make tools") {
		t.Fatalf("Lookup: %v", err)
	}
	if _, err := Start(context.Background(), Options{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Start: %v", err)
	}
}

func TestPubSubBufferRaised(t *testing.T) {
	requireRedis(t)
	p, err := Start(context.Background(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop() }()
	c, err := net.DialTimeout("tcp", p.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("CONFIG GET client-output-buffer-limit\r\n")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(buf[:n]), "pubsub 536870912 268435456 60") {
		t.Fatalf("client-output-buffer-limit: %q", buf[:n])
	}
}
