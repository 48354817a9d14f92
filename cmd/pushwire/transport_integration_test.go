package main

// The gateway serving every transport at once: one gateway process with a tcp, tls, ws, wss and
// quic listener (a self-signed certificate), control handing out all five, and SDK clients each
// restricted to one transport logging in and receiving a push; a TLS client without the ALPN is
// refused; SIGHUP reloads the certificate files.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/client"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/tlslayer"
)

// everyTransport are the transports the test's gateway serves, tcp first.
var everyTransport = []string{"tcp", "tls", "ws", "wss", "quic"}

// deployEvery starts control and one gateway on engine serving every transport.
func deployEvery(t *testing.T, engine string) *bench.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := bench.Deploy(ctx, bench.DeployConfig{
		Binary:         testBinary,
		Engine:         engine,
		Transport:      "tcp",
		MoreTransports: everyTransport[1:],
		Heartbeat:      2 * time.Second,
		LogDir:         t.TempDir(),
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stopping the deployment: %v", err)
		}
	})
	return d
}

// loginAndPush logs an SDK client restricted to proto in through control and checks that it
// receives a push sent through the push API.
func loginAndPush(t *testing.T, d *bench.Deployment, proto string, roots *x509.CertPool) {
	t.Helper()
	device := "dev-" + proto
	got := make(chan client.Push, 4)
	c, err := client.New(client.Config{
		ControlURL: d.ControlURL, App: d.App, Secret: d.Secret, Device: device, User: "u-" + device,
		Transports: []string{proto},
		TLS:        &tls.Config{RootCAs: roots},
		OnPush:     func(p client.Push) { got <- p },
		Logger:     slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect over %s: %v", proto, err)
	}
	if c.Transport() != proto || c.Node() != "gw0" {
		t.Fatalf("logged in over %q to %q, want %s to gw0", c.Transport(), c.Node(), proto)
	}
	payload := "hello over " + proto
	status, ans := push(t, d, d.PushKey, map[string]any{"biz": 7, "devices": []string{device}, "payload": payload})
	if status != 200 || ans["delivered"] != 1.0 {
		t.Fatalf("push: %d %v, want delivered 1", status, ans)
	}
	select {
	case p := <-got:
		if string(p.Payload) != payload || p.Biz != 7 {
			t.Fatalf("push received biz %d %q, want biz 7 %q", p.Biz, p.Payload, payload)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no push over %s", proto)
	}
}

// rootsOf is a pool holding the PEM certificates in files.
func rootsOf(t *testing.T, files ...string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !pool.AppendCertsFromPEM(b) {
			t.Fatalf("%s: no certificate", f)
		}
	}
	return pool
}

// addrOf is the host:port of a protocol://host:port endpoint.
func addrOf(ep string) string {
	_, addr, _ := strings.Cut(ep, "://")
	return addr
}

func TestIntegrationTransports(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	d := deployEvery(t, "std")
	if d.CAFile == "" {
		t.Fatal("no certificate written for tls, wss and quic")
	}
	roots := rootsOf(t, d.CAFile)

	for _, proto := range everyTransport {
		t.Run(proto, func(t *testing.T) { loginAndPush(t, d, proto, roots) })
	}

	// The node's stats name every transport it serves.
	if tr, _ := stats(t, d)["transport"].(string); tr != strings.Join(everyTransport, ",") {
		t.Errorf("stats transport %q, want %q", tr, strings.Join(everyTransport, ","))
	}

	tlsAddr := addrOf(d.Endpoints["tls"][0])
	t.Run("tls without ALPN is refused", func(t *testing.T) {
		cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
		if err := handshake(tlsAddr, cfg); err == nil {
			t.Fatal("a TLS client offering no ALPN stays connected to --tls-listen")
		}
		cfg.NextProtos = []string{"h2"}
		if err := handshake(tlsAddr, cfg); err == nil {
			t.Fatal("a TLS client offering only h2 stays connected to --tls-listen")
		}
		cfg.NextProtos = []string{tlslayer.ALPN}
		if err := handshake(tlsAddr, cfg); err != nil {
			t.Fatalf("with ALPN %s: %v", tlslayer.ALPN, err)
		}
	})

	t.Run("SIGHUP reloads the certificate", func(t *testing.T) {
		certFile, keyFile := d.CAFile, filepath.Join(filepath.Dir(d.CAFile), "key.pem")
		oldSerial := serialOf(t, tlsAddr, roots)

		// A broken pair is refused and the old one kept.
		if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := d.Signal("gateway-0", syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		logFile := filepath.Join(d.LogDir, "gateway-0.log")
		eventually(t, 10*time.Second, "the failed reload logged", func() bool {
			b, _ := os.ReadFile(logFile)
			return strings.Contains(string(b), "certificate reload failed")
		})
		if s := serialOf(t, tlsAddr, roots); s.Cmp(oldSerial) != 0 {
			t.Fatalf("after a failed reload the serial is %v, want the old %v", s, oldSerial)
		}
		if err := d.Check(); err != nil {
			t.Fatal(err)
		}

		// A new pair replaces the files; SIGHUP; new handshakes see it.
		newCert, newKey, err := tlslayer.SelfSigned(t.TempDir(), "localhost", "127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		for src, dst := range map[string]string{newCert: certFile, newKey: keyFile} {
			b, err := os.ReadFile(src)
			if err == nil {
				err = os.WriteFile(dst, b, 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := d.Signal("gateway-0", syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		newRoots := rootsOf(t, newCert)
		var serial *big.Int
		eventually(t, 10*time.Second, "a handshake with the new certificate", func() bool {
			cs, err := dialState(tlsAddr, &tls.Config{RootCAs: newRoots, ServerName: "127.0.0.1", NextProtos: []string{tlslayer.ALPN}, MinVersion: tls.VersionTLS13})
			if err != nil {
				return false
			}
			serial = cs.PeerCertificates[0].SerialNumber
			return true
		})
		if serial.Cmp(oldSerial) == 0 {
			t.Fatalf("serial %v unchanged after the reload", serial)
		}
		b, _ := os.ReadFile(logFile)
		if !strings.Contains(string(b), "certificate reloaded") {
			t.Error("the reload is not logged")
		}
		// QUIC and wss present the new certificate too: a client trusting only it logs in.
		for _, proto := range []string{"wss", "quic"} {
			c, err := client.New(client.Config{
				ControlURL: d.ControlURL, App: d.App, Secret: d.Secret, Device: "reloaded-" + proto, User: "u",
				Transports: []string{proto}, TLS: &tls.Config{RootCAs: newRoots},
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			err = c.Connect(ctx)
			cancel()
			_ = c.Close()
			if err != nil {
				t.Errorf("%s with the reloaded certificate: %v", proto, err)
			}
		}
	})
}

// handshake dials addr over TLS with cfg; it returns the error of a refused client: the failed
// handshake, or (should the server's alert come after the client's Finished) the first read.
func handshake(addr string, cfg *tls.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer func() { _ = nc.Close() }()
	_ = nc.SetReadDeadline(time.Now().Add(time.Second))
	_, err = nc.Read(make([]byte, 1))
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return nil // still open: accepted
	}
	return err
}

// dialState completes a TLS handshake with addr and returns its state; the server's refusal may
// come as an alert after the client's Finished, so a refused ALPN is also caught by reading.
func dialState(addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := tls.Dialer{Config: cfg}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer func() { _ = nc.Close() }()
	tc := nc.(*tls.Conn)
	cs := tc.ConnectionState()
	if cs.NegotiatedProtocol != tlslayer.ALPN {
		return cs, fmt.Errorf("negotiated %q, not %s", cs.NegotiatedProtocol, tlslayer.ALPN)
	}
	return cs, nil
}

// serialOf is the serial number of the certificate addr presents.
func serialOf(t *testing.T, addr string, roots *x509.CertPool) *big.Int {
	t.Helper()
	cs, err := dialState(addr, &tls.Config{RootCAs: roots, ServerName: "127.0.0.1", NextProtos: []string{tlslayer.ALPN}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	return cs.PeerCertificates[0].SerialNumber
}

// The stream transports on the event-loop engines: the same gateway with --engine gnet, netpoll
// and nbio (quic is its own engine whatever --engine says).
func TestIntegrationTransportsEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	for _, engine := range engines.Names() {
		if engine == "std" || !engines.Carries(engine, engines.TransportTCP) {
			continue
		}
		t.Run(engine, func(t *testing.T) {
			d := deployEvery(t, engine)
			roots := rootsOf(t, d.CAFile)
			for _, proto := range everyTransport {
				t.Run(proto, func(t *testing.T) { loginAndPush(t, d, proto, roots) })
			}
		})
	}
}
