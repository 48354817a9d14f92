package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/route"
	"github.com/pushwire/pushwire/route/memory"
)

// baseYAML is testConfig's file without endpoints.
const baseYAML = `
token:
  ttl: 2h
  keys: [{id: k1, secret: "token-secret-0123456789"}]
apps:
  - {id: demo, secret: ` + demoSecret + `, push_key: demo-push}
limits: {connect_per_device: {rate: 0}, connect_per_source: {rate: 0}}
`

// allFive serves every transport on one gateway.
const allFive = `
endpoints:
  - {protocol: tcp, addr: "gw:7000"}
  - {protocol: tls, addr: "gw:7001"}
  - {protocol: ws, addr: "gw:8080"}
  - {protocol: wss, addr: "gw:443"}
  - {protocol: quic, addr: "gw:7443"}
`

// exampleDispatch is the dispatch section of the docs.
const exampleDispatch = `
dispatch:
  rules:
    - platform: [web, miniapp]
      transports: [wss, ws]
    - platform: [native]
      network: [4g, 5g]
      transports: [quic, tls, tcp]
    - region: [cn-north]
      platform: [native]
      transports: [tls, tcp]
    - transports: [tcp, tls, quic]
`

func parseTestConfig(t *testing.T, parts ...string) *Config {
	t.Helper()
	c, err := ParseConfig([]byte(baseYAML + strings.Join(parts, "")))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func protocolsOf(eps []Endpoint) string {
	var s []string
	for _, e := range eps {
		s = append(s, e.Protocol)
	}
	return strings.Join(s, " ")
}

func TestDispatchRules(t *testing.T) {
	ts := newTestServer(t, parseTestConfig(t, allFive, exampleDispatch))
	for _, tt := range []struct {
		name                      string
		platform, network, region string
		want, reason              string
	}{
		{"web", "web", "wifi", "", "wss ws", "rules[0] (platform web|miniapp): wss, ws; served: wss, ws; configured endpoints: 5 of 5 serving"},
		{"platform without regard to case", "WEB", "", "", "wss ws", "rules[0] (platform web|miniapp): wss, ws;"},
		{"miniapp", "miniapp", "4g", "", "wss ws", "rules[0] "},
		{"native 4g", "native", "4g", "", "quic tls tcp", "rules[1] (platform native, network 4g|5g): quic, tls, tcp; served: quic, tls, tcp;"},
		{"native 5G", "native", "5G", "", "quic tls tcp", "rules[1] "},
		{"native wifi: the default rule", "native", "wifi", "", "tcp tls quic", "rules[3]: tcp, tls, quic;"},
		{"first match wins over region", "native", "4g", "cn-north", "quic tls tcp", "rules[1] "},
		{"region", "native", "wifi", "cn-north", "tls tcp", "rules[2] (platform native, region cn-north): tls, tcp; served: tls, tcp; region cn-north: none there;"},
		{"region needs the platform too", "ios", "wifi", "cn-north", "tcp tls quic", "rules[3]: "},
		{"no platform: only rules without one", "", "4g", "", "tcp tls quic", "rules[3]: "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := req("demo", "dev-1", "", tt.platform, now.Unix())
			r.Network, r.Region = tt.network, tt.region
			resp := connectOK(t, ts.URL, r)
			if got := protocolsOf(resp.Endpoints); got != tt.want {
				t.Errorf("transports %q, want %q", got, tt.want)
			}
			if !strings.HasPrefix(resp.Reason, tt.reason) {
				t.Errorf("reason %q, want it to start with %q", resp.Reason, tt.reason)
			}
		})
	}
}

// Rules without a catch-all: a client none matches gets the default policy, and the reason says so.
func TestDispatchNoRuleMatches(t *testing.T) {
	ts := newTestServer(t, parseTestConfig(t, allFive, `
dispatch:
  rules: [{platform: [native], transports: [quic]}]
`))
	for _, tt := range []struct{ platform, want, reason string }{
		{"native", "quic", "rules[0] (platform native): quic; served: quic"},
		{"web", "ws wss", "no rule matches, default policy (platform web|miniapp): ws, wss; served: ws, wss"},
		{"tv", "tcp tls quic ws wss", "no rule matches, default policy: tcp, tls, quic, ws, wss; served: tcp, tls, quic, ws, wss"},
	} {
		resp := connectOK(t, ts.URL, req("demo", "dev-1", "", tt.platform, now.Unix()))
		if got := protocolsOf(resp.Endpoints); got != tt.want || !strings.HasPrefix(resp.Reason, tt.reason) {
			t.Errorf("%s: %q (%s), want %q (%s…)", tt.platform, got, resp.Reason, tt.want, tt.reason)
		}
	}
}

func TestDefaultPolicy(t *testing.T) {
	ts := newTestServer(t, parseTestConfig(t, allFive))
	for _, tt := range []struct{ platform, want, reason string }{
		{"web", "ws wss", "default policy (platform web|miniapp): ws, wss; served: ws, wss; configured endpoints: 5 of 5 serving"},
		{"miniapp", "ws wss", "default policy (platform web|miniapp): ws, wss;"},
		{"native", "tcp tls quic ws wss", "default policy: tcp, tls, quic, ws, wss; served: tcp, tls, quic, ws, wss;"},
		{"", "tcp tls quic ws wss", "default policy: "},
	} {
		resp := connectOK(t, ts.URL, req("demo", "dev-1", "", tt.platform, now.Unix()))
		if got := protocolsOf(resp.Endpoints); got != tt.want || !strings.HasPrefix(resp.Reason, tt.reason) {
			t.Errorf("%q: %q (%s), want %q (%s…)", tt.platform, got, resp.Reason, tt.want, tt.reason)
		}
	}
}

// deviceIn reports whether the verdict offers quic.
func offersQUIC(v verdict) bool {
	for _, p := range v.transports {
		if p == ProtoQUIC {
			return true
		}
	}
	return false
}

func TestGrayTransportPercent(t *testing.T) {
	const devices = 10000
	for _, tt := range []struct {
		percent, min, max int
	}{
		{0, 0, 0},
		{100, devices, devices},
		{10, 900, 1100},
		{50, 4800, 5200},
	} {
		t.Run(fmt.Sprint(tt.percent), func(t *testing.T) {
			d := DispatchConfig{Gray: []GrayRelease{{Transport: ProtoQUIC, Percent: tt.percent}}}
			p := newPolicy(d)
			again := newPolicy(d.clone()) // a restarted server: the same policy, built again
			in := 0
			for i := range devices {
				dev := fmt.Sprintf("device-%d", i)
				v := p.decide("demo", dev, "native", "4g", "")
				if offersQUIC(v) {
					in++
				}
				if w := again.decide("demo", dev, "native", "4g", ""); offersQUIC(w) != offersQUIC(v) || w.String() != v.String() {
					t.Fatalf("%s: %q, then after a restart %q", dev, v.String(), w.String())
				}
				if w := p.decide("demo", dev, "native", "4g", ""); w.String() != v.String() {
					t.Fatalf("%s: %q, then %q", dev, v.String(), w.String())
				}
			}
			if in < tt.min || in > tt.max {
				t.Fatalf("%d%%: %d of %d devices offered quic, want %d..%d", tt.percent, in, devices, tt.min, tt.max)
			}
		})
	}
}

// Two gray releases decide independently: about a quarter of the devices are in both halves.
func TestGrayIndependent(t *testing.T) {
	both := 0
	for i := range 10000 {
		dev := fmt.Sprintf("device-%d", i)
		a := GrayBucket("demo", dev, "transport:quic") < 50
		b := GrayBucket("demo", dev, "group:canary") < 50
		if a && b {
			both++
		}
	}
	if both < 2300 || both > 2700 {
		t.Fatalf("%d of 10000 devices in both 50%% releases, want about 2500", both)
	}
	// The bucket depends on the app too.
	differ := 0
	for i := range 1000 {
		dev := fmt.Sprintf("device-%d", i)
		if GrayBucket("demo", dev, "transport:quic") != GrayBucket("other", dev, "transport:quic") {
			differ++
		}
	}
	if differ < 950 {
		t.Fatalf("only %d of 1000 devices change bucket with the app", differ)
	}
}

// A device out of the quic release is not offered quic, one in is; the reason names the bucket;
// the same device gets the same answer across calls and across a restart of the server.
func TestGrayTransportConnect(t *testing.T) {
	cfg := parseTestConfig(t, allFive, exampleDispatch, `
  gray:
    - {transport: quic, percent: 10}
    - {transport: wss, percent: 100}
`)
	in, out := "", ""
	for i := 0; in == "" || out == ""; i++ {
		dev := fmt.Sprintf("dev-%d", i)
		if GrayBucket("demo", dev, "transport:quic") < 10 {
			in = cmpOr(in, dev)
		} else {
			out = cmpOr(out, dev)
		}
	}
	answers := map[string]string{}
	for restart := range 2 {
		ts := newTestServer(t, cfg)
		for _, dev := range []string{in, out} {
			for range 3 {
				r := req("demo", dev, "", "native", now.Unix())
				r.Network = "5g"
				resp := connectOK(t, ts.URL, r)
				got := protocolsOf(resp.Endpoints) + " | " + resp.Reason
				if prev, ok := answers[dev]; ok && prev != got {
					t.Fatalf("%s (restart %d): %s, before %s", dev, restart, got, prev)
				}
				answers[dev] = got
			}
		}
	}
	b := GrayBucket("demo", in, "transport:quic")
	if want := fmt.Sprintf("quic tls tcp | rules[1] (platform native, network 4g|5g): quic, tls, tcp; gray quic 10%%: in (bucket %d); served: quic, tls, tcp; configured endpoints: 5 of 5 serving", b); answers[in] != want {
		t.Errorf("device in:\n got %s\nwant %s", answers[in], want)
	}
	b = GrayBucket("demo", out, "transport:quic")
	if want := fmt.Sprintf("tls tcp | rules[1] (platform native, network 4g|5g): quic, tls, tcp; gray quic 10%%: out (bucket %d); served: tls, tcp; configured endpoints: 5 of 5 serving", b); answers[out] != want {
		t.Errorf("device out:\n got %s\nwant %s", answers[out], want)
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// policyRegistry is a registry-dispatching server with cfg (route.instance_ttl 10s) and the
// instances registered.
func policyRegistry(t *testing.T, cfg *Config, insts ...route.Instance) string {
	t.Helper()
	st := memory.New(memory.WithClock(func() time.Time { return now }))
	t.Cleanup(func() { _ = st.Close() })
	cfg.Route.InstanceTTL = 10 * time.Second
	s, err := NewServer(cfg, WithClock(func() time.Time { return now }), WithLogger(slog.New(slog.DiscardHandler)),
		WithRegistry(st, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	register(t, st, time.Minute, insts...)
	mustRefresh(t, s)
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

func placed(in route.Instance, region, group string) route.Instance {
	in.Region, in.Group = region, group
	return in
}

// Gray by instance group: the devices in the release go to the group's instances first, the
// others to them last.
func TestGrayGroup(t *testing.T) {
	cfg := parseTestConfig(t, `
dispatch:
  gray: [{group: canary, percent: 30}]
`)
	url := policyRegistry(t, cfg,
		placed(tcpInstance("gw-a", 10, "tcp://a:7000"), "", ""),
		placed(tcpInstance("gw-b", 50, "tcp://b:7000"), "", ""),
		placed(tcpInstance("gw-c", 90, "tcp://c:7000"), "", "canary"),
	)
	in, out := 0, 0
	for i := range 200 {
		dev := fmt.Sprintf("dev-%d", i)
		resp := connectOK(t, url, req("demo", dev, "", "native", now.Unix()))
		b := GrayBucket("demo", dev, "group:canary")
		got := addrsOf(resp.Endpoints)
		if b < 30 {
			in++
			if !strings.HasPrefix(got, "tcp://c:7000 ") {
				t.Fatalf("%s (bucket %d, in): %s", dev, b, got)
			}
			if want := fmt.Sprintf("gray group canary 30%%: in (bucket %d)", b); !strings.Contains(resp.Reason, want) {
				t.Fatalf("%s: reason %q lacks %q", dev, resp.Reason, want)
			}
		} else {
			out++
			if !strings.HasSuffix(got, " tcp://c:7000") {
				t.Fatalf("%s (bucket %d, out): %s", dev, b, got)
			}
			if want := fmt.Sprintf("gray group canary 30%%: out (bucket %d)", b); !strings.Contains(resp.Reason, want) {
				t.Fatalf("%s: reason %q lacks %q", dev, resp.Reason, want)
			}
		}
	}
	if in < 40 || in > 80 {
		t.Fatalf("%d of 200 devices in a 30%% release", in)
	}
	_ = out
}

// Only the transports a live instance serves are handed out, in the rule's order, falling back
// along it; none of them: 503 with the reason.
func TestDispatchLiveTransports(t *testing.T) {
	cfg := parseTestConfig(t, exampleDispatch)
	drain := tcpInstance("gw-d", 0, "quic://d:7443", "wss://d:443")
	drain.Draining = true
	url := policyRegistry(t, cfg,
		tcpInstance("gw-a", 10, "tcp://a:7000", "ws://a:8080"),
		tcpInstance("gw-b", 50, "tcp://b:7000", "quic://b:7443"),
		tcpInstance("gw-c", 5, "tls://c:7001"),
		drain,
	)
	for _, tt := range []struct{ platform, network, want, reason string }{
		// quic first on 5g: only gw-b serves it; then tls (gw-c), then tcp least loaded first.
		{"native", "5g", "quic://b:7443 tls://c:7001 tcp://a:7000 tcp://b:7000",
			"rules[1] (platform native, network 4g|5g): quic, tls, tcp; served: quic, tls, tcp; registry: 4 live instances, 1 draining"},
		// web: wss only on the draining gw-d; ws on gw-a.
		{"web", "wifi", "ws://a:8080", "rules[0] (platform web|miniapp): wss, ws; served: ws; registry: 4 live instances, 1 draining"},
		{"tv", "wifi", "tcp://a:7000 tcp://b:7000 tls://c:7001 quic://b:7443", "rules[3]: tcp, tls, quic; served: tcp, tls, quic;"},
	} {
		r := req("demo", "dev-1", "", tt.platform, now.Unix())
		r.Network = tt.network
		resp := connectOK(t, url, r)
		if got := addrsOf(resp.Endpoints); got != tt.want || !strings.HasPrefix(resp.Reason, tt.reason) {
			t.Errorf("%s/%s:\n got %s (%s)\nwant %s (%s…)", tt.platform, tt.network, got, resp.Reason, tt.want, tt.reason)
		}
	}

	// A rule whose transports no live instance serves: 503 saying which.
	cfg = parseTestConfig(t, `
dispatch:
  rules: [{platform: [web], transports: [wss]}]
`)
	url = policyRegistry(t, cfg, tcpInstance("gw-a", 10, "tcp://a:7000", "ws://a:8080"), drain)
	a := do(t, "POST", url+"/v1/connect", signed(demoSecret, req("demo", "dev-1", "", "web", now.Unix())))
	checkAnswer(t, a, 503, CodeNoEndpoints)
	var e ErrorResponse
	if err := json.Unmarshal(a.body, &e); err != nil {
		t.Fatal(err)
	}
	if want := "rules[0] (platform web): wss; no live endpoint serves wss; registry: 2 live instances, 1 draining"; e.Message != want {
		t.Fatalf("503 message %q, want %q", e.Message, want)
	}
	// A gray release leaving no transport: 503 saying so.
	cfg = parseTestConfig(t, `
dispatch:
  rules: [{transports: [quic]}]
  gray: [{transport: quic, percent: 0}]
`)
	url = policyRegistry(t, cfg, tcpInstance("gw-b", 50, "tcp://b:7000", "quic://b:7443"))
	a = do(t, "POST", url+"/v1/connect", signed(demoSecret, req("demo", "dev-1", "", "native", now.Unix())))
	checkAnswer(t, a, 503, CodeNoEndpoints)
	if !strings.Contains(string(a.body), "gray quic 0%: out (bucket ") || !strings.Contains(string(a.body), "no transport left to offer") {
		t.Fatalf("503 body %s", a.body)
	}
}

// Instances in the client's region come first when any serves it, least loaded first within.
func TestDispatchRegion(t *testing.T) {
	url := policyRegistry(t, parseTestConfig(t),
		placed(tcpInstance("gw-a", 10, "tcp://a:7000"), "us-east", ""),
		placed(tcpInstance("gw-b", 50, "tcp://b:7000", "ws://b:8080"), "eu-west", ""),
		placed(tcpInstance("gw-c", 90, "tcp://c:7000"), "eu-west", ""),
		placed(tcpInstance("gw-d", 20, "tcp://d:7000", "ws://d:8080"), "", ""),
	)
	for _, tt := range []struct{ platform, region, want, reason string }{
		{"native", "eu-west", "tcp://b:7000 tcp://c:7000 ws://b:8080 tcp://a:7000 tcp://d:7000 ws://d:8080", "region eu-west first"},
		{"native", "EU-West", "tcp://b:7000 tcp://c:7000 ws://b:8080 tcp://a:7000 tcp://d:7000 ws://d:8080", "region EU-West first"},
		{"native", "ap-south", "tcp://a:7000 tcp://d:7000 tcp://b:7000 tcp://c:7000 ws://d:8080 ws://b:8080", "region ap-south: none there"},
		{"native", "", "tcp://a:7000 tcp://d:7000 tcp://b:7000 tcp://c:7000 ws://d:8080 ws://b:8080", "served: tcp, ws; registry"},
		// Browsers from us-east: the only us-east instance has no WebSocket, so any region.
		{"web", "us-east", "ws://d:8080 ws://b:8080", "region us-east: none there"},
	} {
		r := req("demo", "dev-1", "", tt.platform, now.Unix())
		r.Region = tt.region
		resp := connectOK(t, url, r)
		if got := addrsOf(resp.Endpoints); got != tt.want || !strings.Contains(resp.Reason, tt.reason) {
			t.Errorf("%s/%s:\n got %s (%s)\nwant %s (…%s…)", tt.platform, tt.region, got, resp.Reason, tt.want, tt.reason)
		}
	}
}

// Configured endpoints take a region and a group too, and are never sent with them.
func TestDispatchConfiguredPlacement(t *testing.T) {
	ts := newTestServer(t, parseTestConfig(t, `
endpoints:
  - {protocol: tcp, addr: "us:7000", region: us}
  - {protocol: tcp, addr: "eu:7000", region: eu}
  - {protocol: tcp, addr: "canary:7000", group: canary}
dispatch:
  gray: [{group: canary, percent: 0}]
`))
	r := req("demo", "dev-1", "", "native", now.Unix())
	r.Region = "eu"
	a := do(t, "POST", ts.URL+"/v1/connect", signed(demoSecret, r))
	checkAnswer(t, a, 200, "")
	if !strings.Contains(string(a.body), `"endpoints":[{"protocol":"tcp","addr":"eu:7000"},{"protocol":"tcp","addr":"us:7000"},{"protocol":"tcp","addr":"canary:7000"}]`) {
		t.Fatalf("answer %s", a.body)
	}
}

func TestDispatchConfigErrors(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"dispatch: {rules: [{transports: [tcp]}, {transports: [tcp]}, {transports: [htttp]}]}",
			`dispatch.rules[2].transports[0]: "htttp": want tcp, tls, ws, wss or quic`},
		{"dispatch: {rules: [{platform: [web]}]}", "dispatch.rules[0].transports: empty: want at least one of"},
		{"dispatch: {rules: [{platform: [web], transports: []}]}", "dispatch.rules[0].transports: empty"},
		{"dispatch: {rules: [{transports: [ws, wss, ws]}]}", `dispatch.rules[0].transports[2]: duplicate "ws" (also transports[0])`},
		{"dispatch: {rules: [{transports: [TCP]}]}", `dispatch.rules[0].transports[0]: "TCP": want tcp`},
		{`dispatch: {rules: [{platform: [""], transports: [tcp]}]}`, "dispatch.rules[0].platform[0]: empty"},
		{"dispatch: {rules: [{network: [" + strings.Repeat("n", 65) + "], transports: [tcp]}]}", "dispatch.rules[0].network[0]: 65 bytes, at most 64"},
		{"dispatch: {rules: [{regoin: [eu], transports: [tcp]}]}", "dispatch.rules[].regoin: unknown setting"},
		{"dispatch: {rules: [{transports: tcp}]}", "cannot unmarshal !!str `tcp` into []string"},
		{"dispatch: {gray: [{transport: htttp, percent: 10}]}", `dispatch.gray[0].transport: "htttp": want tcp, tls, ws, wss or quic`},
		{"dispatch: {gray: [{transport: quic, percent: -1}]}", "dispatch.gray[0].percent: -1: want 0..100"},
		{"dispatch: {gray: [{group: canary, percent: 101}]}", "dispatch.gray[0].percent: 101: want 0..100"},
		{"dispatch: {gray: [{transport: quic}]}", "dispatch.gray[0].percent: missing: want 0..100"},
		{"dispatch: {gray: [{percent: 5}]}", "dispatch.gray[0]: want transport or group"},
		{"dispatch: {gray: [{transport: quic, group: canary, percent: 5}]}", "dispatch.gray[0]: both transport and group"},
		{"dispatch: {gray: [{transport: quic, percent: 5}, {transport: quic, percent: 10}]}", `dispatch.gray[1].transport: duplicate "quic" (also dispatch.gray[0])`},
		{"dispatch: {gray: [{group: c, percent: 5}, {group: c, percent: 10}]}", `dispatch.gray[1].group: duplicate "c" (also dispatch.gray[0])`},
		{"dispatch: {gray: [{transport: quic, percent: 5.5}]}", "dispatch.gray[0].percent: 5.5: want a whole number 0..100"},
		{"dispatch: {gray: [{transport: quic, percent: ten}]}", "cannot unmarshal !!str `ten`"},
		{"dispatch: {grey: []}", "dispatch.grey: unknown setting"},
		{"dispatch: {gray: [{transport: quic, percent: 5, precent: 5}]}", "dispatch.gray[].precent: unknown setting"},
	} {
		_, err := ParseConfig([]byte(baseYAML + tt.yaml + "\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s:\n got %v\nwant …%s…", tt.yaml, err, tt.want)
		}
	}
	// Any platform, network and region string is fine; percent 0 and 100 are.
	parseTestConfig(t, exampleDispatch, `
  gray:
    - {transport: quic, percent: 0}
    - {transport: tcp, percent: 100}
    - {group: canary, percent: 5}
`)
	parseTestConfig(t, `
dispatch:
  rules: [{platform: [smart-fridge, 车机], network: [lorawan], region: [mars-1], transports: [quic]}]
`)

	// Programmatic configs are validated by NewServer too.
	cfg := testConfig(t)
	cfg.Dispatch.Rules = []DispatchRule{{Transports: []string{"udp"}}}
	if _, err := NewServer(cfg); err == nil || !strings.Contains(err.Error(), `dispatch.rules[0].transports[0]: "udp"`) {
		t.Fatalf("NewServer: %v", err)
	}
}

// The example config's dispatch section parses and means what it says.
func TestExampleConfigDispatch(t *testing.T) {
	c, err := LoadConfig("../deploy/pushwire.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Dispatch.Rules) == 0 || len(c.Dispatch.Gray) == 0 || len(c.CORSOrigins) == 0 {
		t.Fatalf("example dispatch %+v, cors %v", c.Dispatch, c.CORSOrigins)
	}
}

// BenchmarkDispatch is one connect's dispatch from a registry of 6 instances serving 5 transports
// each, with the example rules and two gray releases.
func BenchmarkDispatch(b *testing.B) {
	cfg, err := ParseConfig([]byte(baseYAML + exampleDispatch + `
  gray: [{transport: quic, percent: 10}, {group: canary, percent: 5}]
`))
	if err != nil {
		b.Fatal(err)
	}
	st := memory.New(memory.WithClock(func() time.Time { return now }))
	b.Cleanup(func() { _ = st.Close() })
	s, err := NewServer(cfg, WithClock(func() time.Time { return now }), WithLogger(slog.New(slog.DiscardHandler)),
		WithRegistry(st, time.Second))
	if err != nil {
		b.Fatal(err)
	}
	for i := range 6 {
		id := fmt.Sprintf("gw-%d", i)
		in := tcpInstance(id, int64(100*i), "tcp://"+id+":7000", "tls://"+id+":7001", "ws://"+id+":8080",
			"wss://"+id+":443", "quic://"+id+":7443")
		in.Region = []string{"eu", "us"}[i%2]
		if i == 5 {
			in.Group = "canary"
		}
		if err := st.Register(context.Background(), in, time.Minute); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	reqs := make([]ConnectRequest, 1024)
	for i := range reqs {
		reqs[i] = ConnectRequest{App: "demo", Device: fmt.Sprintf("device-%d", i), Platform: "native", Network: "4g", Region: "eu"}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if eps, _ := s.dispatch(now, &reqs[i%len(reqs)]); len(eps) == 0 {
			b.Fatal("no endpoints")
		}
		i++
	}
}
