package client

// The SDK over each transport, against fake gateways on real TLS and QUIC listeners, and the
// endpoint fallback across transports.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pushwire/pushwire/core/frame"
)

// testCert is a self-signed certificate for 127.0.0.1 and the pool that trusts it.
var testCert = sync.OnceValues(func() (tls.Certificate, *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pushwire client test"},
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
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, roots
})

func serverTLS(nextProtos ...string) *tls.Config {
	cert, _ := testCert()
	return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: nextProtos, MinVersion: tls.VersionTLS13}
}

func clientTLS() *tls.Config {
	_, roots := testCert()
	return &tls.Config{RootCAs: roots}
}

// newTLSGateway is a fake gateway behind TLS 1.3 with ALPN pushwire/1.
func newTLSGateway(t *testing.T, handle func(*gwConn)) *fakeGateway {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS("pushwire/1"))
	if err != nil {
		t.Fatal(err)
	}
	return newGatewayOn(t, "tls", ln, handle)
}

// quicListener presents a QUIC listener as a net.Listener of streams: Accept returns the first
// bidirectional stream of each new connection.
type quicListener struct {
	udp *net.UDPConn
	tr  *quic.Transport
	ln  *quic.Listener
}

func (l *quicListener) Accept() (net.Conn, error) {
	for {
		qc, err := l.ln.Accept(context.Background())
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		st, err := qc.AcceptStream(ctx)
		cancel()
		if err != nil {
			_ = qc.CloseWithError(1, "no stream")
			continue
		}
		return &quicStreamConn{Stream: st, qc: qc}, nil
	}
}

func (l *quicListener) Close() error {
	err := l.ln.Close()
	_ = l.tr.Close()
	_ = l.udp.Close()
	return err
}

func (l *quicListener) Addr() net.Addr { return l.ln.Addr() }

type quicStreamConn struct {
	*quic.Stream
	qc *quic.Conn
}

func (c *quicStreamConn) LocalAddr() net.Addr  { return c.qc.LocalAddr() }
func (c *quicStreamConn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }
func (c *quicStreamConn) Close() error         { return c.qc.CloseWithError(0, "") }

// newQUICGateway is a fake gateway over QUIC with ALPN pushwire/1.
func newQUICGateway(t *testing.T, handle func(*gwConn)) *fakeGateway {
	t.Helper()
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(serverTLS("pushwire/1"), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return newGatewayOn(t, "quic", &quicListener{udp: udp, tr: tr, ln: ln}, handle)
}

// countingListener counts the connections made to a TCP port and closes them at once.
func countingListener(t *testing.T) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
	})
	return ln.Addr().String(), &n
}

// TestConnectOverTransports logs in, sends a request and receives a push over each transport
// that has a fake gateway here.
func TestConnectOverTransports(t *testing.T) {
	gateways := map[string]func(*testing.T, func(*gwConn)) *fakeGateway{
		"tcp":  newGateway,
		"tls":  newTLSGateway,
		"quic": newQUICGateway,
		"ws":   newWSGateway,
		"wss":  newWSSGateway,
	}
	for _, proto := range []string{"tcp", "tls", "ws", "wss", "quic"} {
		t.Run(proto, func(t *testing.T) {
			gw := gateways[proto](t, func(g *gwConn) {
				if _, err := g.login("60"); err != nil {
					return
				}
				g.serve(true, func(f frame.Frame) {
					if f.Type == frame.TypeRequest {
						_ = g.send(
							frame.Frame{Header: frame.Header{Type: frame.TypeResponse, Biz: f.Biz, Seq: f.Seq}, Body: f.Body},
							frame.Frame{Header: frame.Header{Type: frame.TypePush, Biz: 7, Seq: 1}, Meta: meta("id", "m1"), Body: []byte("hi")},
						)
					}
				})
			})
			ctl := newControl(t, gw.endpoint())
			pushes := make(chan Push, 1)
			c := newTestClient(t, ctl, func(cfg *Config) {
				cfg.TLS = clientTLS()
				cfg.OnPush = func(p Push) { pushes <- p }
			})
			if err := c.Connect(context.Background()); err != nil {
				t.Fatalf("Connect: %v", err)
			}
			if got := c.Transport(); got != proto {
				t.Errorf("Transport() = %q, want %q", got, proto)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			r, err := c.Request(ctx, 3, nil, []byte("ping"))
			if err != nil || string(r.Body) != "ping" {
				t.Fatalf("Request: %v, %+v", err, r)
			}
			if p := recv(t, pushes, "push"); p.ID != "m1" || string(p.Payload) != "hi" {
				t.Errorf("push %+v", p)
			}
		})
	}
}

// TestFallbackAcrossTransports: a dead ws endpoint, a ws endpoint refusing the upgrade (404), a
// tls endpoint whose server does not speak
// TLS, an untrusted quic endpoint and a protocol the client does not know are passed over, each
// dial failure counted, and the live tcp gateway is reached.
func TestFallbackAcrossTransports(t *testing.T) {
	gw := newGateway(t, loginAndServe)
	plain := newGateway(t, loginAndServe) // answers TLS's ClientHello as a bad frame
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	if err := dead.Close(); err != nil {
		t.Fatal(err)
	}
	untrusted := newQUICGateway(t, loginAndServe)
	wrongPath, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusing := newGatewayOn(t, "ws", &wsListener{Listener: wrongPath, path: "/elsewhere"}, loginAndServe)
	ctl := newControl(t,
		Endpoint{"ws", deadAddr},
		refusing.endpoint(),
		Endpoint{"tls", plain.ln.Addr().String()},
		untrusted.endpoint(),
		Endpoint{"sctp", "127.0.0.1:1"},
		gw.endpoint(),
	)
	c := newTestClient(t, ctl, func(cfg *Config) { cfg.TLS = &tls.Config{RootCAs: x509.NewCertPool()} })
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if got := c.Transport(); got != "tcp" {
		t.Errorf("Transport() = %q, want tcp", got)
	}
	if s := c.Stats(); s.Errors["dial"] != 4 || len(s.Errors) != 1 {
		t.Errorf("errors %v, want four dial failures", s.Errors)
	}
}

// TestFallbackAfterRefusedLogin: a gateway refusing the login with BUSY is followed by the next
// endpoint; AUTH_FAILED stops at once (every gateway would refuse the token).
func TestFallbackAfterRefusedLogin(t *testing.T) {
	refuse := func(code frame.Code) func(*gwConn) {
		return func(g *gwConn) {
			f, err := g.next()
			if err != nil {
				return
			}
			_ = g.send(frame.Frame{Header: frame.Header{Type: frame.TypeLoginAck, Seq: f.Seq, Code: code}})
		}
	}
	busy := newTLSGateway(t, refuse(frame.CodeBusy))
	gw := newQUICGateway(t, loginAndServe)
	c := newTestClient(t, newControl(t, busy.endpoint(), gw.endpoint()), func(cfg *Config) { cfg.TLS = clientTLS() })
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if got := c.Transport(); got != "quic" {
		t.Errorf("Transport() = %q, want quic", got)
	}
	if s := c.Stats(); s.Errors["BUSY"] != 1 || len(s.Errors) != 1 {
		t.Errorf("errors %v, want one BUSY", s.Errors)
	}

	auth := newTLSGateway(t, refuse(frame.CodeAuthFailed))
	addr, dialed := countingListener(t)
	c = newTestClient(t, newControl(t, auth.endpoint(), Endpoint{"tcp", addr}), func(cfg *Config) { cfg.TLS = clientTLS() })
	var se *Error
	if err := c.Connect(context.Background()); !errors.As(err, &se) || se.Code != frame.CodeAuthFailed {
		t.Fatalf("Connect: %v, want AUTH_FAILED", err)
	}
	if n := dialed.Load(); n != 0 {
		t.Errorf("the endpoint after AUTH_FAILED was dialed %d times", n)
	}
}

// TestTransportsFilter: Config.Transports skips the endpoints of other protocols and keeps
// control's order (it does not reorder).
func TestTransportsFilter(t *testing.T) {
	wsAddr, wsDialed := countingListener(t)
	tlsGW := newTLSGateway(t, loginAndServe)
	tcpGW := newGateway(t, loginAndServe)

	// Only tcp: the ws and tls endpoints before it are never dialed.
	ctl := newControl(t, Endpoint{"ws", wsAddr}, tlsGW.endpoint(), tcpGW.endpoint())
	c := newTestClient(t, ctl, func(cfg *Config) {
		cfg.Transports = []string{"tcp"}
		cfg.TLS = clientTLS()
	})
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if got := c.Transport(); got != "tcp" {
		t.Errorf("Transport() = %q, want tcp", got)
	}
	if s := c.Stats(); len(s.Errors) != 0 {
		t.Errorf("errors %v, want none", s.Errors)
	}
	tlsGW.mu.Lock()
	tlsConns := len(tlsGW.conns)
	tlsGW.mu.Unlock()
	if n := wsDialed.Load(); n != 0 || tlsConns != 0 {
		t.Errorf("filtered endpoints dialed: ws %d, tls %d", n, tlsConns)
	}

	// Transports [tls tcp] with control's order tcp, tls: tcp first, as control said.
	ctl = newControl(t, tcpGW.endpoint(), tlsGW.endpoint())
	c = newTestClient(t, ctl, func(cfg *Config) {
		cfg.Transports = []string{"tls", "tcp"}
		cfg.TLS = clientTLS()
		cfg.Device = "dev2"
	})
	if err := c.Connect(context.Background()); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	if got := c.Transport(); got != "tcp" {
		t.Errorf("Transport() = %q, want tcp (control's order)", got)
	}
}

// TestNoSupportedEndpoint: control offering only protocols outside Config.Transports is
// ErrNoEndpoint naming them, counted as no_endpoint, and nothing is dialed.
func TestNoSupportedEndpoint(t *testing.T) {
	addr, dialed := countingListener(t)
	ctl := newControl(t, Endpoint{"ws", addr}, Endpoint{"wss", addr})
	c := newTestClient(t, ctl, func(cfg *Config) { cfg.Transports = []string{"tcp", "quic"} })
	err := c.Connect(context.Background())
	if !errors.Is(err, ErrNoEndpoint) {
		t.Fatalf("Connect: %v, want ErrNoEndpoint", err)
	}
	for _, want := range []string{`"ws"`, `"wss"`, `"tcp"`, `"quic"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if s := c.Stats(); s.Errors["no_endpoint"] != 1 || len(s.Errors) != 1 {
		t.Errorf("errors %v, want one no_endpoint", s.Errors)
	}
	if n := dialed.Load(); n != 0 {
		t.Errorf("dialed %d times", n)
	}
}
