package transport

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/quic-go/quic-go"
)

// BenchmarkDial is one client connection per op over each transport, to a server in this
// process on loopback: connect, handshakes, one 32-byte frame echoed, close. It shows what each
// transport's handshake costs a client (the server's side is in the figure too).
func BenchmarkDial(b *testing.B) {
	msg := make([]byte, 32)
	for _, proto := range Protocols {
		b.Run(proto, func(b *testing.B) {
			addr, o := benchServer(b, proto)
			ctx := context.Background()
			buf := make([]byte, len(msg))
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				c, err := Dial(ctx, proto, addr, o)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
				_ = c.Close()
			}
		})
	}
}

// benchServer starts an echo server for proto and returns its address and the client options.
func benchServer(b *testing.B, proto string) (string, Options) {
	b.Helper()
	o := clientOpts()
	var ln net.Listener
	var err error
	switch proto {
	case TCP, WS:
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	case TLS:
		ln, err = tls.Listen("tcp", "127.0.0.1:0", serverTLS(ALPN))
	case WSS:
		ln, err = tls.Listen("tcp", "127.0.0.1:0", serverTLS("http/1.1"))
	case QUIC:
		addr, _ := quicServerB(b)
		return addr, o
	}
	if err != nil {
		b.Fatal(err)
	}
	serve := echo
	if proto == WS || proto == WSS {
		serve = (&wsServer{path: "/ws"}).serve
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
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
	b.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String(), o
}

// quicServerB is an echo QUIC server for a benchmark.
func quicServerB(b *testing.B) (string, func()) {
	b.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(serverTLS(ALPN), &quic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			qc, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			go func() {
				defer func() { _ = qc.CloseWithError(0, "") }()
				st, err := qc.AcceptStream(context.Background())
				if err != nil {
					return
				}
				_, _ = io.Copy(st, st)
			}()
		}
	}()
	stop := func() {
		_ = ln.Close()
		<-done
		_ = tr.Close()
		_ = udp.Close()
	}
	b.Cleanup(stop)
	return ln.Addr().String(), stop
}
