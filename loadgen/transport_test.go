package loadgen

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/pushwire/pushwire/internal/transport"
)

// writeCA writes a self-signed certificate as PEM in a test directory and returns its path.
func writeCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "loadgen test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The transport settings: defaults, validation naming the setting, the result's config, and
// what reaches the workers.
func TestTransportConfig(t *testing.T) {
	base := Config{ControlURL: "http://127.0.0.1:1", GatewayHTTP: []string{"http://127.0.0.1:2"}, App: "a", Secret: "s", PushKey: "k",
		WorkerCommand: []string{"true"}, Logger: discard()}

	cfg := base
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if cfg.Transport != "tcp" || cfg.WSPath != "/ws" || cfg.caPEM != nil || cfg.resultConfig()["transport"] != "tcp" {
		t.Errorf("defaults: transport %q, ws path %q, CA %d bytes, result %v", cfg.Transport, cfg.WSPath, len(cfg.caPEM), cfg.resultConfig()["transport"])
	}

	ca := writeCA(t)
	cfg = base
	cfg.Transport, cfg.CAFile, cfg.WSOrigin = "wss", ca, "https://example.org"
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	if len(cfg.caPEM) == 0 || cfg.resultConfig()["transport"] != "wss" {
		t.Errorf("wss: CA %d bytes, result transport %v", len(cfg.caPEM), cfg.resultConfig()["transport"])
	}

	notPEM := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.Transport = "http" }, `transport "http": want one of tcp, tls, ws, wss, quic`},
		{func(c *Config) { c.Transport = "TCP" }, `transport "TCP"`},
		{func(c *Config) { c.CAFile = filepath.Join(t.TempDir(), "missing.pem") }, "CA file"},
		{func(c *Config) { c.CAFile = notPEM }, "CA file " + notPEM + ": no PEM certificate"},
		{func(c *Config) { c.WSPath = "ws" }, `WebSocket path "ws"`},
	} {
		c := base
		tc.mod(&c)
		if err := c.setDefaults(); err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

func TestWorkerSpecTransport(t *testing.T) {
	ca, err := os.ReadFile(writeCA(t))
	if err != nil {
		t.Fatal(err)
	}
	ok := WorkerSpec{Lo: 0, Hi: 10, ControlURL: "http://127.0.0.1:1", App: "a", Secret: "s", DevicePrefix: "p-",
		Transport: "quic", CAPEM: ca, Sources: []string{"127.0.0.2", "127.0.0.3"}}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*WorkerSpec)
		want string
	}{
		{func(s *WorkerSpec) { s.Transport = "udp" }, `transport "udp"`},
		{func(s *WorkerSpec) { s.CAPEM = []byte("junk") }, "ca_pem: no PEM certificate"},
		{func(s *WorkerSpec) { s.WSPath = "ws" }, `ws_path "ws"`},
	} {
		s := ok
		tc.mod(&s)
		if err := s.validate(); err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}

	// The worker's clients: the spec's transport, its roots, a native platform for quic and a
	// web one for ws.
	w := newWorker(ok, discard())
	if w.proto != "quic" || w.tls == nil || w.tls.RootCAs == nil {
		t.Fatalf("worker transport %q, TLS %v", w.proto, w.tls)
	}
	if _, err := w.newClient(1); err != nil {
		t.Fatalf("newClient: %v", err)
	}
	if platformOf("quic") != "native" || platformOf("tcp") != "native" || platformOf("tls") != "native" ||
		platformOf("ws") != "web" || platformOf("wss") != "web" {
		t.Error("platformOf: ws and wss are web, the others native")
	}
	if w := newWorker(WorkerSpec{Lo: 0, Hi: 1}, discard()); w.proto != "tcp" || w.tls != nil {
		t.Errorf("default worker transport %q, TLS %v", w.proto, w.tls)
	}
}

func TestErrReasonHandshake(t *testing.T) {
	err := fmt.Errorf("client: dial: %w", &transport.HandshakeError{Proto: "wss", Addr: "127.0.0.1:1/ws", Step: "websocket upgrade", Err: io.EOF})
	if got := errReason(err); got != "handshake_wss" {
		t.Errorf("errReason = %q, want handshake_wss", got)
	}
	err = fmt.Errorf("client: login: %w", &quic.TransportError{ErrorCode: quic.ConnectionRefused, Remote: true})
	if got := errReason(err); got != "refused" {
		t.Errorf("errReason of a QUIC CONNECTION_REFUSED = %q, want refused", got)
	}
	err = &transport.HandshakeError{Proto: "quic", Addr: "127.0.0.1:1", Step: "quic handshake", Err: context.DeadlineExceeded}
	if got := errReason(err); got != "timeout" {
		t.Errorf("errReason of a handshake timeout = %q, want timeout", got)
	}
}

// A failed connect is counted by reason, and the first of each reason is logged with its error.
func TestConnectFailedLogsFirstOfEachReason(t *testing.T) {
	var logs strings.Builder
	w := newWorker(WorkerSpec{Lo: 0, Hi: 3, DevicePrefix: "d-"}, slog.New(slog.NewTextHandler(&logs, nil)))
	refused := &quic.TransportError{ErrorCode: quic.ConnectionRefused, Remote: true}
	w.connectFailed(0, refused)
	w.connectFailed(1, refused)
	w.connectFailed(2, errors.New("something else"))
	if got := w.takeErrors(); got["refused"] != 2 || got["other"] != 1 {
		t.Errorf("errors %v", got)
	}
	if n := strings.Count(logs.String(), "connect failed"); n != 2 || !contains(logs.String(), "device=d-0") || !contains(logs.String(), "something else") {
		t.Errorf("%d lines logged:\n%s", n, logs.String())
	}
}
