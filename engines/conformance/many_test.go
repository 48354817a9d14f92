package conformance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
)

// The child process of TestManyConnections is this test binary running TestHelperClients with
// helperEnv set to the server's address and helperEnvN to the number of connections. Parent and
// child talk in lines: the child writes "<helperPrefix><word> <number>" on stdout, the parent
// answers "go" on stdin.
const (
	helperEnv    = "PUSHWIRE_CONFORMANCE_HELPER_ADDR"
	helperEnvN   = "PUSHWIRE_CONFORMANCE_HELPER_N"
	helperPrefix = "pw-helper: "
	helperBatch  = 1000 // dials between two checks that the server accepted them (somaxconn 4096)
)

// TestManyConnections: 10,000 connections at once, held open, each receives one pushed frame,
// then the clients close them all: every connection is opened and closed exactly once. The
// clients live in a child process: one process holding both ends would meet the 20,000
// open-file limit.
func TestManyConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections and a child process: skipped with -short")
	}
	const conns = 10000
	forEachEngine(t, func(t *testing.T, tg target) {
		h := newHandler(frame.Limits{}, false)
		s := tg.start(t, engines.Config{}, h)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		t0 := time.Now()

		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHelperClients$", "-test.count=1")
		cmd.Env = append(os.Environ(), helperEnv+"="+s.addr, helperEnvN+"="+strconv.Itoa(conns))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start helper: %v", err)
		}
		lines := make(chan string, 16)
		var rest strings.Builder // the child's other output, for failure messages
		var readDone sync.WaitGroup
		readDone.Go(func() {
			defer close(lines)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				line, ok := strings.CutPrefix(sc.Text(), helperPrefix)
				if !ok {
					rest.WriteString(sc.Text() + "\n")
					continue
				}
				select {
				case lines <- line:
				case <-ctx.Done():
					return
				}
			}
		})
		waited := false
		wait := func() error {
			if waited {
				return nil
			}
			waited = true
			_ = stdin.Close()
			readDone.Wait() // Wait closes stdout: read it all first
			return cmd.Wait()
		}
		defer func() {
			cancel()
			_ = wait()
		}()
		expect := func(word string) int {
			t.Helper()
			select {
			case line, ok := <-lines:
				if !ok {
					cancel()
					err := wait()
					t.Fatalf("helper ended (%v) while %q was expected:\n%s%s", err, word, rest.String(), stderr.String())
				}
				num, found := strings.CutPrefix(line, word+" ")
				n, err := strconv.Atoi(num)
				if !found || err != nil {
					t.Fatalf("helper said %q, want %q and a number", line, word)
				}
				return n
			case <-ctx.Done():
				t.Fatalf("no %q from the helper within the time bound (%d opened, %d closed)", word, h.opens.Load(), h.closes.Load())
			}
			return 0
		}
		goOn := func() {
			if _, err := io.WriteString(stdin, "go\n"); err != nil {
				t.Fatalf("to helper: %v", err)
			}
		}

		// Dial in batches: the next batch only once the engine has accepted the last one.
		for dialed := 0; dialed < conns; {
			dialed = expect("dialed")
			waitFor(t, 30*time.Second, fmt.Sprintf("%d connections opened", dialed), func() bool { return h.opens.Load() >= int64(dialed) })
			if dialed == conns {
				break
			}
			goOn()
		}
		opened := time.Since(t0)
		push := mkFrame(9, 1, 16, 64)
		failed := 0
		for _, sc := range h.conns() {
			if err := sc.Write(push); err != nil {
				if failed++; failed <= 5 {
					t.Errorf("push to conn %d: %v", sc.ID(), err)
				}
			}
		}
		goOn()
		if got := expect("received"); got != conns {
			t.Errorf("%d of %d clients received the pushed frame whole", got, conns)
		}
		expect("closed")
		waitFor(t, 30*time.Second, fmt.Sprintf("%d OnClose", conns), func() bool { return h.closes.Load() >= conns })
		if err := wait(); err != nil {
			t.Errorf("helper: %v\n%s%s", err, rest.String(), stderr.String())
		}
		if n := h.opens.Load(); n != conns {
			t.Errorf("%d OnOpen, want %d", n, conns)
		}
		t.Logf("%d connections opened in %v, pushed, received and closed in %v", conns, opened, time.Since(t0))
	})
}

// TestHelperClients is the client process of TestManyConnections; run on its own it returns at
// once. It dials helperEnvN connections to helperEnv in batches, reads one PUSH frame from each,
// closes them all and reports each step on stdout.
func TestHelperClients(t *testing.T) {
	addr := os.Getenv(helperEnv)
	if addr == "" {
		return
	}
	n, err := strconv.Atoi(os.Getenv(helperEnvN))
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: %v", helperEnvN, os.Getenv(helperEnvN), err)
	}
	in := bufio.NewScanner(os.Stdin)
	say := func(word string, num int) { _, _ = fmt.Fprintf(os.Stdout, "%s%s %d\n", helperPrefix, word, num) }
	waitGo := func() {
		if !in.Scan() || in.Text() != "go" {
			t.Fatalf("parent gone: %v", in.Err())
		}
	}

	conns := make([]net.Conn, n) // kept reachable: an unreachable net.Conn is closed by its finalizer
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	d := net.Dialer{Timeout: 10 * time.Second}
	for start := 0; start < n; start += helperBatch {
		end := min(start+helperBatch, n)
		var next atomic.Int64
		next.Store(int64(start))
		var firstErr atomic.Pointer[error]
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < end; i = int(next.Add(1) - 1) {
					c, err := d.Dial("tcp", addr)
					if err != nil {
						firstErr.CompareAndSwap(nil, &err)
						return
					}
					conns[i] = c
				}
			})
		}
		wg.Wait()
		if p := firstErr.Load(); p != nil {
			t.Fatalf("dial: %v", *p)
		}
		say("dialed", end)
		waitGo()
	}

	want := mkFrame(9, 1, 16, 64)
	var ok atomic.Int64
	var wg sync.WaitGroup
	const readers = 16
	deadline := time.Now().Add(30 * time.Second)
	for r := range readers {
		wg.Go(func() {
			buf := make([]byte, len(want))
			for i := r; i < n; i += readers {
				c := conns[i]
				_ = c.SetReadDeadline(deadline)
				if _, err := io.ReadFull(c, buf); err != nil {
					continue
				}
				if f, m, err := frame.Decode(buf, frame.Limits{}); err == nil && m == len(want) && f.Type == frame.TypePush && bytes.Equal(buf, want) {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	say("received", int(ok.Load()))
	for i, c := range conns {
		_ = c.Close()
		conns[i] = nil
	}
	say("closed", n)
}
