package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/tlslayer"
	"github.com/pushwire/pushwire/engines/ws"
	"github.com/pushwire/pushwire/internal/wsproto"
)

// gatewayTransportFlags are the gateway's listener flags: one listener (one engine) per
// transport, the certificate the TLS transports share, and the WebSocket layer's settings.
type gatewayTransportFlags struct {
	listen       map[string]*string // by transport
	cert, key    *string
	wsPath       *string
	wsOrigins    *string
	wsMaxMessage *int
	quicOpts     engineOptFlag
	region       *string
	group        *string
}

// listenFlag is the flag that sets a transport's listener.
func listenFlag(transport string) string {
	if transport == engines.TransportTCP {
		return "--listen"
	}
	return "--" + transport + "-listen"
}

// gatewayTransports are the transports, in the order their listeners start.
var gatewayTransports = []string{engines.TransportTCP, engines.TransportTLS, engines.TransportWS, engines.TransportWSS, engines.TransportQUIC}

func addGatewayTransportFlags(fs *flag.FlagSet) *gatewayTransportFlags {
	f := &gatewayTransportFlags{listen: map[string]*string{}, quicOpts: engineOptFlag{}}
	f.listen[engines.TransportTCP] = fs.String("listen", "127.0.0.1:7000", "TCP address clients connect to with protocol frames on plain TCP (empty: no tcp listener)")
	f.listen[engines.TransportTLS] = fs.String("tls-listen", "", "TCP address of the tls transport: TLS 1.3, ALPN pushwire/1 required (needs --tls-cert, --tls-key)")
	f.listen[engines.TransportWS] = fs.String("ws-listen", "", "TCP address of the ws transport: WebSocket on --ws-path, one frame per binary message")
	f.listen[engines.TransportWSS] = fs.String("wss-listen", "", "TCP address of the wss transport: WebSocket over TLS 1.3 (needs --tls-cert, --tls-key)")
	f.listen[engines.TransportQUIC] = fs.String("quic-listen", "", "UDP address of the quic transport: one QUIC stream per session, ALPN pushwire/1 (needs --tls-cert, --tls-key)")
	f.cert = fs.String("tls-cert", "", "PEM certificate (chain) of the tls, wss and quic listeners; SIGHUP reloads it with --tls-key")
	f.key = fs.String("tls-key", "", "PEM private key of --tls-cert")
	f.wsPath = fs.String("ws-path", ws.DefaultPath, "request path of the WebSocket upgrade (ws, wss)")
	f.wsOrigins = fs.String("ws-origins", "", "Origin values allowed to upgrade, comma-separated (case-insensitive; * for any; empty: no check)")
	f.wsMaxMessage = fs.Int("ws-max-message", 0, "largest WebSocket message in bytes, assembled across fragments (0: the largest frame, from --max-body)")
	fs.Var(f.quicOpts, "quic-opt", "an option of the quic engine, key=value (repeatable; see --help-engine with --engine quic)")
	f.region = fs.String("region", "", "this instance's region, advertised for control's dispatch policy")
	f.group = fs.String("group", "", "this instance's group (gray releases per group), advertised for control's dispatch policy")
	return f
}

// listenerSpec is one listener the gateway runs: a transport on an address, carried by an engine.
type listenerSpec struct {
	transport string
	addr      string
	engine    string // the registered engine that serves it
}

// flag is the listener's flag name.
func (l listenerSpec) flag() string { return listenFlag(l.transport) }

// transportEngine is the registered engine that carries transport on its own (QUIC), "" if none.
func transportEngine(transport string) string {
	for _, name := range engines.Names() {
		if ts, err := engines.Transports(name); err == nil && len(ts) == 1 && ts[0] == transport && !slices.Contains(engines.StreamTransports, transport) {
			return name
		}
	}
	return ""
}

// needsCert reports whether a transport's listener needs --tls-cert and --tls-key.
func needsCert(transport string) bool {
	return transport == engines.TransportTLS || transport == engines.TransportWSS || transport == engines.TransportQUIC
}

// plan checks the listener flags against the stream engine and returns the listeners to run, in
// gatewayTransports order. Every error names the flags at fault.
func (f *gatewayTransportFlags) plan(engine string) ([]listenerSpec, error) {
	ts, err := engines.Transports(engine)
	if err != nil {
		return nil, fmt.Errorf("gateway: --engine: %w", err)
	}
	if !engines.Carries(engine, engines.TransportTCP) {
		// An engine that carries a transport of its own is chosen by that transport's listener.
		return nil, fmt.Errorf("gateway: --engine %s: %s is a transport: use --%s-listen (--engine picks the stream engine of tcp, tls, ws and wss)", engine, strings.Join(ts, ","), ts[0])
	}
	var out []listenerSpec
	tcpAddrs := map[string]string{} // address → flag, for the TCP listeners
	for _, t := range gatewayTransports {
		addr := strings.TrimSpace(*f.listen[t])
		if addr == "" {
			continue
		}
		l := listenerSpec{transport: t, addr: addr, engine: engine}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("gateway: %s %q: want host:port", l.flag(), addr)
		}
		if slices.Contains(engines.StreamTransports, t) {
			if !engines.Carries(engine, t) {
				return nil, fmt.Errorf("gateway: %s with --engine %s: the %s engine does not carry %s", l.flag(), engine, engine, t)
			}
			if prev, dup := tcpAddrs[addr]; dup {
				return nil, fmt.Errorf("gateway: %s and %s both bind %s: one listener per transport, each on its own address", prev, l.flag(), addr)
			}
			tcpAddrs[addr] = l.flag()
		} else {
			if l.engine = transportEngine(t); l.engine == "" {
				return nil, fmt.Errorf("gateway: %s: no engine carrying %s is linked into this binary", l.flag(), t)
			}
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, errors.New("gateway: no listener: set at least one of --listen, --tls-listen, --ws-listen, --wss-listen, --quic-listen")
	}
	var tlsFlags []string
	for _, l := range out {
		if needsCert(l.transport) {
			tlsFlags = append(tlsFlags, l.flag())
		}
	}
	cert, key := strings.TrimSpace(*f.cert), strings.TrimSpace(*f.key)
	switch {
	case len(tlsFlags) > 0 && (cert == "" || key == ""):
		return nil, fmt.Errorf("gateway: %s need --tls-cert and --tls-key (a certificate and its key, PEM files)", strings.Join(tlsFlags, ", "))
	case len(tlsFlags) == 0 && (cert != "" || key != ""):
		return nil, errors.New("gateway: --tls-cert/--tls-key given without a listener that uses them (--tls-listen, --wss-listen or --quic-listen)")
	}
	if len(f.quicOpts) > 0 && *f.listen[engines.TransportQUIC] == "" {
		return nil, errors.New("gateway: --quic-opt without --quic-listen")
	}
	return out, nil
}

// wsConfig is the WebSocket layer's configuration from the flags; maxFrame is the gateway's
// largest frame, the default --ws-max-message.
func (f *gatewayTransportFlags) wsConfig(maxFrame int, log *slog.Logger) (ws.Config, error) {
	c := ws.Config{Path: *f.wsPath, MaxMessage: *f.wsMaxMessage, Origins: splitList(*f.wsOrigins), Logger: log}
	if c.MaxMessage == 0 {
		c.MaxMessage = maxFrame
	}
	if err := c.Check(); err != nil {
		return c, fmt.Errorf("gateway: --ws-path / --ws-max-message / --ws-origins: %w", err)
	}
	if c.MaxMessage < 0 {
		return c, fmt.Errorf("gateway: --ws-max-message %d: must be positive", c.MaxMessage)
	}
	return c, nil
}

// listener is a running listener: its spec and its engine.
type listener struct {
	listenerSpec
	eng engines.Engine
}

// listenerParams are what every listener shares.
type listenerParams struct {
	base     engines.Config // MaxWriteQueue, WriteTimeout, Workers, MaxConns; Options of the stream engine
	maxFrame int            // the largest frame the node takes
	retryMs  int            // GOAWAY retry_ms
	certs    *tlslayer.Certs
	ws       ws.Config
	quicOpts map[string]string
	log      *slog.Logger
}

// newListener composes one transport's stack over h (docs/engines.md "Transports") and creates its engine:
//
//	tcp  = engine(h)
//	tls  = engine(tlslayer.Wrap(h, {ALPN pushwire/1 required}))
//	ws   = engine(ws.Wrap(h))
//	wss  = engine(tlslayer.Wrap(ws.Wrap(h), {NextProtos http/1.1}))
//	quic = quic engine(h), TLS from the certificate
//
// The engine's MaxFrame is the outermost layer's EngineMaxFrame.
func newListener(spec listenerSpec, p listenerParams, h engines.Handler) (*listener, error) {
	cfg := p.base
	cfg.Addr = spec.addr
	cfg.MaxFrame = p.maxFrame
	cfg.RefuseMessage = refuseFor(spec.transport, p.retryMs)
	var err error
	switch spec.transport {
	case engines.TransportTCP:
	case engines.TransportTLS:
		lc := tlslayer.Config{TLS: p.certs.ServerConfig(tlslayer.ALPN), RequireALPN: tlslayer.ALPN, MaxFrame: p.maxFrame, Logger: p.log}
		cfg.MaxFrame = lc.EngineMaxFrame()
		h, err = tlslayer.Wrap(h, lc)
	case engines.TransportWS:
		wc := p.ws
		cfg.MaxFrame = wc.EngineMaxFrame()
		h, err = ws.Wrap(h, wc)
	case engines.TransportWSS:
		wc := p.ws
		if h, err = ws.Wrap(h, wc); err == nil {
			lc := tlslayer.Config{TLS: p.certs.ServerConfig("http/1.1"), MaxFrame: wc.EngineMaxFrame(), Logger: p.log}
			cfg.MaxFrame = lc.EngineMaxFrame()
			h, err = tlslayer.Wrap(h, lc)
		}
	case engines.TransportQUIC:
		cfg.TLS = p.certs.ServerConfig(tlslayer.ALPN)
		cfg.Options = p.quicOpts
	default:
		return nil, fmt.Errorf("gateway: unknown transport %q", spec.transport)
	}
	if err != nil {
		return nil, fmt.Errorf("gateway: %s: %w", spec.flag(), err)
	}
	eng, err := engines.New(spec.engine, cfg, h)
	if err != nil {
		return nil, fmt.Errorf("gateway: %s (engine %s): %w", spec.flag(), spec.engine, err)
	}
	return &listener{listenerSpec: spec, eng: eng}, nil
}

// refuseFor is what a listener sends a connection over --max-conns before closing it: the GOAWAY
// frame on the stream transports that carry frames from the first byte (tcp, and quic's stream);
// an HTTP 503 with Retry-After on ws (the client is still in its upgrade); nothing on tls and wss
// (no plaintext into a TLS stream: the client's handshake fails).
func refuseFor(transport string, retryMs int) []byte {
	switch transport {
	case engines.TransportTLS, engines.TransportWSS:
		return nil
	case engines.TransportWS:
		return wsRefusal(retryMs)
	}
	return refuseMessage(retryMs)
}

// wsRefusal is the HTTP 503 answer to an upgrade over the connection cap, with Retry-After in
// whole seconds (retry_ms rounded up, at least 1).
func wsRefusal(retryMs int) []byte {
	b := wsproto.AppendRefusal(nil, &wsproto.HandshakeError{Status: 503, Reason: "instance at its connection cap"})
	secs := max((retryMs+999)/1000, 1)
	i := bytes.Index(b, []byte("\r\n")) + 2 // after the status line
	out := make([]byte, 0, len(b)+32)
	out = append(out, b[:i]...)
	out = append(out, "Retry-After: "+strconv.Itoa(secs)+"\r\n"...)
	return append(out, b[i:]...)
}

// startListeners starts every listener in turn; on a failure it shuts down those it started and
// returns an error naming the listener's flag and address.
func startListeners(ls []*listener) error {
	for i, l := range ls {
		if err := l.eng.Start(); err != nil {
			_ = shutdownListeners(context.Background(), ls[:i], nil)
			return fmt.Errorf("gateway: %s %s: %w", l.flag(), l.addr, err)
		}
	}
	return nil
}

// shutdownListeners shuts every listener down at once and waits for all of them.
func shutdownListeners(ctx context.Context, ls []*listener, log *slog.Logger) error {
	errs := make(chan error, len(ls))
	for _, l := range ls {
		go func() {
			err := l.eng.Shutdown(ctx)
			if err != nil {
				err = fmt.Errorf("%s listener (%s): %w", l.transport, l.engine, err)
				if log != nil {
					log.Warn("engine shutdown incomplete", "transport", l.transport, "engine", l.engine, "err", err)
				}
			}
			errs <- err
		}()
	}
	var all []error
	for range ls {
		all = append(all, <-errs)
	}
	return errors.Join(all...)
}

// transportsOf are the listeners' transports, in order.
func transportsOf(ls []listenerSpec) []string {
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.transport
	}
	return out
}

// nodeEngine is the engine named in the node's stats: the stream engine when a stream listener
// runs, else the one engine that carries the only transport (quic).
func nodeEngine(ls []listenerSpec) string {
	for _, l := range ls {
		if slices.Contains(engines.StreamTransports, l.transport) {
			return l.engine
		}
	}
	return ls[0].engine
}

// reloadOnSIGHUP reloads the certificate files on each SIGHUP until the returned stop is called:
// it logs the new pair, or the error with the old pair kept. Without certificates a SIGHUP is
// logged and ignored.
func reloadOnSIGHUP(certs *tlslayer.Certs, log *slog.Logger) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-done:
				return
			case <-ch:
			}
			if certs == nil {
				log.Info("SIGHUP: no certificate to reload (no --tls-cert)")
				continue
			}
			certFile, keyFile := certs.Files()
			if err := certs.Reload(); err != nil {
				log.Error("SIGHUP: certificate reload failed; serving the previous pair", "cert", certFile, "key", keyFile, "err", err)
				continue
			}
			attrs := []any{"cert", certFile, "key", keyFile}
			if c := certs.Certificate(); c != nil && c.Leaf != nil {
				attrs = append(attrs, "serial", c.Leaf.SerialNumber.String(), "not_after", c.Leaf.NotAfter)
			}
			log.Info("SIGHUP: certificate reloaded", attrs...)
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
		<-finished
	}
}
