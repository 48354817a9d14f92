package tlslayer

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/engines"
)

// helperEnv makes the test binary a client process (see runClientHelper): the benchmark's
// clients live in another process, so that the heap measured is the server's alone.
const helperEnv = "PUSHWIRE_TLSLAYER_CLIENTS"

// idleConns is how many idle connections BenchmarkIdleConn opens.
const idleConns = 2000

// BenchmarkIdleConn measures what an idle connection costs the server over each engine, in plain
// TCP and through the layer: idleConns clients (in a child process) connect, complete the
// handshake and one echo, and stay idle. It reports the heap in use and the goroutines per
// connection after a GC, and the allocations per connection set up. Run it once per cell:
//
//	go test ./engines/tlslayer -run '^$' -bench IdleConn -benchtime 1x
func BenchmarkIdleConn(b *testing.B) {
	p := newPKI(b)
	for _, name := range streamEngines() {
		// tls: clients offering Go's default key shares (X25519MLKEM768, a ClientHello of about
		// 1.8 KB, as current browsers send); tls-x25519: X25519 only (about 0.3 KB).
		for _, mode := range []string{"tcp", "tls", "tls-x25519"} {
			b.Run(name+"/"+mode, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					heap, gor, allocs := measureIdle(b, name, mode, p)
					b.ReportMetric(heap, "heap-B/conn")
					b.ReportMetric(gor, "goroutines/conn")
					b.ReportMetric(allocs, "allocs/conn")
				}
			})
		}
	}
}

func measureIdle(b *testing.B, name, mode string, p *pki) (heap, gor, allocs float64) {
	r := newRecorder(b)
	var h engines.Handler = r
	ecfg := engines.Config{}
	if mode != "tcp" {
		cfg := Config{TLS: p.certs.ServerConfig(), RequireALPN: ALPN}
		var err error
		if h, err = Wrap(r, cfg); err != nil {
			b.Fatal(err)
		}
		ecfg.MaxFrame = cfg.EngineMaxFrame()
	}
	e, err := engines.New(name, ecfg, h)
	if err != nil {
		b.Fatal(err)
	}
	if err := e.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = e.Shutdown(b.Context())
	}()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&before)
	g0 := runtime.NumGoroutine()

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s|%d|%s|%s", helperEnv, e.Addr(), idleConns, p.certFile, mode))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		b.Fatalf("client process: %q, %v", line, err)
	}
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := float64(idleConns)
	heap = float64(int64(after.HeapInuse)-int64(before.HeapInuse)) / n
	gor = float64(runtime.NumGoroutine()-g0) / n
	allocs = float64(after.Mallocs-before.Mallocs) / n
	return heap, gor, allocs
}

// runClientHelper is the child process of BenchmarkIdleConn: it opens the connections, echoes one
// line on each, says "ready", and holds them until its stdin closes.
func runClientHelper() int {
	parts := strings.Split(os.Getenv(helperEnv), "|")
	if len(parts) != 4 {
		fmt.Fprintln(os.Stderr, "bad", helperEnv)
		return 2
	}
	addr, certFile, mode := parts[0], parts[2], parts[3]
	n, err := strconv.Atoi(parts[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	cfg := &tls.Config{ServerName: "127.0.0.1", NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13}
	cfg.RootCAs = x509Pool(pemBytes)
	if mode == "tls-x25519" {
		cfg.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	buf := make([]byte, 5)
	for range n {
		var c net.Conn
		if mode != "tcp" {
			c, err = dialTLSErr(addr, cfg, nil)
		} else {
			c, err = net.DialTimeout("tcp", addr, wait)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "dial:", err)
			return 1
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(wait))
		if _, err := c.Write([]byte("idle\n")); err != nil {
			fmt.Fprintln(os.Stderr, "write:", err)
			return 1
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			fmt.Fprintln(os.Stderr, "read:", err)
			return 1
		}
		_ = c.SetDeadline(time.Time{})
	}
	if _, err := fmt.Fprintln(os.Stdout, "ready"); err != nil {
		return 1
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

func x509Pool(pemBytes []byte) *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	return pool
}
