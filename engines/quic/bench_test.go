package quicengine

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/enginetest"
)

var idleConns = flag.Int("quic.conns", 2000, "connections BenchmarkIdleHeap holds")

// BenchmarkIdleHeap opens -quic.conns connections (default 2,000) from a helper process (so the
// heap measured is the server's alone), has each echo one line, and reports the server's heap in
// use and goroutines per idle connection after a GC: the engine's, quic-go's and the test
// handler's. Run it without -race, which inflates every figure:
//
//	go test -run=none -bench=IdleHeap -benchtime=1x ./engines/quic/
func BenchmarkIdleHeap(b *testing.B) {
	n := *idleConns
	h := enginetest.NewHandler(b)
	e := start(b, engines.Config{}, h)
	var heap, gor float64
	for b.Loop() {
		runtime.GC()
		m0, g0 := heapInuse(), runtime.NumGoroutine()
		cmd := exec.Command(os.Args[0], "-test.run=^TestHelperClients$")
		cmd.Env = append(os.Environ(), "QUIC_HELPER_ADDR="+e.Addr().String(), "QUIC_HELPER_N="+strconv.Itoa(n))
		cmd.Stderr = os.Stderr
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || line != "ready\n" {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			b.Fatalf("helper: %q, %v", line, err)
		}
		time.Sleep(100 * time.Millisecond) // let transient read and write buffers go
		runtime.GC()
		heap = float64(int64(heapInuse())-int64(m0)) / float64(n)
		gor = float64(runtime.NumGoroutine()-g0) / float64(n)
		_ = stdin.Close()
		for range n {
			h.WaitClosed(b)
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("helper: %v", err)
		}
	}
	b.ReportMetric(heap, "heap-B/conn")
	b.ReportMetric(gor, "goroutines/conn")
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestHelperClients is the client process of BenchmarkIdleHeap (skipped unless it runs as one):
// it dials QUIC_HELPER_N connections over one UDP socket, echoes a line on each, prints "ready",
// and closes them all when its stdin ends.
func TestHelperClients(t *testing.T) {
	addr := os.Getenv("QUIC_HELPER_ADDR")
	if addr == "" {
		t.Skip("helper process only")
	}
	n, _ := strconv.Atoi(os.Getenv("QUIC_HELPER_N"))
	ua, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer func() { _ = tr.Close(); _ = udp.Close() }()
	// The server's certificate was made by the parent process: the helper does not verify it
	// (the tests do).
	tc := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{ALPN}, MinVersion: tls.VersionTLS13}
	conns := make([]*quic.Conn, 0, n)
	buf := make([]byte, 3)
	for i := range n {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		qc, err := tr.Dial(ctx, ua, tc, &quic.Config{MaxIdleTimeout: 5 * time.Minute})
		cancel()
		if err != nil {
			t.Fatalf("dial %d: %v", i, err)
		}
		st, err := qc.OpenStream()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := st.Write([]byte("hi\n")); err != nil {
			t.Fatal(err)
		}
		_ = st.SetReadDeadline(time.Now().Add(wait))
		if _, err := io.ReadFull(st, buf); err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		conns = append(conns, qc)
	}
	if _, err := fmt.Fprintln(os.Stdout, "ready"); err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, qc := range conns {
		_ = qc.CloseWithError(0, "")
	}
}
