package transport

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(serverEnv) == "1" {
		serveChild() // BenchmarkIdleClient's servers, in a process of their own
		return
	}
	goleak.VerifyTestMain(m)
}

// testPKI is a self-signed certificate for localhost and 127.0.0.1, and a client config that
// trusts it.
type testPKI struct {
	cert  tls.Certificate
	roots *x509.CertPool
}

var pki = sync.OnceValue(func() *testPKI {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pushwire test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		panic(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		panic(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(leaf)
	return &testPKI{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots: roots}
})

func serverTLS(nextProtos ...string) *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{pki().cert}, NextProtos: nextProtos, MinVersion: tls.VersionTLS13}
}

func clientOpts() Options { return Options{TLS: &tls.Config{RootCAs: pki().roots}} }

// streamServer accepts on ln and runs serve on each connection until the test ends.
func streamServer(t *testing.T, ln net.Listener, serve func(net.Conn)) {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer func() { _ = c.Close() }()
				serve(c)
			})
		}
	})
}

func echo(c net.Conn) { _, _ = io.Copy(c, c) }

// roundTrip writes two messages and reads them back.
func roundTrip(t *testing.T, c net.Conn) {
	t.Helper()
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, msg := range []string{"PW hello", strings.Repeat("x", 70000)} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatalf("write: %v", err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatalf("read: %v", err)
		}
		if !bytes.Equal(got, []byte(msg)) {
			t.Fatalf("echo differs: %d bytes back for %d", len(got), len(msg))
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestDialTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, echo)
	c, err := Dial(ctxT(t), TCP, ln.Addr().String(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	roundTrip(t, c)
}

func TestDialTCPUsesDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, echo)
	var calls int
	o := Options{Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
		calls++
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}
		return d.DialContext(ctx, network, addr)
	}}
	c, err := Dial(ctxT(t), TCP, ln.Addr().String(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if calls != 1 || !c.LocalAddr().(*net.TCPAddr).IP.Equal(net.IPv4(127, 0, 0, 3)) {
		t.Fatalf("Options.Dial called %d times, local address %v", calls, c.LocalAddr())
	}
	roundTrip(t, c)
}

func TestDialTLS(t *testing.T) {
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS(ALPN))
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, echo)
	c, err := Dial(ctxT(t), TLS, ln.Addr().String(), clientOpts())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	st := c.(*tls.Conn).ConnectionState()
	if st.NegotiatedProtocol != ALPN || st.Version != tls.VersionTLS13 {
		t.Fatalf("negotiated %q, version %#x", st.NegotiatedProtocol, st.Version)
	}
	roundTrip(t, c)
}

func TestDialTLSRefusals(t *testing.T) {
	noALPN, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS())
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, noALPN, echo)
	tls12 := serverTLS(ALPN)
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	old, err := tls.Listen("tcp", "127.0.0.1:0", tls12)
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, old, echo)
	good, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS(ALPN))
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, good, echo)

	for _, tc := range []struct {
		name, addr string
		o          Options
		want       string
	}{
		{"server without ALPN", noALPN.Addr().String(), clientOpts(), `did not select ALPN "pushwire/1"`},
		{"TLS 1.2 server", old.Addr().String(), clientOpts(), "tls handshake"},
		{"untrusted certificate", good.Addr().String(), Options{}, "certificate"},
		{"wrong name", good.Addr().String(), Options{TLS: &tls.Config{RootCAs: pki().roots, ServerName: "example.org"}}, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(ctxT(t), TLS, tc.addr, tc.o)
			if err == nil {
				_ = c.Close()
				t.Fatal("Dial succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			var he *HandshakeError
			if !errors.As(err, &he) || he.Proto != TLS {
				t.Fatalf("error %v is not a tls *HandshakeError", err)
			}
		})
	}
}

// TestDialTLSHandshakeBoundedByContext: a server that accepts and never answers the handshake
// does not hold Dial past ctx.
func TestDialTLSHandshakeBoundedByContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	streamServer(t, ln, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, TLS, ln.Addr().String(), clientOpts())
		if err == nil {
			_ = c.Close()
		}
		errc <- err
	}()
	cancel()
	if err := <-errc; err == nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial after cancel: %v, want context.Canceled", err)
	}
}

// quicServer listens on 127.0.0.1 with alpn and runs serve on each stream the clients open.
// The returned channel receives each accepted connection's remote address.
func quicServer(t *testing.T, alpn string, serve func(*quic.Stream)) (string, <-chan net.Addr) {
	t.Helper()
	return quicServerCode(t, alpn, 0, serve)
}

// quicServerCode is quicServer closing each connection with code once serve returns.
func quicServerCode(t *testing.T, alpn string, code quic.ApplicationErrorCode, serve func(*quic.Stream)) (string, <-chan net.Addr) {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(serverTLS(alpn), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	remotes := make(chan net.Addr, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
		_ = tr.Close()
		_ = udp.Close()
	})
	wg.Go(func() {
		for {
			qc, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			select {
			case remotes <- qc.RemoteAddr():
			default:
			}
			wg.Go(func() {
				defer func() { _ = qc.CloseWithError(code, "") }()
				st, err := qc.AcceptStream(context.Background())
				if err != nil {
					return
				}
				serve(st)
			})
		}
	})
	return ln.Addr().String(), remotes
}

func TestDialQUIC(t *testing.T) {
	ended := make(chan struct{}, 1)
	addr, remotes := quicServer(t, ALPN, func(st *quic.Stream) {
		_, _ = io.Copy(st, st)
		ended <- struct{}{}
	})
	c, err := Dial(ctxT(t), QUIC, addr, clientOpts())
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c)
	if got := c.RemoteAddr().String(); got != addr {
		t.Fatalf("RemoteAddr %s, want %s", got, addr)
	}
	local := c.LocalAddr().(*net.UDPAddr)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The server's stream ends with the connection.
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the server's stream did not end after Close")
	}
	// Close released the UDP socket: its port can be bound again.
	u, err := net.ListenUDP("udp", local)
	if err != nil {
		t.Fatalf("the client's UDP socket %v is still open after Close: %v", local, err)
	}
	_ = u.Close()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("Read after Close succeeded")
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	<-remotes
}

func TestDialQUICLocalAddr(t *testing.T) {
	addr, remotes := quicServer(t, ALPN, func(st *quic.Stream) { _, _ = io.Copy(st, st) })
	o := clientOpts()
	o.LocalAddr = "127.0.0.2"
	c, err := Dial(ctxT(t), QUIC, addr, o)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	roundTrip(t, c)
	if ip := (<-remotes).(*net.UDPAddr).IP; !ip.Equal(net.IPv4(127, 0, 0, 2)) {
		t.Fatalf("the server saw source %v, want 127.0.0.2", ip)
	}

	o.LocalAddr = "not-an-ip"
	if c, err := Dial(ctxT(t), QUIC, addr, o); err == nil || !strings.Contains(err.Error(), "LocalAddr") {
		if c != nil {
			_ = c.Close()
		}
		t.Fatalf("bad LocalAddr: %v, want an error naming LocalAddr", err)
	}
}

func TestDialQUICWrongALPN(t *testing.T) {
	addr, _ := quicServer(t, "h3", func(st *quic.Stream) { _, _ = io.Copy(st, st) })
	c, err := Dial(ctxT(t), QUIC, addr, clientOpts())
	if err == nil {
		_ = c.Close()
		t.Fatal("Dial to a server without ALPN pushwire/1 succeeded")
	}
	var he *HandshakeError
	if !strings.Contains(err.Error(), "quic handshake") || !errors.As(err, &he) || he.Proto != QUIC {
		t.Fatalf("error %q is not a quic *HandshakeError", err)
	}
}

func TestDialQUICUntrusted(t *testing.T) {
	addr, _ := quicServer(t, ALPN, func(st *quic.Stream) { _, _ = io.Copy(st, st) })
	c, err := Dial(ctxT(t), QUIC, addr, Options{})
	if err == nil {
		_ = c.Close()
		t.Fatal("Dial trusting no root succeeded")
	}
}

func TestDialUnknownProtocol(t *testing.T) {
	_, err := Dial(ctxT(t), "smtp", "127.0.0.1:1", Options{})
	if err == nil || !strings.Contains(err.Error(), `"smtp"`) {
		t.Fatalf("Dial(smtp): %v, want an error naming smtp", err)
	}
}

func TestCheck(t *testing.T) {
	if err := Check("Transports", Protocols); err != nil {
		t.Fatal(err)
	}
	if err := Check("Transports", nil); err != nil {
		t.Fatal(err)
	}
	for _, bad := range [][]string{{"tcp", "http"}, {""}, {"ws", "ws"}} {
		err := Check("Config.Transports", bad)
		if err == nil || !strings.Contains(err.Error(), "Config.Transports") {
			t.Fatalf("Check(%q): %v, want an error naming the field", bad, err)
		}
	}
}

// A server closing the QUIC connection without an error (code 0) ends the client's stream with
// io.EOF, after the data it sent; another code is an error.
func TestDialQUICServerClose(t *testing.T) {
	for _, code := range []quic.ApplicationErrorCode{0, 7} {
		addr, _ := quicServerCode(t, ALPN, code, func(st *quic.Stream) {
			// The client's "hi" announces the stream; its "ok" says "bye" arrived before the close.
			if _, err := io.ReadFull(st, make([]byte, 2)); err != nil {
				return
			}
			if _, err := st.Write([]byte("bye")); err != nil {
				return
			}
			_, _ = io.ReadFull(st, make([]byte, 2))
		})
		c, err := Dial(ctxT(t), QUIC, addr, clientOpts())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write([]byte("hi")); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, 3)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "bye" {
			t.Fatalf("read %q, %v", got, err)
		}
		if _, err := c.Write([]byte("ok")); err != nil {
			t.Fatal(err)
		}
		_, err = c.Read(make([]byte, 1))
		if code == 0 && err != io.EOF {
			t.Errorf("code 0: Read %v, want io.EOF", err)
		}
		var ae *quic.ApplicationError
		if code != 0 && (!errors.As(err, &ae) || ae.ErrorCode != code) {
			t.Errorf("code %d: Read %v, want the application error", code, err)
		}
		_ = c.Close()
	}
}
