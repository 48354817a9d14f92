package conformance

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/internal/transport"
)

// stack composes one transport's server side over h exactly as the gateway does, and adjusts
// cfg for the engine under it: cfg.MaxFrame comes in as the largest frame h takes (0: the
// layers' default) and leaves as the outermost layer's EngineMaxFrame; cfg.TLS is set for an
// engine that carries its own transport security.
type stack func(h engines.Handler, cfg *engines.Config) (engines.Handler, error)

// quicALPN is the protocol a QUIC client negotiates (the engine forces it anyway).
const quicALPN = "pushwire/1"

// stacks holds the transports this build composes, by name (the layered ones in layers_test.go).
var stacks = map[string]stack{
	engines.TransportTCP: func(h engines.Handler, _ *engines.Config) (engines.Handler, error) { return h, nil },
	// quic: the "quic" engine carries its own transport: it only needs the server's TLS.
	engines.TransportQUIC: func(h engines.Handler, cfg *engines.Config) (engines.Handler, error) {
		tc, err := serverConfig(quicALPN)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
		return h, nil
	},
}

// dialTransport connects to addr over proto as a client of that transport does
// (internal/transport), trusting the test certificate; QUIC's UDP socket is bound to
// 127.0.0.1, so that the client's address is the one the server sees.
func dialTransport(ctx context.Context, proto, addr string) (net.Conn, error) {
	o := transport.Options{LocalAddr: "127.0.0.1"}
	if proto != engines.TransportTCP && proto != engines.TransportWS {
		cfg, err := clientTLS()
		if err != nil {
			return nil, err
		}
		o.TLS = cfg
	}
	return transport.Dial(ctx, proto, addr, o)
}

// The certificate and key files, in the environment of a helper process (see certFiles).
const (
	certEnv = "PUSHWIRE_CONFORMANCE_CERT"
	keyEnv  = "PUSHWIRE_CONFORMANCE_KEY"
)

// certs is the self-signed certificate of the test process, made on first use.
var certs struct {
	once sync.Once
	dir  string
	cert string // PEM certificate, also the clients' root
	key  string
	err  error
}

// certFiles returns the test certificate and key files: those named by certEnv and keyEnv (a
// helper process uses its parent's), or a self-signed pair for localhost and 127.0.0.1 made
// in a temporary directory on first use (TestMain removes it).
func certFiles() (certFile, keyFile string, err error) {
	certs.once.Do(func() {
		if c, k := os.Getenv(certEnv), os.Getenv(keyEnv); c != "" && k != "" {
			certs.cert, certs.key = c, k
			return
		}
		certs.dir, certs.err = os.MkdirTemp("", "pushwire-conformance-")
		if certs.err == nil {
			certs.cert, certs.key, certs.err = selfSigned(certs.dir, "localhost", "127.0.0.1")
		}
	})
	return certs.cert, certs.key, certs.err
}

// clientTLS is a client configuration that trusts the test certificate, for localhost.
func clientTLS() (*tls.Config, error) {
	certFile, _, err := certFiles()
	if err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("conformance: no certificate in %s", certFile)
	}
	return &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13}, nil
}

// removeCerts removes the certificate directory, if one was made.
func removeCerts() {
	if certs.dir != "" {
		_ = os.RemoveAll(certs.dir)
	}
}

// refuseFor is the RefuseMessage the gateway gives an engine serving transport, where frame is
// the GOAWAY frame it gives a plain stream (tcp, and quic's stream).
func refuseFor(transport string, frame []byte) []byte {
	switch transport {
	case engines.TransportTLS, engines.TransportWSS:
		return nil
	case engines.TransportWS:
		return wsRefusal()
	}
	return frame
}

// rawConn is where a test writes bytes below the protocol frames: the client's stream itself on
// tcp, tls and quic; on ws and wss the connection under the client's WebSocket codec, where
// the test writes WebSocket frames of its own making.
type rawConn struct {
	net.Conn
	// message: the transport carries messages (ws, wss), and wrap makes them.
	message bool
	// wrap returns what to write on Conn to send frame: frame itself on a stream transport; on
	// ws and wss a binary message in parts masked WebSocket frames (a binary frame and parts-1
	// continuations).
	wrap func(frame []byte, parts int) []byte
}

// dialRaw connects to s and returns the client, reading frames as usual, and the raw side of
// its connection; cleanup closes both.
func dialRaw(t testing.TB, s *server) (*client, *rawConn) {
	t.Helper()
	if s.tg.transport == engines.TransportWS || s.tg.transport == engines.TransportWSS {
		return dialRawWS(t, s)
	}
	c := dial(t, s)
	return c, &rawConn{Conn: c.Conn, wrap: func(f []byte, _ int) []byte { return f }}
}

// refusedQUIC checks one QUIC connection over the cap of s: the engine refuses it after the
// handshake, on the client's stream (its first bytes, the hello, make the server see it), with
// the refuse message and the end of the stream; the handler never sees it.
func refusedQUIC(t *testing.T, s *server, i int, refuse []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialTransport(ctx, engines.TransportQUIC, s.addr)
	if err != nil {
		if len(refuse) == 0 {
			return // refused in the handshake: nothing to read
		}
		t.Fatalf("refused connection %d: dial: %v", i, err)
	}
	defer func() { _ = c.Close() }()
	if _, err := c.Write(hello); err != nil {
		t.Fatalf("refused connection %d: hello: %v", i, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("refused connection %d: read %d bytes, then %v; want the refuse message and the end of the stream", i, len(got), err)
	}
	if !bytes.Equal(got, refuse) {
		t.Fatalf("refused connection %d got % x, want the refuse message % x", i, got, refuse)
	}
}
