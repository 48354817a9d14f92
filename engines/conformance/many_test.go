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

// The client process of TestManyConnections and of the benchmarks is this test binary running
// TestHelperClients with helperEnv set to the server's address, helperEnvN to the number of
// connections and helperEnvProto to the transport (the certificate files in the environment
// too: see certFiles). Parent and child talk in lines: the child writes "<helperPrefix><word>
// <number>" on stdout, the parent answers on stdin. While dialling, the child says "dialed k"
// after each batch and waits for "go" (the parent checks the engine opened them and their hellos
// arrived: every connection sends the hello first); once all are dialled it takes commands:
//
//	echo        every connection writes echoFrame and reads it back; says "echoed <ok>"
//	read <seq>  every connection reads one frame, pushFrame(seq); says "received <ok>"
//	close       closes every connection; says "closed <n>" and ends
const (
	helperEnv      = "PUSHWIRE_CONFORMANCE_HELPER_ADDR"
	helperEnvN     = "PUSHWIRE_CONFORMANCE_HELPER_N"
	helperEnvProto = "PUSHWIRE_CONFORMANCE_HELPER_PROTO"
	helperPrefix   = "pw-helper: "
	helperBatch    = 1000 // dials between two checks that the server accepted them (somaxconn 4096)
)

// echoFrame is what each helper connection echoes; pushFrame(seq) what the parent pushes.
var echoFrame = mkFrame(1, 1, 0, 16)

func pushFrame(seq uint32) []byte { return mkFrame(9, seq, 16, 64) }

// manyConns is how many connections TestManyConnections opens on a transport: 10,000, except
// under the race detector, where a handshake costs several times more CPU (crypto is
// instrumented too): 2,000 on ws, 500 on tls, wss and quic (one QUIC client also holds a UDP
// socket and goroutines of its own). The race detector's point here is the concurrency of
// opening and closing, which the smaller counts exercise as well; the numbers are checked
// without it.
func manyConns(transport string) int {
	if !raceEnabled {
		return 10000
	}
	switch transport {
	case engines.TransportTCP:
		return 10000
	case engines.TransportWS:
		return 2000
	}
	return 500
}

// TestManyConnections: 10,000 connections at once (fewer on some transports under the race
// detector: see manyConns), held open, each receives one pushed frame, then the clients close them all: every
// connection is opened and closed exactly once. The clients live in a child process: one
// process holding both ends would meet the 20,000 open-file limit.
func TestManyConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 connections and a child process: skipped with -short")
	}
	forEachEngine(t, func(t *testing.T, tg target) {
		conns := manyConns(tg.transport)
		h := newHandler(frame.Limits{}, false)
		s := tg.start(t, engines.Config{}, h)
		t0 := time.Now()
		p := startClients(t, s, conns, 120*time.Second)
		defer p.stop()
		opened := time.Since(t0)
		push := pushFrame(1)
		failed := 0
		for _, sc := range h.conns() {
			if err := sc.Write(push); err != nil {
				if failed++; failed <= 5 {
					t.Errorf("push to conn %d: %v", sc.ID(), err)
				}
			}
		}
		p.send("read 1")
		if got := p.expect("received"); got != conns {
			t.Errorf("%d of %d clients received the pushed frame whole", got, conns)
		}
		p.send("close")
		p.expect("closed")
		waitFor(t, 60*time.Second, fmt.Sprintf("%d OnClose", conns), func() bool { return h.closes.Load() >= int64(conns) })
		if err := p.wait(); err != nil {
			t.Errorf("helper: %v\n%s", err, p.output())
		}
		if n := h.opens.Load(); n != int64(conns) {
			t.Errorf("%d OnOpen, want %d", n, conns)
		}
		t.Logf("%d %s connections opened in %v, pushed, received and closed in %v", conns, tg.transport, opened, time.Since(t0))
	})
}

// clientProc is a running helper process and the lines it says.
type clientProc struct {
	tb       testing.TB
	h        *handler
	ctx      context.Context
	cancel   context.CancelFunc
	cmd      *exec.Cmd
	stdin    io.WriteCloser
	lines    chan string
	rest     strings.Builder // the child's other output, for failure messages
	stderr   bytes.Buffer
	readDone sync.WaitGroup
	waited   bool
	err      error
}

// startClients starts a helper process that dials n connections to s over its transport, in
// batches, each only once s's handler saw the last batch open; it returns with all n open.
// Everything the process does must end within limit.
func startClients(tb testing.TB, s *server, n int, limit time.Duration) *clientProc {
	tb.Helper()
	certFile, keyFile, err := certFiles()
	if err != nil && s.tg.transport != engines.TransportTCP && s.tg.transport != engines.TransportWS {
		tb.Fatalf("certificates: %v", err)
	}
	p := &clientProc{tb: tb, h: s.h, lines: make(chan string, 16)}
	p.ctx, p.cancel = context.WithTimeout(context.Background(), limit)
	p.cmd = exec.CommandContext(p.ctx, os.Args[0], "-test.run=^TestHelperClients$", "-test.count=1")
	p.cmd.Env = append(os.Environ(), helperEnv+"="+s.addr, helperEnvN+"="+strconv.Itoa(n),
		helperEnvProto+"="+s.tg.transport, certEnv+"="+certFile, keyEnv+"="+keyFile)
	p.cmd.Stderr = &p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		tb.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		tb.Fatalf("start helper: %v", err)
	}
	p.readDone.Go(func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line, ok := strings.CutPrefix(sc.Text(), helperPrefix)
			if !ok {
				p.rest.WriteString(sc.Text() + "\n")
				continue
			}
			select {
			case p.lines <- line:
			case <-p.ctx.Done():
				return
			}
		}
	})
	// Dial in batches: the next batch only once the engine has accepted the last one.
	base, ready := s.h.opens.Load(), s.h.ready.Load()
	for dialed := 0; dialed < n; {
		dialed = p.expect("dialed")
		waitFor(tb, 60*time.Second, fmt.Sprintf("%d connections opened and ready", dialed), func() bool {
			return s.h.opens.Load() >= base+int64(dialed) && s.h.ready.Load() >= ready+int64(dialed)
		})
		if dialed < n {
			p.send("go")
		}
	}
	return p
}

// wait closes the child's stdin and waits for it to end.
func (p *clientProc) wait() error {
	if p.waited {
		return p.err
	}
	p.waited = true
	_ = p.stdin.Close()
	p.readDone.Wait() // Wait closes stdout: read it all first
	p.err = p.cmd.Wait()
	return p.err
}

// stop ends the child (if it still runs) and waits for it.
func (p *clientProc) stop() {
	p.cancel()
	_ = p.wait()
}

// output is what the child said besides its lines, once it ended.
func (p *clientProc) output() string { return p.rest.String() + p.stderr.String() }

// expect waits for the child's next line, which must be word and a number, and returns the
// number.
func (p *clientProc) expect(word string) int {
	p.tb.Helper()
	select {
	case line, ok := <-p.lines:
		if !ok {
			p.cancel()
			err := p.wait()
			p.tb.Fatalf("helper ended (%v) while %q was expected:\n%s", err, word, p.output())
		}
		num, found := strings.CutPrefix(line, word+" ")
		n, err := strconv.Atoi(num)
		if !found || err != nil {
			p.tb.Fatalf("helper said %q, want %q and a number", line, word)
		}
		return n
	case <-p.ctx.Done():
		p.tb.Fatalf("no %q from the helper within the time bound (%d opened, %d closed)", word, p.h.opens.Load(), p.h.closes.Load())
	}
	return 0
}

// send writes one line to the child.
func (p *clientProc) send(line string) {
	p.tb.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.tb.Fatalf("to helper: %v", err)
	}
}

// TestHelperClients is the client process of TestManyConnections and the benchmarks; run on its
// own it returns at once. See clientProc for what it does.
func TestHelperClients(t *testing.T) {
	addr := os.Getenv(helperEnv)
	if addr == "" {
		return
	}
	n, err := strconv.Atoi(os.Getenv(helperEnvN))
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: %v", helperEnvN, os.Getenv(helperEnvN), err)
	}
	proto := os.Getenv(helperEnvProto)
	in := bufio.NewScanner(os.Stdin)
	say := func(word string, num int) { _, _ = fmt.Fprintf(os.Stdout, "%s%s %d\n", helperPrefix, word, num) }

	conns := make([]net.Conn, n) // kept reachable: an unreachable net.Conn is closed by its finalizer
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	// each runs f on every connection from 16 goroutines and counts the successes.
	each := func(f func(c net.Conn) bool) int {
		var ok atomic.Int64
		var wg sync.WaitGroup
		const workers = 16
		for r := range workers {
			wg.Go(func() {
				for i := r; i < n; i += workers {
					if f(conns[i]) {
						ok.Add(1)
					}
				}
			})
		}
		wg.Wait()
		return int(ok.Load())
	}
	for start := 0; start < n; start += helperBatch {
		end := min(start+helperBatch, n)
		var next atomic.Int64
		next.Store(int64(start))
		var firstErr atomic.Pointer[error]
		var wg sync.WaitGroup
		for range 32 {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < end; i = int(next.Add(1) - 1) {
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					c, err := dialTransport(ctx, proto, addr)
					cancel()
					if err == nil {
						_, err = c.Write(hello)
					}
					if c != nil {
						conns[i] = c
					}
					if err != nil {
						firstErr.CompareAndSwap(nil, &err)
						return
					}
				}
			})
		}
		wg.Wait()
		if p := firstErr.Load(); p != nil {
			t.Fatalf("dial %s: %v", proto, *p)
		}
		say("dialed", end)
		if end < n && (!in.Scan() || in.Text() != "go") {
			t.Fatalf("parent gone: %v", in.Err())
		}
	}

	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		deadline := time.Now().Add(60 * time.Second)
		switch cmd {
		case "echo":
			say("echoed", each(func(c net.Conn) bool {
				buf := make([]byte, len(echoFrame))
				_ = c.SetDeadline(deadline)
				if _, err := c.Write(echoFrame); err != nil {
					return false
				}
				_, err := io.ReadFull(c, buf)
				return err == nil && bytes.Equal(buf, echoFrame)
			}))
		case "read":
			seq, err := strconv.ParseUint(arg, 10, 32)
			if err != nil {
				t.Fatalf("read %q: %v", arg, err)
			}
			want := pushFrame(uint32(seq))
			say("received", each(func(c net.Conn) bool {
				buf := make([]byte, len(want))
				_ = c.SetReadDeadline(deadline)
				_, err := io.ReadFull(c, buf)
				return err == nil && bytes.Equal(buf, want)
			}))
		case "close":
			for i, c := range conns {
				_ = c.Close()
				conns[i] = nil
			}
			say("closed", n)
			return
		default:
			t.Fatalf("unknown command %q", in.Text())
		}
	}
}
