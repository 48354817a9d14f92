package main

import (
	"bufio"
	"bytes"
	"flag"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/pushwire/pushwire/control"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
)

// gatewayFlags parses args with the gateway's listener and route flags.
func gatewayFlags(t *testing.T, args ...string) (*gatewayTransportFlags, *gatewayRouteFlags, error) {
	t.Helper()
	fs := flag.NewFlagSet("gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	tf := addGatewayTransportFlags(fs)
	rf := addGatewayRouteFlags(fs)
	return tf, rf, fs.Parse(args)
}

// Every bad combination of listener flags is refused with an error naming the flags at fault.
func TestGatewayTransportFlags(t *testing.T) {
	certs := []string{"--tls-cert", "c.pem", "--tls-key", "k.pem"}
	for _, tc := range []struct {
		name   string
		engine string
		args   []string
		want   string // "" = accepted
	}{
		{"default tcp", "std", nil, ""},
		{"every listener", "gnet", append([]string{"--tls-listen", "127.0.0.1:7001", "--ws-listen", "127.0.0.1:7002",
			"--wss-listen", "127.0.0.1:7003", "--quic-listen", "127.0.0.1:7004"}, certs...), ""},
		{"ws alone", "nbio", []string{"--listen", "", "--ws-listen", "127.0.0.1:7002"}, ""},
		{"quic shares tcp's port number", "std", append([]string{"--quic-listen", "127.0.0.1:7000"}, certs...), ""},
		{"quic as an engine", "quic", nil, "--engine quic: quic is a transport: use --quic-listen"},
		{"unknown engine", "epoll", nil, `--engine: engines: unknown engine "epoll"`},
		{"no listener", "std", []string{"--listen", ""}, "no listener: set at least one of --listen, --tls-listen"},
		{"tls without a cert", "std", []string{"--tls-listen", "127.0.0.1:7001"}, "--tls-listen need --tls-cert and --tls-key"},
		{"wss and quic without a key", "std", []string{"--wss-listen", "127.0.0.1:7003", "--quic-listen", "127.0.0.1:7004", "--tls-cert", "c.pem"},
			"--wss-listen, --quic-listen need --tls-cert and --tls-key"},
		{"cert without a TLS listener", "std", certs, "--tls-cert/--tls-key given without a listener that uses them"},
		{"bad address", "std", []string{"--ws-listen", "localhost"}, `--ws-listen "localhost": want host:port`},
		{"two listeners on one address", "std", []string{"--ws-listen", "127.0.0.1:7000"}, "--listen and --ws-listen both bind 127.0.0.1:7000"},
		{"quic option without quic", "std", []string{"--quic-opt", "udp_buffer=1"}, "--quic-opt without --quic-listen"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tf, _, err := gatewayFlags(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			specs, err := tf.plan(tc.engine)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				for _, s := range specs {
					if !engines.Carries(s.engine, s.transport) {
						t.Errorf("%s planned on engine %s, which does not carry it", s.transport, s.engine)
					}
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestGatewayTransportPlan(t *testing.T) {
	tf, _, err := gatewayFlags(t, "--quic-listen", "127.0.0.1:7004", "--ws-listen", "127.0.0.1:7002",
		"--tls-cert", "c", "--tls-key", "k")
	if err != nil {
		t.Fatal(err)
	}
	specs, err := tf.plan("netpoll")
	if err != nil {
		t.Fatal(err)
	}
	if got := transportsOf(specs); !slices.Equal(got, []string{"tcp", "ws", "quic"}) {
		t.Fatalf("transports %v, want tcp, ws, quic in that order", got)
	}
	if specs[0].engine != "netpoll" || specs[1].engine != "netpoll" || !engines.Carries(specs[2].engine, engines.TransportQUIC) {
		t.Errorf("engines %+v: the stream transports on --engine, quic on the engine carrying it", specs)
	}
	if nodeEngine(specs) != "netpoll" || nodeEngine(specs[2:]) != specs[2].engine {
		t.Errorf("node engine %q / %q", nodeEngine(specs), nodeEngine(specs[2:]))
	}
}

func TestGatewayWSConfig(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--ws-path", "ws"}, "--ws-path / --ws-max-message / --ws-origins: ws: Config.Path"},
		{[]string{"--ws-max-message", "-5"}, "Config.MaxMessage -5"},
		{[]string{"--ws-max-message", "1000000000"}, "Config.MaxMessage 1000000000"},
	} {
		tf, _, err := gatewayFlags(t, tc.args...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tf.wsConfig(gatewayMaxFrame(64<<10), nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
	tf, _, _ := gatewayFlags(t, "--ws-origins", "https://a.example, https://b.example")
	c, err := tf.wsConfig(gatewayMaxFrame(64<<10), nil)
	if err != nil || c.MaxMessage != gatewayMaxFrame(64<<10) || !slices.Equal(c.Origins, []string{"https://a.example", "https://b.example"}) {
		t.Errorf("ws config %+v, %v: want the frame limit as the message limit and both origins", c, err)
	}
}

func TestGatewayAdvertise(t *testing.T) {
	redis := control.RouteConfig{Store: control.RouteRedis}
	redis.Redis.Addrs = []string{"127.0.0.1:6379"}
	memory := control.RouteConfig{}
	tls := listenerSpec{transport: "tls", addr: "127.0.0.1:7001"}
	ws := listenerSpec{transport: "ws", addr: "0.0.0.0:7002"}
	quic := listenerSpec{transport: "quic", addr: "127.0.0.1:0"}
	for _, tc := range []struct {
		name      string
		file      control.RouteConfig
		listeners []listenerSpec
		args      []string
		want      string   // error; "" = accepted
		endpoints []string // with want ""
	}{
		{"derived", memory, []listenerSpec{{transport: "tcp", addr: "127.0.0.1:7000"}, tls}, nil, "",
			[]string{"tcp://127.0.0.1:7000", "tls://127.0.0.1:7001"}},
		{"given and derived", redis, []listenerSpec{tls, ws}, []string{"--advertise", "ws://gw1.example:80"}, "",
			[]string{"tls://127.0.0.1:7001", "ws://gw1.example:80"}},
		{"comma list", redis, []listenerSpec{tls, ws}, []string{"--advertise", "ws://gw1.example:80,tls://gw1.example:443"}, "",
			[]string{"tls://gw1.example:443", "ws://gw1.example:80"}},
		{"every interface", redis, []listenerSpec{tls, ws}, nil, "--advertise ws://host:port is required with --route redis when --ws-listen 0.0.0.0:7002 binds every interface", nil},
		{"port 0", redis, []listenerSpec{quic}, nil, "--advertise quic://host:port is required with --route redis when --quic-listen 127.0.0.1:0 has port 0", nil},
		{"no such listener", memory, []listenerSpec{tls}, []string{"--advertise", "wss://a:1"}, `--advertise "wss://a:1": no wss listener (--wss-listen)`, nil},
		{"twice", memory, []listenerSpec{tls}, []string{"--advertise", "tls://a:1", "--advertise", "tls://b:1"}, "tls is advertised twice", nil},
		{"unknown protocol", memory, []listenerSpec{tls}, []string{"--advertise", "http://a:1"}, `unknown protocol "http"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rf, err := gatewayFlags(t, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			g, err := rf.resolve(tc.file, tc.listeners, "127.0.0.1:7080")
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v, want %q", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, ep := range g.endpoints {
				got = append(got, ep.Protocol+"://"+ep.Addr)
			}
			if !slices.Equal(got, tc.endpoints) {
				t.Errorf("endpoints %v, want %v", got, tc.endpoints)
			}
		})
	}
}

// Each transport's refusal at --max-conns: GOAWAY on tcp and quic, HTTP 503 with Retry-After on
// ws, nothing on tls and wss.
func TestRefuseFor(t *testing.T) {
	for _, tr := range []string{"tcp", "quic"} {
		f, _, err := frame.Decode(refuseFor(tr, 1500), frame.Limits{})
		if err != nil || f.Type != frame.TypeGoaway {
			t.Errorf("%s: %v, type %v: want GOAWAY", tr, err, f.Type)
		}
	}
	for _, tr := range []string{"tls", "wss"} {
		if b := refuseFor(tr, 1500); len(b) != 0 {
			t.Errorf("%s: refusal %q, want none", tr, b)
		}
	}
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(refuseFor("ws", 1500))), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "2" || !resp.Close || len(body) == 0 {
		t.Errorf("ws refusal: %d Retry-After %q close %v body %q", resp.StatusCode, resp.Header.Get("Retry-After"), resp.Close, body)
	}
}

// The gateway command refuses bad listener settings at start-up, before reading its config,
// naming the flags.
func TestRunGatewayTransportErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--engine", "quic"}, "--engine quic: quic is a transport: use --quic-listen"},
		{[]string{"--listen", ""}, "no listener"},
		{[]string{"--wss-listen", "127.0.0.1:7003"}, "--wss-listen need --tls-cert and --tls-key"},
		{[]string{"--tls-listen", "127.0.0.1:7001", "--tls-cert", dir + "/none.pem", "--tls-key", dir + "/none-key.pem"}, "--tls-cert / --tls-key: "},
		{[]string{"--ws-listen", "127.0.0.1:7002", "--ws-path", "x"}, "--ws-path"},
		{[]string{"--quic-listen", "127.0.0.1:7004", "--tls-cert", "c", "--tls-key", "k", "--quic-opt", "nosuch=1"}, "--quic-opt"},
	} {
		err := runGateway(append([]string{"--config", dir + "/absent.yaml", "--log-level", "error"}, tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want %q", tc.args, err, tc.want)
		}
	}
}
