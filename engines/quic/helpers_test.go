package quicengine

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/enginetest"
)

// wait bounds every wait of a test for something to happen (a failure bound, not a speed).
const wait = 10 * time.Second

var (
	certOnce sync.Once
	certPair tls.Certificate
	certPool *x509.CertPool
)

// testCert is a self-signed ECDSA certificate for 127.0.0.1, made once.
func testCert(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "pushwire test"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:              []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		certPair = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
		certPool = x509.NewCertPool()
		certPool.AddCert(leaf)
	})
	return certPair, certPool
}

// serverTLS is a server configuration as the gateway would give (no ALPN: the engine forces it).
func serverTLS(t testing.TB) *tls.Config {
	cert, _ := testCert(t)
	return &tls.Config{Certificates: []tls.Certificate{cert}}
}

// start builds and starts a quic engine on 127.0.0.1:0 with cfg (TLS filled in).
func start(t testing.TB, cfg engines.Config, h engines.Handler) engines.Engine {
	t.Helper()
	if cfg.TLS == nil {
		cfg.TLS = serverTLS(t)
	}
	return enginetest.Start(t, Name, cfg, h)
}

// client is a quic-go client connection with its own UDP socket on 127.0.0.1 (so each client has
// its own remote address at the server).
type client struct {
	udp *net.UDPConn
	tr  *quic.Transport
	qc  *quic.Conn
	st  *quic.Stream
}

type dialOpts struct {
	alpn   []string     // default [pushwire/1]
	config *quic.Config // default: a generous idle timeout
}

// dialConn makes the QUIC connection only (no stream).
func dialConn(t testing.TB, e engines.Engine, o dialOpts) (*client, error) {
	t.Helper()
	_, pool := testCert(t)
	if o.alpn == nil {
		o.alpn = []string{ALPN}
	}
	if o.config == nil {
		o.config = &quic.Config{MaxIdleTimeout: time.Minute}
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{udp: udp, tr: &quic.Transport{Conn: udp}}
	t.Cleanup(c.close)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	tc := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: o.alpn, MinVersion: tls.VersionTLS13}
	qc, err := c.tr.Dial(ctx, e.Addr(), tc, o.config)
	if err != nil {
		return c, err
	}
	c.qc = qc
	return c, nil
}

// dial connects and opens the session stream; nothing reaches the server until the first write.
func dial(t testing.TB, e engines.Engine) *client {
	t.Helper()
	return dialWith(t, e, dialOpts{})
}

func dialWith(t testing.TB, e engines.Engine, o dialOpts) *client {
	t.Helper()
	c, err := dialConn(t, e, o)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.openStream(t)
	return c
}

func (c *client) openStream(t testing.TB) {
	t.Helper()
	st, err := c.qc.OpenStream()
	if err != nil {
		t.Fatalf("open stream: %v", err)
	}
	c.st = st
}

func (c *client) close() {
	if c.qc != nil {
		_ = c.qc.CloseWithError(0, "")
	}
	_ = c.tr.Close()
	_ = c.udp.Close()
}

func (c *client) write(t testing.TB, s string) {
	t.Helper()
	if _, err := c.st.Write([]byte(s)); err != nil {
		t.Fatalf("client write: %v", err)
	}
}

// read reads exactly n bytes within the wait bound.
func (c *client) read(t testing.TB, n int) string {
	t.Helper()
	_ = c.st.SetReadDeadline(time.Now().Add(wait))
	b := make([]byte, n)
	if _, err := io.ReadFull(c.st, b); err != nil {
		t.Fatalf("client read %d bytes: %v (got %q)", n, err, bytes.TrimRight(b, "\x00"))
	}
	return string(b)
}

// readEnd reads until the stream or the connection ends (within the wait bound) and returns what
// came and the error that ended it.
func (c *client) readEnd(t testing.TB) (string, error) {
	t.Helper()
	_ = c.st.SetReadDeadline(time.Now().Add(wait))
	b, err := io.ReadAll(c.st)
	if err == nil {
		err = io.EOF
	}
	return string(b), err
}

// localAddr is what the server sees as the client's RemoteAddr.
func (c *client) localAddr() net.Addr { return c.udp.LocalAddr() }

// addrOnly gives enginetest.Handler.Conn the one thing it asks of a client: its local address.
type addrOnly struct {
	net.Conn
	a net.Addr
}

func (a addrOnly) LocalAddr() net.Addr { return a.a }

// serverConn waits for the server side of c to open and returns it.
func serverConn(t testing.TB, h *enginetest.Handler, c *client) engines.Conn {
	t.Helper()
	return h.Conn(t, addrOnly{a: c.localAddr()})
}

// waitFor polls cond until it holds or the wait bound passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(wait); !cond(); time.Sleep(2 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, wait)
		}
	}
}
