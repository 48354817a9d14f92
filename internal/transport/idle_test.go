package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// serverEnv makes the test binary serve echo servers for every transport (see serveChild).
const serverEnv = "PUSHWIRE_TRANSPORT_TEST_SERVER"

// childServers is what serveChild prints: each transport's address and the certificate's PEM.
type childServers struct {
	Addrs map[string]string `json:"addrs"`
	Cert  string            `json:"cert"`
}

// serveChild runs an echo server for each transport on 127.0.0.1, prints childServers as one
// JSON line and serves until stdin ends.
func serveChild() {
	out := childServers{Addrs: map[string]string{}}
	listen := func(proto string, ln net.Listener, serve func(net.Conn)) {
		out.Addrs[proto] = ln.Addr().String()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer func() { _ = c.Close() }()
					serve(c)
				}()
			}
		}()
	}
	must := func(ln net.Listener, err error) net.Listener {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return ln
	}
	listen(TCP, must(net.Listen("tcp", "127.0.0.1:0")), echo)
	listen(TLS, must(tls.Listen("tcp", "127.0.0.1:0", serverTLS(ALPN))), echo)
	listen(WS, must(net.Listen("tcp", "127.0.0.1:0")), (&wsServer{path: "/ws"}).serve)
	listen(WSS, must(tls.Listen("tcp", "127.0.0.1:0", serverTLS("http/1.1"))), (&wsServer{path: "/ws"}).serve)
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ql, err := (&quic.Transport{Conn: udp}).Listen(serverTLS(ALPN), &quic.Config{MaxIncomingStreams: 1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out.Addrs[QUIC] = ql.Addr().String()
	go func() {
		for {
			qc, err := ql.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				st, err := qc.AcceptStream(context.Background())
				if err != nil {
					return
				}
				_, _ = io.Copy(st, st)
			}()
		}
	}()
	out.Cert = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pki().cert.Certificate[0]}))
	line, _ := json.Marshal(out)
	fmt.Println(string(line))
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// BenchmarkIdleClient holds 1,000 idle client connections per transport, against servers in a
// child process, and reports the client side's heap and goroutines per connection: what one
// simulated device of the load generator costs its worker. Each connection has sent and read
// back one frame, as after a login. Run with -benchtime 1x.
func BenchmarkIdleClient(b *testing.B) {
	const conns = 1000
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.bench=^$")
	cmd.Env = append(os.Environ(), serverEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadBytes('\n')
	if err != nil {
		b.Fatal(err)
	}
	var srv childServers
	if err := json.Unmarshal(line, &srv); err != nil {
		b.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(srv.Cert))
	o := Options{TLS: &tls.Config{RootCAs: roots}, LocalAddr: "127.0.0.1"}

	frame := make([]byte, 64)
	for _, proto := range Protocols {
		b.Run(proto, func(b *testing.B) {
			for b.Loop() {
				heap0, g0 := settle()
				cs := make([]net.Conn, 0, conns)
				buf := make([]byte, len(frame))
				for range conns {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					c, err := Dial(ctx, proto, srv.Addrs[proto], o)
					cancel()
					if err != nil {
						b.Fatal(err)
					}
					if _, err := c.Write(frame); err != nil {
						b.Fatal(err)
					}
					if _, err := io.ReadFull(c, buf); err != nil {
						b.Fatal(err)
					}
					cs = append(cs, c)
				}
				heap1, g1 := settle()
				b.ReportMetric(float64(heap1-heap0)/conns, "heap-B/conn")
				b.ReportMetric(float64(g1-g0)/conns, "goroutines/conn")
				for _, c := range cs {
					_ = c.Close()
				}
			}
		})
	}
}

// settle collects garbage and returns the live heap and the goroutines.
func settle() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}
