package conformance

import (
	"crypto/tls"
	"sync"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/tlslayer"
	"github.com/pushwire/pushwire/engines/ws"
)

// The stream transports' stacks, composed as the gateway composes them:
//
//	tls = tlslayer.Wrap(h, {TLS: certs.ServerConfig("pushwire/1"), RequireALPN: "pushwire/1"})
//	ws  = ws.Wrap(h)
//	wss = tlslayer.Wrap(ws.Wrap(h), {TLS: certs.ServerConfig("http/1.1")})
//
// The engine's MaxFrame is the outermost layer's EngineMaxFrame; the largest frame the suite's
// handler takes (cfg.MaxFrame as the test sets it) becomes the innermost layer's bound: the TLS
// layer's MaxFrame, the WebSocket layer's MaxMessage (one frame per message).
func init() {
	stacks[engines.TransportTLS] = func(h engines.Handler, cfg *engines.Config) (engines.Handler, error) {
		tc, err := serverConfig(tlslayer.ALPN)
		if err != nil {
			return nil, err
		}
		lc := tlslayer.Config{TLS: tc, RequireALPN: tlslayer.ALPN, MaxFrame: cfg.MaxFrame}
		cfg.MaxFrame = lc.EngineMaxFrame()
		return tlslayer.Wrap(h, lc)
	}
	stacks[engines.TransportWS] = func(h engines.Handler, cfg *engines.Config) (engines.Handler, error) {
		wc := ws.Config{MaxMessage: cfg.MaxFrame}
		cfg.MaxFrame = wc.EngineMaxFrame()
		return ws.Wrap(h, wc)
	}
	stacks[engines.TransportWSS] = func(h engines.Handler, cfg *engines.Config) (engines.Handler, error) {
		tc, err := serverConfig("http/1.1")
		if err != nil {
			return nil, err
		}
		wc := ws.Config{MaxMessage: cfg.MaxFrame}
		inner, err := ws.Wrap(h, wc)
		if err != nil {
			return nil, err
		}
		lc := tlslayer.Config{TLS: tc, MaxFrame: wc.EngineMaxFrame()}
		cfg.MaxFrame = lc.EngineMaxFrame()
		return tlslayer.Wrap(inner, lc)
	}
}

// queueFullCloses is, by transport, the OnClose reason of a layer that closes a connection at
// its first engines.ErrQueueFull (see TestSlowReader).
var queueFullCloses = map[string]error{
	engines.TransportTLS: tlslayer.ErrRecordLost,
	engines.TransportWSS: tlslayer.ErrRecordLost,
}

// selfSigned makes the test certificate (see certFiles).
var selfSigned = tlslayer.SelfSigned

// loaded is the test certificate loaded as the gateway loads its files, once.
var loaded struct {
	once  sync.Once
	certs *tlslayer.Certs
	err   error
}

// serverConfig is the gateway's server configuration for the test certificate, offering
// nextProtos.
func serverConfig(nextProtos ...string) (*tls.Config, error) {
	loaded.once.Do(func() {
		certFile, keyFile, err := certFiles()
		if err != nil {
			loaded.err = err
			return
		}
		loaded.certs, loaded.err = tlslayer.LoadCerts(certFile, keyFile)
	})
	if loaded.err != nil {
		return nil, loaded.err
	}
	return loaded.certs.ServerConfig(nextProtos...), nil
}
