package tlslayer

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushwire/pushwire/engines"
)

func TestWrapConfigErrors(t *testing.T) {
	p := newPKI(t)
	r := newRecorder(t)
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{}, "Config.TLS is required"},
		{Config{TLS: &tls.Config{}}, "Config.TLS has no certificate"},
		{Config{TLS: &tls.Config{Certificates: []tls.Certificate{*p.certs.Certificate()}, MaxVersion: tls.VersionTLS12}}, "Config.TLS.MaxVersion"},
		{Config{TLS: p.certs.ServerConfig(), MaxFrame: -1}, "Config.MaxFrame"},
		{Config{TLS: p.certs.ServerConfig("http/1.1"), RequireALPN: ALPN}, "Config.RequireALPN"},
	}
	for _, c := range cases {
		if _, err := Wrap(r, c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Wrap(%+v): err %v, want one naming %s", c.cfg, err, c.want)
		}
	}
	if _, err := Wrap(nil, Config{TLS: p.certs.ServerConfig()}); err == nil {
		t.Error("Wrap(nil handler): no error")
	}
	cfg := Config{TLS: p.certs.ServerConfig(ALPN), RequireALPN: ALPN}
	if _, err := Wrap(r, cfg); err != nil {
		t.Errorf("Wrap: %v", err)
	}
	if cfg.EngineMaxFrame() < recordHeader+maxCiphertext {
		t.Errorf("EngineMaxFrame %d holds no whole record", cfg.EngineMaxFrame())
	}
}

// TestEcho: frames split at every byte boundary (in plaintext: each part its own record), the
// ciphertext trickled byte by byte (the hello and every record split everywhere), and many frames
// coalesced in one record.
func TestEcho(t *testing.T) {
	forEachEngine(t, func(t *testing.T, name string) {
		p := newPKI(t)
		r := newRecorder(t)
		addr := serve(t, name, p, r, nil)

		msg := []byte("first frame\nsecond, a little longer\n3\n")
		c := dialTLS(t, addr, p.client())
		if got := c.ConnectionState().NegotiatedProtocol; got != ALPN {
			t.Fatalf("ALPN %q, want %q", got, ALPN)
		}
		for i := 1; i < len(msg); i++ {
			if _, err := c.Write(msg[:i]); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Write(msg[i:]); err != nil {
				t.Fatal(err)
			}
			expectEcho(t, c, msg)
		}

		tc, err := dialTLSErr(addr, p.client(), func(nc net.Conn) net.Conn { return trickle{nc} })
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tc.Close() }()
		for range 3 {
			if _, err := tc.Write(msg); err != nil {
				t.Fatal(err)
			}
			expectEcho(t, tc, msg)
		}

		var all bytes.Buffer
		for i := range 2000 {
			fmt.Fprintf(&all, "frame %d\n", i)
		}
		if _, err := c.Write(all.Bytes()); err != nil { // coalesced: records of 16 KiB
			t.Fatal(err)
		}
		expectEcho(t, c, all.Bytes())
	})
}

// TestMaxFrame: a frame of exactly MaxFrame bytes passes; a partial frame reaching MaxFrame
// closes the connection with engines.ErrFrameTooLarge.
func TestMaxFrame(t *testing.T) {
	const maxFrame = 100 << 10
	forEachEngine(t, func(t *testing.T, name string) {
		p := newPKI(t)
		r := newRecorder(t)
		addr := serve(t, name, p, r, func(c *Config, _ *engines.Config) { c.MaxFrame = maxFrame })

		c := dialTLS(t, addr, p.client())
		frame := append(bytes.Repeat([]byte("x"), maxFrame-1), '\n')
		if _, err := c.Write(frame); err != nil {
			t.Fatal(err)
		}
		expectEcho(t, c, frame)

		if _, err := c.Write(bytes.Repeat([]byte("y"), maxFrame)); err != nil {
			t.Fatal(err)
		}
		_, reason := r.waitClosed(t)
		if !errors.Is(reason, engines.ErrFrameTooLarge) {
			t.Fatalf("OnClose reason %v, want ErrFrameTooLarge", reason)
		}
		r.checkOnce(t)
	})
}

// TestPushToIdle: 8 goroutines write to 500 idle connections at once (Write and WriteFrame);
// every client gets every frame, each whole.
func TestPushToIdle(t *testing.T) {
	const conns, writers, perWriter = 500, 8, 5
	forEachEngine(t, func(t *testing.T, name string) {
		p := newPKI(t)
		r := newRecorder(t)
		addr := serve(t, name, p, r, nil)

		clients := make([]*tls.Conn, conns)
		var dg sync.WaitGroup
		for d := range 4 { // dialers
			dg.Add(1)
			go func() {
				defer dg.Done()
				for i := d; i < conns; i += 4 {
					c, err := dialTLSErr(addr, p.client(), nil)
					if err != nil {
						t.Error(err)
						return
					}
					clients[i] = c
				}
			}()
		}
		dg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		t.Cleanup(func() {
			for _, c := range clients {
				_ = c.Close()
			}
		})
		server := make([]engines.Conn, 0, conns)
		for range conns {
			server = append(server, r.waitOpen(t))
		}
		// The write side opens when the handshake is done: wait for it on every connection.
		for _, c := range server {
			eventually(t, "write side open", func() bool { return isOpen(c) })
		}
		tail := bytes.Repeat([]byte("t"), 3000)
		var wg sync.WaitGroup
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := range perWriter {
					for _, c := range server {
						var err error
						if k%2 == 0 {
							err = c.Write([]byte(fmt.Sprintf("w%d k%d\n", w, k)))
						} else {
							err = c.(engines.FrameWriter).WriteFrame([]byte(fmt.Sprintf("w%d k%d ", w, k)), append(tail[:len(tail):len(tail)], '\n'))
						}
						if err != nil {
							t.Errorf("write: %v", err)
							return
						}
					}
				}
			}()
		}
		var rg sync.WaitGroup
		for _, c := range clients {
			rg.Add(1)
			go func() {
				defer rg.Done()
				_ = c.SetReadDeadline(time.Now().Add(wait))
				br := bufio.NewReader(c)
				seen := map[string]bool{}
				for range writers * perWriter {
					line, err := br.ReadString('\n')
					if err != nil {
						t.Errorf("client read: %v", err)
						return
					}
					var w, k int
					if _, err := fmt.Sscanf(line, "w%d k%d", &w, &k); err != nil {
						t.Errorf("bad line %q", trunc([]byte(line)))
						return
					}
					if k%2 == 1 && len(line) != len(fmt.Sprintf("w%d k%d ", w, k))+len(tail)+1 {
						t.Errorf("frame of %d bytes, torn", len(line))
					}
					seen[fmt.Sprint(w, k)] = true
				}
				if len(seen) != writers*perWriter {
					t.Errorf("%d distinct frames, want %d", len(seen), writers*perWriter)
				}
			}()
		}
		wg.Wait()
		rg.Wait()
	})
}

// isOpen reports whether the layer's connection has its write side open.
func isOpen(c engines.Conn) bool {
	lc := c.(*conn)
	lc.wmu.Lock()
	defer lc.wmu.Unlock()
	return lc.open
}

// TestStalledHandshake: a client that sends its hello and never finishes the handshake, and one
// that sends only part of its hello, are closed when the wrapped handler closes them (as the
// core's login timeout does): OnClose once, and the handshake goroutine ends (TestMain checks).
func TestStalledHandshake(t *testing.T) {
	forEachEngine(t, func(t *testing.T, name string) {
		p := newPKI(t)
		r := newRecorder(t)
		addr := serve(t, name, p, r, nil)
		hello := clientHello(t, p.client())

		for _, part := range [][]byte{hello, hello[:len(hello)/2]} {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			sc := r.waitOpen(t)
			if _, err := nc.Write(part); err != nil {
				t.Fatal(err)
			}
			if len(part) == len(hello) {
				// The server answers the hello: the handshake is under way.
				_ = nc.SetReadDeadline(time.Now().Add(wait))
				if _, err := nc.Read(make([]byte, 1)); err != nil {
					t.Fatalf("no server hello: %v", err)
				}
			}
			if err := sc.Write([]byte("early\n")); !errors.Is(err, ErrHandshaking) {
				t.Fatalf("write during the handshake: %v, want ErrHandshaking", err)
			}
			_ = sc.Close() // the login timeout
			id, _ := r.waitClosed(t)
			if id != sc.ID() {
				t.Fatalf("closed %d, want %d", id, sc.ID())
			}
			_ = nc.SetReadDeadline(time.Now().Add(wait))
			if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, syscall.ECONNRESET) {
				t.Fatalf("client: %v, want the connection closed", err)
			}
			_ = nc.Close()
			if n := r.dataCalls(sc.ID()); n != 0 {
				t.Fatalf("%d OnData calls before the handshake completed", n)
			}
		}
		r.checkOnce(t)
	})
}

// TestCloseEitherSide: the server's Close sends close_notify (the client reads EOF) and OnClose
// gets nil; the client's close is seen; OnClose runs once for each.
func TestCloseEitherSide(t *testing.T) {
	forEachEngine(t, func(t *testing.T, name string) {
		p := newPKI(t)
		r := newRecorder(t)
		addr := serve(t, name, p, r, nil)

		c := dialTLS(t, addr, p.client())
		sc := r.waitOpen(t)
		if _, err := c.Write([]byte("hi\n")); err != nil {
			t.Fatal(err)
		}
		expectEcho(t, c, []byte("hi\n"))
		if err := sc.Write([]byte("bye\n")); err != nil {
			t.Fatal(err)
		}
		_ = sc.Close()
		_ = sc.Close()
		if err := sc.Write([]byte("late\n")); !errors.Is(err, engines.ErrClosed) {
			t.Fatalf("write after close: %v, want ErrClosed", err)
		}
		expectEcho(t, c, []byte("bye\n"))
		if n, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("client read after the server's close: %d, %v; want io.EOF (close_notify)", n, err)
		}
		if _, reason := r.waitClosed(t); reason != nil {
			t.Fatalf("OnClose reason %v for a local close, want nil", reason)
		}

		c2 := dialTLS(t, addr, p.client())
		sc2 := r.waitOpen(t)
		if _, err := c2.Write([]byte("hi\n")); err != nil {
			t.Fatal(err)
		}
		expectEcho(t, c2, []byte("hi\n"))
		_ = c2.Close()
		if id, _ := r.waitClosed(t); id != sc2.ID() {
			t.Fatalf("closed %d, want %d", id, sc2.ID())
		}
		r.checkOnce(t)
	})
}

// TestGarbageClient: a client speaking something else is closed with a reason naming TLS, before
// the wrapped handler sees any data; the others keep working.
func TestGarbageClient(t *testing.T) {
	forEachEngine(t, func(t *testing.T, name string) {
		p := newPKI(t)
		r := newRecorder(t)
		addr := serve(t, name, p, r, nil)

		good := dialTLS(t, addr, p.client())
		r.waitOpen(t)
		for _, junk := range []string{"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\x16\x03\x01\xff\xff", "\x16\x03\x01\x00\x05hello"} {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			sc := r.waitOpen(t)
			if _, err := nc.Write([]byte(junk)); err != nil {
				t.Fatal(err)
			}
			id, reason := r.waitClosed(t)
			if id != sc.ID() || reason == nil || !strings.Contains(reason.Error(), "tls") {
				t.Fatalf("junk %q: closed %d (want %d) with %v, want a reason naming tls", junk, id, sc.ID(), reason)
			}
			if n := r.dataCalls(sc.ID()); n != 0 {
				t.Fatalf("junk reached OnData %d times", n)
			}
			_ = nc.Close()
			if _, err := good.Write([]byte("still here\n")); err != nil {
				t.Fatal(err)
			}
			expectEcho(t, good, []byte("still here\n"))
		}
		r.checkOnce(t)
	})
}

// TestALPN: a client offering no ALPN is refused (OnClose naming ALPN, never OnData), one offering
// only other protocols is refused by crypto/tls (no_application_protocol), pushwire/1 works.
func TestALPN(t *testing.T) {
	forEachEngine(t, func(t *testing.T, name string) {
		p := newPKI(t)
		r := newRecorder(t)
		addr := serve(t, name, p, r, nil)

		cfg := p.client()
		cfg.NextProtos = nil
		if c, err := dialTLSErr(addr, cfg, nil); err == nil {
			// TLS 1.3: the client may finish before it reads the server's alert.
			_ = c.SetReadDeadline(time.Now().Add(wait))
			if _, err = c.Read(make([]byte, 1)); err == nil {
				t.Fatal("client without ALPN was served")
			}
			_ = c.Close()
		}
		sc := r.waitOpen(t)
		id, reason := r.waitClosed(t)
		if id != sc.ID() || !errors.Is(reason, ErrALPN) || !strings.Contains(reason.Error(), "ALPN") {
			t.Fatalf("no ALPN: closed %d (want %d) with %v, want ErrALPN", id, sc.ID(), reason)
		}
		if n := r.dataCalls(id); n != 0 {
			t.Fatalf("no ALPN: %d OnData calls", n)
		}

		_, err := dialTLSErr(addr, p.client("h2", "http/1.1"), nil)
		if err == nil || !strings.Contains(err.Error(), "no application protocol") {
			t.Fatalf("other protocols only: %v, want no_application_protocol", err)
		}
		sc = r.waitOpen(t)
		if id, reason := r.waitClosed(t); id != sc.ID() || reason == nil {
			t.Fatalf("other protocols only: closed %d (want %d) with %v", id, sc.ID(), reason)
		}

		c := dialTLS(t, addr, p.client("h2", ALPN))
		if _, err := c.Write([]byte("ok\n")); err != nil {
			t.Fatal(err)
		}
		expectEcho(t, c, []byte("ok\n"))
		r.checkOnce(t)
	})
}

// TestCertReload: new handshakes see a reloaded certificate; a failed reload names the file and
// keeps serving the pair it had.
func TestCertReload(t *testing.T) {
	p := newPKI(t)
	r := newRecorder(t)
	addr := serve(t, "std", p, r, nil)
	serial := func(roots *tls.Config) string {
		t.Helper()
		c := dialTLS(t, addr, roots)
		defer func() { _ = c.Close() }()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	first := serial(p.client())
	old := dialTLS(t, addr, p.client()) // stays open across the reload

	dir := strings.TrimSuffix(p.certFile, "cert.pem")
	if _, _, err := SelfSigned(dir, "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := p.certs.Reload(); err != nil {
		t.Fatal(err)
	}
	newRoots := rootsOf(t, p.certFile)
	cfg := p.client()
	cfg.RootCAs = newRoots
	second := serial(cfg)
	if second == first {
		t.Fatalf("serial %s after reload, want a new one", second)
	}

	if err := writeFile(p.certFile, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := p.certs.Reload()
	if err == nil || !strings.Contains(err.Error(), p.certFile) {
		t.Fatalf("reload of a bad file: %v, want an error naming %s", err, p.certFile)
	}
	if got := serial(cfg); got != second {
		t.Fatalf("serial %s after a failed reload, want %s", got, second)
	}
	if err := writeFile(p.keyFile, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCerts(p.certFile, p.keyFile); err == nil || !strings.Contains(err.Error(), p.certFile) {
		t.Fatalf("load of a bad pair: %v, want an error naming the file", err)
	}
	if _, err := LoadCerts(p.certFile+".missing", p.keyFile); err == nil || !strings.Contains(err.Error(), ".missing") {
		t.Fatalf("load of a missing file: %v, want an error naming it", err)
	}

	if _, err := old.Write([]byte("old\n")); err != nil {
		t.Fatal(err)
	}
	expectEcho(t, old, []byte("old\n"))
}

func TestSelfSigned(t *testing.T) {
	certFile, keyFile, err := SelfSigned(t.TempDir(), "localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if m := fi.Mode().Perm(); m != 0o600 {
		t.Fatalf("key file mode %v, want 0600", m)
	}
	certs, err := LoadCerts(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf := certs.Certificate().Leaf
	if !leaf.IsCA || len(leaf.IPAddresses) != 1 || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "localhost" {
		t.Fatalf("certificate: IsCA %v, IPs %v, DNS %v", leaf.IsCA, leaf.IPAddresses, leaf.DNSNames)
	}
	if _, _, err := SelfSigned(t.TempDir()); err == nil {
		t.Fatal("SelfSigned without hosts: no error")
	}
}

// TestQueueFullCloses: a sealed record the engine's full queue refuses returns ErrQueueFull and
// closes the connection (its TLS stream cannot go on), with ErrRecordLost as the reason.
func TestQueueFullCloses(t *testing.T) {
	forEachEngine(t, func(t *testing.T, name string) {
		p := newPKI(t)
		r := newRecorder(t)
		addr := serve(t, name, p, r, func(_ *Config, e *engines.Config) { e.MaxWriteQueue = 64 << 10 })
		c := dialTLS(t, addr, p.client())
		sc := r.waitOpen(t)
		if _, err := c.Write([]byte("hi\n")); err != nil {
			t.Fatal(err)
		}
		expectEcho(t, c, []byte("hi\n"))
		err := sc.Write(make([]byte, 100<<10)) // over the queue bound at once
		if !errors.Is(err, engines.ErrQueueFull) {
			t.Fatalf("write over the queue bound: %v, want ErrQueueFull", err)
		}
		if _, reason := r.waitClosed(t); !errors.Is(reason, ErrRecordLost) {
			t.Fatalf("OnClose reason %v, want ErrRecordLost", reason)
		}
		if err := sc.Write([]byte("x\n")); !errors.Is(err, engines.ErrClosed) {
			t.Fatalf("write after: %v, want ErrClosed", err)
		}
		r.checkOnce(t)
	})
}
