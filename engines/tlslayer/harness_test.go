package tlslayer

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/engines"
	_ "github.com/pushwire/pushwire/engines/gnet"
	_ "github.com/pushwire/pushwire/engines/nbio"
	_ "github.com/pushwire/pushwire/engines/netpoll"
	_ "github.com/pushwire/pushwire/engines/std"
)

// TestMain fails the run if a goroutine outlives the tests (a handshake goroutine must end with
// its connection). The ignored ones belong to libraries and live as long as the process: netpoll's
// pollers and the housekeeping of gnet's package-level worker pool.
func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(runClientHelper())
	}
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/cloudwego/netpoll.(*defaultPoll).Wait"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).purgeStaleWorkers"),
		goleak.IgnoreTopFunction("github.com/panjf2000/ants/v2.(*poolCommon).ticktock"),
	)
}

// wait bounds every wait on a condition in these tests.
const wait = 15 * time.Second

// streamEngines lists the registered engines that carry TLS.
func streamEngines() []string {
	var names []string
	for _, n := range engines.Names() {
		if engines.Carries(n, engines.TransportTLS) {
			names = append(names, n)
		}
	}
	return names
}

// forEachEngine runs f as a subtest per engine carrying TLS.
func forEachEngine(t *testing.T, f func(t *testing.T, name string)) {
	names := streamEngines()
	if len(names) == 0 {
		t.Fatal("no engine carries tls")
	}
	for _, n := range names {
		t.Run(n, func(t *testing.T) { f(t, n) })
	}
}

// pki is a self-signed certificate for 127.0.0.1 and the client roots that trust it.
type pki struct {
	certFile, keyFile string
	certs             *Certs
	roots             *x509.CertPool
}

func newPKI(t testing.TB) *pki {
	t.Helper()
	certFile, keyFile, err := SelfSigned(t.TempDir(), "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	certs, err := LoadCerts(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{certFile: certFile, keyFile: keyFile, certs: certs, roots: rootsOf(t, certFile)}
}

func rootsOf(t testing.TB, certFile string) *x509.CertPool {
	t.Helper()
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("no certificate in", certFile)
	}
	return roots
}

// client is the configuration of a pushwire client trusting p.
func (p *pki) client(protos ...string) *tls.Config {
	if protos == nil {
		protos = []string{ALPN}
	}
	// X25519 alone keeps the tests' handshakes cheap (the server takes any group).
	return &tls.Config{RootCAs: p.roots, ServerName: "127.0.0.1", NextProtos: protos, MinVersion: tls.VersionTLS13,
		CurvePreferences: []tls.CurveID{tls.X25519}}
}

// recorder is the wrapped handler: it echoes whole lines (consuming only those, as the core
// consumes whole frames), and records opens, data calls, closes and their reasons, reporting any
// call out of the seam's order.
type recorder struct {
	t        testing.TB
	onOpen   func(c engines.Conn) // optional, called in OnOpen
	closed   chan uint64
	mu       sync.Mutex
	conns    map[uint64]engines.Conn // open
	state    map[uint64]int          // 1 open, 2 closed
	data     map[uint64]int          // OnData calls
	closes   map[uint64]int
	reasons  map[uint64]error
	opened   chan engines.Conn
	inflight map[uint64]bool
}

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, closed: make(chan uint64, 10000), opened: make(chan engines.Conn, 10000),
		conns: map[uint64]engines.Conn{}, state: map[uint64]int{}, data: map[uint64]int{},
		closes: map[uint64]int{}, reasons: map[uint64]error{}, inflight: map[uint64]bool{}}
}

func (r *recorder) enter(c engines.Conn, want int, what string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state[c.ID()] != want {
		r.t.Errorf("conn %d: %s in state %d", c.ID(), what, r.state[c.ID()])
	}
	if r.inflight[c.ID()] {
		r.t.Errorf("conn %d: %s concurrent with another callback", c.ID(), what)
	}
	r.inflight[c.ID()] = true
}

func (r *recorder) leave(c engines.Conn) {
	r.mu.Lock()
	r.inflight[c.ID()] = false
	r.mu.Unlock()
}

func (r *recorder) OnOpen(c engines.Conn) {
	r.enter(c, 0, "OnOpen")
	r.mu.Lock()
	r.conns[c.ID()] = c
	r.state[c.ID()] = 1
	r.mu.Unlock()
	if r.onOpen != nil {
		r.onOpen(c)
	}
	r.leave(c)
	r.opened <- c
}

func (r *recorder) OnData(c engines.Conn, in []byte) (int, error) {
	r.enter(c, 1, "OnData")
	defer r.leave(c)
	r.mu.Lock()
	r.data[c.ID()]++
	r.mu.Unlock()
	i := bytes.LastIndexByte(in, '\n')
	if i < 0 {
		return 0, nil
	}
	if err := c.Write(bytes.Clone(in[:i+1])); err != nil {
		return 0, err
	}
	return i + 1, nil
}

func (r *recorder) OnClose(c engines.Conn, err error) {
	r.enter(c, 1, "OnClose")
	r.mu.Lock()
	r.closes[c.ID()]++
	r.reasons[c.ID()] = err
	r.state[c.ID()] = 2
	delete(r.conns, c.ID())
	r.mu.Unlock()
	r.leave(c)
	r.closed <- c.ID()
}

// waitOpen returns the next connection opened.
func (r *recorder) waitOpen(t testing.TB) engines.Conn {
	t.Helper()
	select {
	case c := <-r.opened:
		return c
	case <-time.After(wait):
		t.Fatal("no OnOpen")
		return nil
	}
}

// waitClosed returns the ID of the next connection closed and its reason.
func (r *recorder) waitClosed(t testing.TB) (uint64, error) {
	t.Helper()
	select {
	case id := <-r.closed:
		r.mu.Lock()
		defer r.mu.Unlock()
		return id, r.reasons[id]
	case <-time.After(wait):
		t.Fatal("no OnClose")
		return 0, nil
	}
}

func (r *recorder) dataCalls(id uint64) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.data[id]
}

// checkOnce fails t unless every connection closed got exactly one OnClose.
func (r *recorder) checkOnce(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for id, n := range r.closes {
		if n != 1 {
			t.Errorf("conn %d: %d OnClose calls", id, n)
		}
	}
}

// serve starts engine name with the layer over r (cfg adjusted by mod) and returns its address.
func serve(t testing.TB, name string, p *pki, r *recorder, mod func(*Config, *engines.Config)) string {
	t.Helper()
	cfg := Config{TLS: p.certs.ServerConfig(), RequireALPN: ALPN}
	ecfg := engines.Config{}
	if mod != nil {
		mod(&cfg, &ecfg)
	}
	h, err := Wrap(r, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if ecfg.MaxFrame == 0 {
		ecfg.MaxFrame = cfg.EngineMaxFrame()
	}
	e, err := engines.New(name, ecfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := e.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return e.Addr().String()
}

// dialTLS connects over TCP, completes the handshake and returns the client.
func dialTLS(t testing.TB, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	c, err := dialTLSErr(addr, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// dialTLSErr is dialTLS reporting the error; wrap, if not nil, wraps the TCP connection.
func dialTLSErr(addr string, cfg *tls.Config, wrap func(net.Conn) net.Conn) (*tls.Conn, error) {
	nc, err := net.DialTimeout("tcp", addr, wait)
	if err != nil {
		return nil, err
	}
	if wrap != nil {
		nc = wrap(nc)
	}
	c := tls.Client(nc, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, err
	}
	return c, nil
}

// expectEcho reads from c until it has len(want) bytes, which must equal want.
func expectEcho(t testing.TB, c net.Conn, want []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	got := make([]byte, len(want))
	if _, err := ioReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("echo %q, want %q", trunc(got), trunc(want))
	}
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := c.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

func trunc(b []byte) []byte {
	if len(b) > 64 {
		return append(bytes.Clone(b[:64]), "..."...)
	}
	return b
}

// trickle writes each byte in its own write (TCP_NODELAY is on), so that the server's reads
// split records and the hello at many places.
type trickle struct{ net.Conn }

func (c trickle) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

// clientHello returns the bytes of a ClientHello the client config cfg sends.
func clientHello(t testing.TB, cfg *tls.Config) []byte {
	t.Helper()
	a, b := net.Pipe()
	defer func() { _ = b.Close() }()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(a, cfg).Handshake()
	}()
	br := bufio.NewReader(b)
	hdr := make([]byte, 5)
	if _, err := ioReadFullR(br, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := ioReadFullR(br, body); err != nil {
		t.Fatal(err)
	}
	_ = a.Close()
	<-done
	return append(hdr, body...)
}

func ioReadFullR(r *bufio.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := r.Read(b[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// eventually polls cond until it holds or the wait ends.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}
