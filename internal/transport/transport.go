// Package transport is the client side of every pushwire transport: Dial connects to a gateway
// endpoint over tcp, tls, ws, wss or quic and returns a byte stream that carries protocol frames,
// so the code above it (the client SDK, the load generator, the conformance tests) never knows
// which transport it runs on.
//
// What each protocol gives (see docs/protocol.md "Transports"):
//
//	tcp   the TCP connection
//	tls   TLS 1.3 over TCP, ALPN pushwire/1 (a server that does not select it is refused)
//	ws    WebSocket over TCP: each Write is one binary message, so write one whole frame per Write
//	wss   WebSocket over TLS 1.3 (ALPN http/1.1 offered)
//	quic  one bidirectional stream of a new QUIC connection (ALPN pushwire/1, no 0-RTT); Close
//	      closes the stream, the connection and the UDP socket Dial made for it
package transport

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"time"
)

// Protocol names, as control's endpoints and the gateway's listeners spell them.
const (
	TCP  = "tcp"
	TLS  = "tls"
	WS   = "ws"
	WSS  = "wss"
	QUIC = "quic"
)

// Protocols is every protocol Dial speaks, in the order the project lists them.
var Protocols = []string{TCP, TLS, WS, WSS, QUIC}

// ALPN is the application protocol negotiated by tls and quic.
const ALPN = "pushwire/1"

// alpnHTTP11 is the application protocol offered by wss: the upgrade is HTTP/1.1.
const alpnHTTP11 = "http/1.1"

// DefaultDialTimeout bounds the TCP connect of the default dialer.
const DefaultDialTimeout = 10 * time.Second

// DefaultPath is the WebSocket request path when Options.Path is empty.
const DefaultPath = "/ws"

// quicKeepAlive is how often an idle QUIC connection sends a PING: below the 30s idle timeout
// QUIC peers use by default, so a client whose heartbeat is longer is not timed out by QUIC.
const quicKeepAlive = 15 * time.Second

// quicIdleTimeout is the idle timeout the client proposes (the peers use the smaller of theirs).
const quicIdleTimeout = 3 * time.Minute

// Options configure Dial. The zero value dials with the defaults.
type Options struct {
	// TLS holds the roots and ServerName for tls, wss and quic. It is cloned: Dial sets
	// NextProtos per protocol and raises MinVersion to TLS 1.3. nil: the system roots, and the
	// ServerName taken from addr's host.
	TLS *tls.Config
	// Dial opens the TCP connection under tcp, tls, ws and wss. Default:
	// net.Dialer{Timeout: 10s}.DialContext.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// LocalAddr is the source IP of QUIC's UDP socket (an IP, or ip:port), optional. TCP's
	// source address is Dial's business.
	LocalAddr string
	// Path is the ws/wss request path, default "/ws".
	Path string
	// Origin is the ws/wss Origin header, optional.
	Origin string
}

var defaultDialer = net.Dialer{Timeout: DefaultDialTimeout}

// HandshakeError is a failed TLS handshake, WebSocket upgrade or QUIC handshake: the connect
// itself worked. errors.As finds it through wrapping; Unwrap gives the cause (a certificate
// error, a timeout, io.EOF…).
type HandshakeError struct {
	Proto string // the protocol dialed
	Addr  string
	Step  string // "tls handshake", "websocket upgrade", "quic handshake"
	Err   error
}

func (e *HandshakeError) Error() string {
	return "transport: " + e.Proto + ": " + e.Step + " with " + e.Addr + ": " + e.Err.Error()
}

func (e *HandshakeError) Unwrap() error { return e.Err }

// Known reports whether proto is a protocol Dial speaks.
func Known(proto string) bool {
	for _, p := range Protocols {
		if p == proto {
			return true
		}
	}
	return false
}

// Check returns an error naming field for the first protocol in protos that Dial does not
// speak, or for an empty or duplicated entry.
func Check(field string, protos []string) error {
	seen := make(map[string]bool, len(protos))
	for _, p := range protos {
		switch {
		case !Known(p):
			return fmt.Errorf("%s: unknown transport %q (known: %s)", field, p, strings.Join(Protocols, ", "))
		case seen[p]:
			return fmt.Errorf("%s: transport %q listed twice", field, p)
		}
		seen[p] = true
	}
	return nil
}

// Dial connects to addr over proto and returns a byte stream carrying protocol frames: for
// quic, one bidirectional stream of a new QUIC connection (Close closes both). ctx bounds the
// connect and every handshake; the connection outlives it. An unknown protocol is an error
// naming it.
func Dial(ctx context.Context, proto, addr string, o Options) (net.Conn, error) {
	switch proto {
	case TCP:
		return dialTCP(ctx, addr, o)
	case TLS:
		return dialTLS(ctx, proto, addr, o, ALPN)
	case WS:
		nc, err := dialTCP(ctx, addr, o)
		if err != nil {
			return nil, err
		}
		return upgrade(ctx, proto, nc, addr, o)
	case WSS:
		nc, err := dialTLS(ctx, proto, addr, o, alpnHTTP11)
		if err != nil {
			return nil, err
		}
		return upgrade(ctx, proto, nc, addr, o)
	case QUIC:
		return dialQUIC(ctx, addr, o)
	}
	return nil, fmt.Errorf("transport: unknown protocol %q (known: %s)", proto, strings.Join(Protocols, ", "))
}

func dialTCP(ctx context.Context, addr string, o Options) (net.Conn, error) {
	dial := o.Dial
	if dial == nil {
		dial = defaultDialer.DialContext
	}
	nc, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return nc, nil
}

// tlsConfig is o.TLS cloned for one protocol: ALPN alpn, TLS 1.3 at least, ServerName from addr
// when none is set.
func tlsConfig(addr string, o Options, alpn string) *tls.Config {
	var cfg *tls.Config
	if o.TLS != nil {
		cfg = o.TLS.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.NextProtos = []string{alpn}
	if cfg.MinVersion < tls.VersionTLS13 {
		cfg.MinVersion = tls.VersionTLS13
	}
	if cfg.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	return cfg
}

func dialTLS(ctx context.Context, proto, addr string, o Options, alpn string) (net.Conn, error) {
	nc, err := dialTCP(ctx, addr, o)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(nc, tlsConfig(addr, o, alpn))
	if err := tc.HandshakeContext(ctx); err != nil {
		_ = nc.Close()
		return nil, &HandshakeError{proto, addr, "tls handshake", err}
	}
	if got := tc.ConnectionState().NegotiatedProtocol; got != alpn && (alpn != alpnHTTP11 || got != "") {
		_ = tc.Close()
		return nil, &HandshakeError{proto, addr, "tls handshake", fmt.Errorf("the server did not select ALPN %q (got %q)", alpn, got)}
	}
	return tc, nil
}
