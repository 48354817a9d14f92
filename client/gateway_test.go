package client

// The SDK against the real gateway core over every transport: a gateway.Node behind the std
// engine (tcp; tls, ws and wss through their layers, composed as the gateway composes them) and
// behind the quic engine, on loopback. The client logs in through the fake control, receives an
// at-least-once push sent through Node.Push and acknowledges it.

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/gateway"
	"github.com/pushwire/pushwire/engines"
	_ "github.com/pushwire/pushwire/engines/quic" // registers "quic"
	_ "github.com/pushwire/pushwire/engines/std"  // registers "std"
	"github.com/pushwire/pushwire/engines/tlslayer"
	"github.com/pushwire/pushwire/engines/ws"
)

// fakeControlTokens is the gateway's side of the fake control's tokens: "tok-<device>-<n>".
type fakeControlTokens struct{}

func (fakeControlTokens) Verify(token string, _ time.Time) (gateway.Identity, error) {
	rest, ok := strings.CutPrefix(token, "tok-")
	i := strings.LastIndexByte(rest, '-')
	if !ok || i <= 0 {
		return gateway.Identity{}, errors.New("not a fake control token")
	}
	return gateway.Identity{App: "app1", Device: rest[:i], User: "u1"}, nil
}

type noPushKeys struct{}

func (noPushKeys) AppByPushKey(string) (string, bool) { return "", false }

// serveTransport starts the engine for proto in front of node and returns its address.
func serveTransport(t *testing.T, node *gateway.Node, proto string, cert tls.Certificate) string {
	t.Helper()
	serverTLS := func(alpn string) *tls.Config {
		return &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{alpn}, MinVersion: tls.VersionTLS13}
	}
	var h engines.Handler = node
	engine := "std"
	cfg := engines.Config{Addr: "127.0.0.1:0", MaxFrame: 64 << 10, WriteTimeout: 5 * time.Second}
	var err error
	switch proto {
	case "tls":
		lc := tlslayer.Config{TLS: serverTLS(tlslayer.ALPN), RequireALPN: tlslayer.ALPN, MaxFrame: cfg.MaxFrame}
		cfg.MaxFrame = lc.EngineMaxFrame()
		h, err = tlslayer.Wrap(h, lc)
	case "ws":
		wc := ws.Config{MaxMessage: cfg.MaxFrame}
		cfg.MaxFrame = wc.EngineMaxFrame()
		h, err = ws.Wrap(h, wc)
	case "wss":
		wc := ws.Config{MaxMessage: cfg.MaxFrame}
		if h, err = ws.Wrap(h, wc); err == nil {
			lc := tlslayer.Config{TLS: serverTLS("http/1.1"), MaxFrame: wc.EngineMaxFrame()}
			cfg.MaxFrame = lc.EngineMaxFrame()
			h, err = tlslayer.Wrap(h, lc)
		}
	case "quic":
		engine = "quic"
		cfg.TLS = serverTLS(tlslayer.ALPN)
	}
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engines.New(engine, cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := eng.Shutdown(ctx); err != nil {
			t.Errorf("%s engine shutdown: %v", proto, err)
		}
	})
	return eng.Addr().String()
}

func TestRealGatewayOverTransports(t *testing.T) {
	node, err := gateway.New(gateway.Config{Node: "gw1", Logger: slog.New(slog.DiscardHandler)}, fakeControlTokens{}, noPushKeys{})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = node.Stop(ctx)
	})
	cert, _ := testCert()
	var acked float64
	for _, proto := range []string{"tcp", "tls", "ws", "wss", "quic"} {
		t.Run(proto, func(t *testing.T) {
			addr := serveTransport(t, node, proto, cert)
			// Control offers another transport's endpoint first: the client's Transports passes
			// it over.
			other := "wss"
			if proto == other {
				other = "tcp"
			}
			ctl := newControl(t, Endpoint{other, "127.0.0.1:1"}, Endpoint{proto, addr})
			pushes := make(chan Push, 1)
			device := "dev-" + proto
			c := newTestClient(t, ctl, func(cfg *Config) {
				cfg.Device = device
				cfg.Transports = []string{proto}
				cfg.TLS = clientTLS()
				cfg.OnPush = func(p Push) { pushes <- p }
			})
			if err := c.Connect(context.Background()); err != nil {
				t.Fatalf("Connect over %s: %v", proto, err)
			}
			if c.Node() != "gw1" || c.Transport() != proto {
				t.Fatalf("node %q, transport %q", c.Node(), c.Transport())
			}
			res, err := node.Push(&gateway.PushRequest{App: "app1", Biz: 7, Devices: []string{device}, Payload: []byte("hello " + proto), Ack: true})
			if err != nil || res.Delivered != 1 {
				t.Fatalf("push: %+v, %v", res, err)
			}
			if p := recv(t, pushes, "push"); string(p.Payload) != "hello "+proto || p.Biz != 7 {
				t.Fatalf("push %+v", p)
			}
			// The PUSH_ACK reached the gateway.
			acked++
			waitFor(t, "the ack", func() bool { return counter(t, node, "pushwire_push_acked_total") == acked })
			if s := c.Stats(); len(s.Errors) != 0 {
				t.Errorf("errors %v", s.Errors)
			}
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the gateway to see the close", func() bool { return node.Stats(false).Conns == 0 })
		})
	}
}

// counter is the value of the node's counter name.
func counter(t *testing.T, node *gateway.Node, name string) float64 {
	t.Helper()
	mfs, err := node.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				v += m.GetCounter().GetValue()
			}
		}
	}
	return v
}
