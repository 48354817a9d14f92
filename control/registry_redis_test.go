package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/pushwire/pushwire/internal/redisproc"
	routeredis "github.com/pushwire/pushwire/route/redis"
)

// The dispatch path on a real Redis: gateways register in route/redis, the control layer reads
// the registry and hands them out; after Redis loses everything (a restart) connects get 503
// until the gateways register again; while Redis is down the last list read keeps serving.
func TestRegistryDispatchRedis(t *testing.T) {
	ctx := context.Background()
	proc, err := redisproc.Start(ctx, redisproc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Stop() })
	st, err := routeredis.New(routeredis.Config{Addrs: []string{proc.Addr()}, Prefix: "ctltest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	if err := st.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	s, err := NewServer(cfg, WithLogger(slog.New(slog.DiscardHandler)), WithRegistry(st, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	api := httptest.NewServer(s.Handler())
	t.Cleanup(api.Close)
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(runCtx) }()
	t.Cleanup(func() { cancel(); <-done })

	// answer is the endpoints of one connect, or "503".
	answer := func() string {
		a := do(t, "POST", api.URL+"/v1/connect", signed(demoSecret, req("demo", "dev-1", "", "native", time.Now().Unix())))
		switch a.status {
		case 200:
			var r ConnectResponse
			if err := json.Unmarshal(a.body, &r); err != nil {
				t.Fatalf("%s: %v", a.body, err)
			}
			return addrsOf(r.Endpoints)
		case 503:
			return "503"
		}
		t.Fatalf("connect: %d %s", a.status, a.body)
		return ""
	}
	eventually := func(want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := answer()
			if got == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("connect answers %q, want %q", got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	eventually("503") // nobody registered yet
	register(t, st, 10*time.Second, tcpInstance("gw-a", 100, "tcp://a:7000"), tcpInstance("gw-b", 5, "tcp://b:7000", "ws://b:8080"))
	eventually("tcp://b:7000 tcp://a:7000 ws://b:8080")
	if err := st.Deregister(ctx, "gw-b"); err != nil {
		t.Fatal(err)
	}
	eventually("tcp://a:7000")

	// Redis restarted without its data: the registry reads empty, so 503, until gw-a registers
	// again (as gateways do every third of their TTL).
	if err := proc.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	eventually("503")
	register(t, st, 10*time.Second, tcpInstance("gw-a", 100, "tcp://a:7000"))
	eventually("tcp://a:7000")

	// Redis down: the list read before keeps serving (it is younger than the instance TTL).
	proc.Kill()
	deadline := time.Now().Add(5 * time.Second)
	for !s.registryFailing() {
		if time.Now().After(deadline) {
			t.Fatal("the registry reads never failed with Redis killed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := answer(); got != "tcp://a:7000" {
		t.Fatalf("with Redis down, within the TTL: %q", got)
	}
}
