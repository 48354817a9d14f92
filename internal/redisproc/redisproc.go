// Package redisproc runs a real redis-server process for tests and the bench: on a free port of
// 127.0.0.1 (or a given one), without persistence, in a directory of its own, and stopped with
// its owner. It does not import testing, so the bench and test helpers of any package can use it.
//
// The child runs in its own process group and is killed with SIGKILL when the process that
// started it dies (Linux's parent-death signal), so a crashed test leaves no redis-server behind.
// The server's pub/sub output buffer is raised to 512 MB (hard) so that a subscriber behind by a
// burst is not disconnected; Options.Args may set it again.
//
// Restart stops the server and starts a new one on the same port: without persistence the data
// is gone, as after a real restart.
package redisproc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ErrNotFound is wrapped by the errors of Lookup and Start when no redis-server binary is found.
var ErrNotFound = errors.New("redis-server not found: run `make tools` (apt-get install redis-server)")

// Bounds of starting and stopping.
const (
	// StartTimeout bounds how long Start waits for the server to answer (unless ctx ends
	// sooner).
	StartTimeout = 10 * time.Second
	// StopTimeout is how long Stop waits after SIGTERM before SIGKILL.
	StopTimeout = 5 * time.Second
)

// Options configure a server.
type Options struct {
	// Dir is the server's working directory; "" makes a temporary one, removed by Stop.
	Dir string
	// Port to listen on, on 127.0.0.1; 0 picks a free port.
	Port int
	// Args are extra redis-server arguments, appended to the defaults (for example
	// "--maxmemory", "64mb").
	Args []string
}

// Proc is one running redis-server. Its methods are safe for concurrent use.
type Proc struct {
	path   string
	port   int
	dir    string
	tmpDir bool
	args   []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has been waited for
	logs *tail
}

// Lookup finds the redis-server binary: $REDIS_SERVER when set, else redis-server on $PATH, else
// /usr/bin/redis-server or /usr/sbin/redis-server.
func Lookup() (string, error) {
	if p := os.Getenv("REDIS_SERVER"); p != "" {
		if st, err := os.Stat(p); err != nil || st.IsDir() {
			return "", fmt.Errorf("redisproc: REDIS_SERVER=%q is not a file: %w", p, ErrNotFound)
		}
		return p, nil
	}
	if p, err := exec.LookPath("redis-server"); err == nil {
		return p, nil
	}
	for _, p := range []string{"/usr/bin/redis-server", "/usr/sbin/redis-server", "/usr/local/bin/redis-server"} {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", ErrNotFound
}

// Start runs a redis-server and waits until it answers, as itself (its process ID), bounded by
// StartTimeout and ctx. A port already served by another process fails Start.
func Start(ctx context.Context, opts Options) (*Proc, error) {
	path, err := Lookup()
	if err != nil {
		return nil, err
	}
	if opts.Port < 0 || opts.Port > 65535 {
		return nil, fmt.Errorf("redisproc: Port %d out of range 0-65535", opts.Port)
	}
	p := &Proc{path: path, port: opts.Port, dir: opts.Dir, args: append([]string(nil), opts.Args...)}
	if p.dir == "" {
		d, err := os.MkdirTemp("", "redisproc-")
		if err != nil {
			return nil, fmt.Errorf("redisproc: temporary dir: %w", err)
		}
		p.dir, p.tmpDir = d, true
	}
	// A free port picked by the kernel may be taken between closing the probe and redis binding
	// it; try a few ports before giving up.
	attempts := 1
	if opts.Port == 0 {
		attempts = 5
	}
	for i := 0; i < attempts; i++ {
		if opts.Port == 0 {
			if p.port, err = freePort(); err != nil {
				break
			}
		}
		if err = p.start(ctx); err == nil {
			return p, nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	if p.tmpDir {
		_ = os.RemoveAll(p.dir)
	}
	return nil, err
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("redisproc: free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port, nil
}

// start runs the process on p.port and waits until it answers.
func (p *Proc) start(ctx context.Context) error {
	args := []string{
		"--port", strconv.Itoa(p.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--dir", p.dir,
		"--daemonize", "no",
		"--logfile", "",
		// A gateway's bus subscription may fall behind during a burst of pushes; Redis's
		// default (32 MB hard, 8 MB for 60s) would disconnect it and lose the messages.
		"--client-output-buffer-limit", "pubsub 512mb 256mb 60",
	}
	args = append(args, p.args...)
	cmd := exec.Command(p.path, args...)
	cmd.Dir = p.dir
	logs := &tail{max: 4096}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("redisproc: start %s: %w", p.path, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	p.mu.Lock()
	p.cmd, p.done, p.logs = cmd, done, logs
	p.mu.Unlock()

	wctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	addr := p.Addr()
	for {
		if err := ping(wctx, addr, cmd.Process.Pid); err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redisproc: redis-server on port %d exited at start: %s", p.port, logs.String())
		case <-wctx.Done():
			p.kill()
			return fmt.Errorf("redisproc: redis-server on port %d did not answer within %v: %w; output: %s",
				p.port, StartTimeout, wctx.Err(), logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping asks the server at addr for its process ID (INFO server) and checks that it is pid, so
// that a server already on the port is not taken for the one just started.
func ping(ctx context.Context, addr string, pid int) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close() }()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(head, "$") {
		return fmt.Errorf("redisproc: INFO answered %q", strings.TrimSpace(head))
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil || n < 0 || n > 1<<20 {
		return fmt.Errorf("redisproc: INFO answered %q", strings.TrimSpace(head))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			if v != strconv.Itoa(pid) {
				return fmt.Errorf("redisproc: %s is served by another process (pid %s)", addr, v)
			}
			return nil
		}
	}
	return fmt.Errorf("redisproc: INFO server without process_id")
}

// Addr is the server's address, 127.0.0.1:port.
func (p *Proc) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(p.port)) }

// Port is the server's port.
func (p *Proc) Port() int { return p.port }

// Pid is the running server's process ID (0 when stopped).
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.done:
		return 0
	default:
	}
	return p.cmd.Process.Pid
}

// Output is the last few KB the server wrote (its log), for error messages.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.logs == nil {
		return ""
	}
	return p.logs.String()
}

// stop ends the process: SIGTERM to its group, SIGKILL after StopTimeout. It does not remove Dir.
func (p *Proc) stop() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
		return nil
	case <-time.After(StopTimeout):
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
	return fmt.Errorf("redisproc: redis-server (pid %d) ignored SIGTERM for %v; killed", cmd.Process.Pid, StopTimeout)
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *Proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	<-done
}

// Stop ends the server (SIGTERM, then SIGKILL after StopTimeout) and removes its directory when
// Start made it. Stopping a stopped server does nothing.
func (p *Proc) Stop() error {
	err := p.stop()
	if p.tmpDir {
		_ = os.RemoveAll(p.dir)
	}
	return err
}

// Kill ends the server at once with SIGKILL (a crash), keeping its directory for Restart.
func (p *Proc) Kill() { p.kill() }

// The server's pub/sub output buffer is raised to 512 MB (hard) so that a subscriber behind by a
// burst is not disconnected; Options.Args may set it again.
//
// Restart stops the server and starts a new one on the same port: the data is gone, as after a
// real restart of a server without persistence. Clients reconnect to the same address.
func (p *Proc) Restart(ctx context.Context) error {
	if err := p.stop(); err != nil {
		return err
	}
	// The port is free once the old process has exited; a few retries cover a slow release.
	var err error
	for i := 0; i < 5; i++ {
		if err = p.start(ctx); err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	return err
}

// tail keeps the last max bytes written to it.
type tail struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tail) Write(b []byte) (int, error) {
	t.mu.Lock()
	t.buf = append(t.buf, b...)
	if len(t.buf) > t.max {
		t.buf = append(t.buf[:0:0], t.buf[len(t.buf)-t.max:]...)
	}
	t.mu.Unlock()
	return len(b), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
}

// Dir is the server's working directory.
func (p *Proc) Dir() string { return filepath.Clean(p.dir) }
