package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/route"
	"github.com/pushwire/pushwire/route/memory"
)

// registryServer is a control Server dispatching from reg, on the test clock clk, with
// route.instance_ttl 10s and the limits off.
func registryServer(t *testing.T, reg route.Registry, clk func() time.Time) (*Server, string) {
	t.Helper()
	cfg := testConfig(t)
	cfg.Route.InstanceTTL = 10 * time.Second
	s, err := NewServer(cfg, WithClock(clk), WithLogger(slog.New(slog.DiscardHandler)), WithRegistry(reg, time.Second))
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(s.Handler())
	t.Cleanup(ts.Close)
	return s, ts.URL
}

func register(t *testing.T, reg route.Registry, ttl time.Duration, insts ...route.Instance) {
	t.Helper()
	for _, in := range insts {
		if err := reg.Register(context.Background(), in, ttl); err != nil {
			t.Fatal(err)
		}
	}
}

func tcpInstance(id string, conns int64, addrs ...string) route.Instance {
	in := route.Instance{ID: id, Engine: "gnet", Conns: conns, HTTP: "http://" + id + ":7080"}
	for _, a := range addrs {
		proto, addr, _ := strings.Cut(a, "://")
		in.Endpoints = append(in.Endpoints, route.Endpoint{Protocol: proto, Addr: addr})
	}
	return in
}

func addrsOf(eps []Endpoint) string {
	var s []string
	for _, e := range eps {
		s = append(s, e.Protocol+"://"+e.Addr)
	}
	return strings.Join(s, " ")
}

func mustRefresh(t *testing.T, s *Server) {
	t.Helper()
	if err := s.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestRegistryDispatch(t *testing.T) {
	clk := newFakeClock(now)
	st := memory.New(memory.WithClock(clk.Now))
	t.Cleanup(func() { _ = st.Close() })
	s, url := registryServer(t, st, clk.Now)

	// Before the first reading: 503, saying why.
	a := do(t, "POST", url+"/v1/connect", signed(demoSecret, req("demo", "dev-1", "", "native", now.Unix())))
	checkAnswer(t, a, 503, CodeNoEndpoints)
	if !strings.Contains(string(a.body), "not been read yet") {
		t.Fatalf("503 before the first reading: %s", a.body)
	}
	mustRefresh(t, s)
	// An empty registry: 503.
	checkAnswer(t, do(t, "POST", url+"/v1/connect", signed(demoSecret, req("demo", "dev-1", "", "native", now.Unix()))), 503, CodeNoEndpoints)

	drain := tcpInstance("gw-c", 0, "tcp://c:7000", "ws://c:8080")
	drain.Draining = true
	register(t, st, time.Minute,
		tcpInstance("gw-a", 50, "tcp://a:7000", "ws://a:8080"),
		tcpInstance("gw-b", 10, "tcp://b:7000"),
		drain,
		tcpInstance("gw-d", 30, "tcp://d:7000", "quic://d:7443"),
	)
	mustRefresh(t, s)

	// The policy's transport order (native: tcp, tls, quic, ws, wss), and within a transport
	// least loaded first; draining left out.
	got := addrsOf(connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix())).Endpoints)
	if want := "tcp://b:7000 tcp://d:7000 tcp://a:7000 quic://d:7443 ws://a:8080"; got != want {
		t.Fatalf("native endpoints\n got %s\nwant %s", got, want)
	}
	// The clients sent to gw-b count on its load: 10 + 20 handed ties with gw-d's 30 (the lower
	// ID first), one more and gw-d comes first.
	for i := 1; i < 20; i++ {
		connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix()))
	}
	if got := connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix())).Endpoints[0].Addr; got != "b:7000" {
		t.Fatalf("at a tie first %s, want b:7000", got)
	}
	if got := connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix())).Endpoints[0].Addr; got != "d:7000" {
		t.Fatalf("after gw-b took 21 first %s, want d:7000", got)
	}
	// A new reading without a new registration keeps the count; a new registration resets it.
	mustRefresh(t, s)
	if got := connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix())).Endpoints[0].Addr; got != "b:7000" {
		t.Fatalf("after a refresh first %s, want b:7000 (31 vs 31: the lower ID)", got)
	}
	clk.Add(time.Millisecond) // a distinct registration time
	register(t, st, time.Minute, tcpInstance("gw-b", 25, "tcp://b:7000"))
	mustRefresh(t, s)
	if got := addrsOf(connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix())).Endpoints); !strings.HasPrefix(got, "tcp://b:7000 tcp://d:7000") {
		t.Fatalf("gw-b registered again with 25: %s, want it first again", got)
	}

	// Browsers get the WebSocket endpoints of the instances that have one.
	if got := addrsOf(connectOK(t, url, req("demo", "dev-1", "", "web", now.Unix())).Endpoints); got != "ws://a:8080" {
		t.Fatalf("web endpoints %s, want ws://a:8080", got)
	}

	// An instance whose TTL lapses is never handed out, even from a cached list read before.
	clk.Add(time.Second)
	register(t, st, 2*time.Second, tcpInstance("gw-0", 0, "tcp://z:7000"))
	mustRefresh(t, s)
	if got := connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix())).Endpoints[0].Addr; got != "z:7000" {
		t.Fatalf("first %s, want the empty gw-0", got)
	}
	clk.Add(2 * time.Second) // gw-0 lapses; the cache (3 s old) is not refreshed
	got = addrsOf(connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix())).Endpoints)
	if strings.Contains(got, "z:7000") {
		t.Fatalf("lapsed gw-0 handed out from a stale cache: %s", got)
	}

	// GET /v1/instances lists the registry's instances.
	ts := httptest.NewServer(s.InstancesHandler())
	defer ts.Close()
	a = do(t, http.MethodGet, ts.URL, "")
	var list struct{ Instances []Instance }
	if err := json.Unmarshal(a.body, &list); err != nil || a.status != 200 {
		t.Fatalf("instances %d %s: %v", a.status, a.body, err)
	}
	var ids []string
	for _, in := range list.Instances {
		ids = append(ids, in.ID)
		switch in.ID {
		case "gw-0":
			if in.Serving {
				t.Errorf("lapsed gw-0 listed as serving: %+v", in)
			}
		case "gw-c":
			if in.Serving || !in.Draining {
				t.Errorf("draining gw-c: %+v", in)
			}
		case "gw-a":
			if !in.Serving || in.Sessions != 50 || in.Health != "http://gw-a:7080" || in.Engine != "gnet" ||
				len(in.Endpoints) != 2 || in.Expires.IsZero() {
				t.Errorf("gw-a: %+v", in)
			}
		}
	}
	if strings.Join(ids, ",") != "gw-0,gw-a,gw-b,gw-c,gw-d" {
		t.Fatalf("instances listed %v", ids)
	}
}

// Only draining or only non-matching instances: 503 saying so.
func TestRegistryDispatchNone(t *testing.T) {
	clk := newFakeClock(now)
	st := memory.New(memory.WithClock(clk.Now))
	t.Cleanup(func() { _ = st.Close() })
	s, url := registryServer(t, st, clk.Now)
	drain := tcpInstance("gw-a", 0, "ws://a:8080")
	drain.Draining = true
	register(t, st, time.Minute, drain, tcpInstance("gw-b", 0, "tcp://b:7000"))
	mustRefresh(t, s)
	a := do(t, "POST", url+"/v1/connect", signed(demoSecret, req("demo", "dev-1", "", "web", now.Unix())))
	checkAnswer(t, a, 503, CodeNoEndpoints)
	if !strings.Contains(string(a.body), `no live endpoint serves ws, wss; registry: 2 live instances, 1 draining`) {
		t.Fatalf("503 body %s", a.body)
	}
	connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix()))
}

// A registry that cannot be read: the last list read is used for one instance TTL, then 503.
func TestRegistryUnreadable(t *testing.T) {
	clk := newFakeClock(now)
	st := memory.New(memory.WithClock(clk.Now))
	s, url := registryServer(t, st, clk.Now)
	register(t, st, time.Hour, tcpInstance("gw-a", 0, "tcp://a:7000"))
	mustRefresh(t, s)
	_ = st.Close() // every read fails from now on

	clk.Add(5 * time.Second)
	if err := s.Refresh(context.Background()); err == nil {
		t.Fatal("Refresh of a closed store: no error")
	}
	connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix()))
	clk.Add(5 * time.Second) // the list is exactly one TTL old: still used
	connectOK(t, url, req("demo", "dev-1", "", "native", now.Unix()))
	clk.Add(time.Millisecond)
	a := do(t, "POST", url+"/v1/connect", signed(demoSecret, req("demo", "dev-1", "", "native", now.Unix())))
	checkAnswer(t, a, 503, CodeNoEndpoints)
	if !strings.Contains(string(a.body), "has not been readable for 10s") {
		t.Fatalf("503 body %s", a.body)
	}
}

// Run reads the registry until its context ends, and returns then.
func TestRegistryRun(t *testing.T) {
	st := memory.New()
	t.Cleanup(func() { _ = st.Close() })
	cfg := testConfig(t)
	s, err := NewServer(cfg, WithLogger(slog.New(slog.DiscardHandler)), WithRegistry(st, 10*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	register(t, st, time.Minute, tcpInstance("gw-a", 0, "tcp://a:7000"))
	deadline := time.Now().Add(5 * time.Second)
	for len(s.Instances()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run never read the registration")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done

	// Without a registry Run returns at once.
	plain, err := NewServer(cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	plain.Run(context.Background())
}
