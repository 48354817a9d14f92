package redis_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/internal/redisproc"
	"github.com/pushwire/pushwire/route"
	"github.com/pushwire/pushwire/route/redis"
	"github.com/pushwire/pushwire/route/routetest"
)

// srv is the redis-server the package's tests share (the restart test runs its own).
var srv *redisproc.Proc

func TestMain(m *testing.M) {
	p, err := redisproc.Start(context.Background(), redisproc.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "route/redis tests:", err)
		os.Exit(1)
	}
	srv = p
	code := m.Run()
	if err := p.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "route/redis tests: stop redis:", err)
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var prefixes atomic.Int64

// freshPrefix keeps every test's keys apart on the shared server.
func freshPrefix() string { return "t" + strconv.FormatInt(prefixes.Add(1), 10) }

func newClient(addr string) *goredis.Client {
	return goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second})
}

func TestContract(t *testing.T) {
	routetest.Run(t, func(t *testing.T) route.Store {
		return redis.NewFromClient(newClient(srv.Addr()), freshPrefix())
	})
}

// counter counts what reaches the server: single commands and pipelines.
type counter struct {
	single, pipelines, cmds atomic.Int64
}

func (c *counter) DialHook(next goredis.DialHook) goredis.DialHook { return next }

func (c *counter) ProcessHook(next goredis.ProcessHook) goredis.ProcessHook {
	return func(ctx context.Context, cmd goredis.Cmder) error {
		c.single.Add(1)
		return next(ctx, cmd)
	}
}

func (c *counter) ProcessPipelineHook(next goredis.ProcessPipelineHook) goredis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []goredis.Cmder) error {
		c.pipelines.Add(1)
		c.cmds.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func (c *counter) reset() { c.single.Store(0); c.pipelines.Store(0); c.cmds.Store(0) }

// Every batch op is one round trip whatever its size (Claim with users: two).
func TestRoundTrips(t *testing.T) {
	cl := newClient(srv.Addr())
	cnt := &counter{}
	cl.AddHook(cnt)
	s := redis.NewFromClient(cl, freshPrefix())
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	const n = 10000
	claims := make([]route.Claim, n)
	devs := make([]string, n)
	users := make([]string, 0, 100)
	for i := range claims {
		devs[i] = "d" + strconv.Itoa(i)
		claims[i] = route.Claim{App: "a", Device: devs[i], Entry: route.Entry{Instance: "I" + strconv.Itoa(i%4), Conn: uint64(i), Gen: 1}}
	}
	// The first claim loads the scripts (a fresh server does not have them).
	if _, err := s.Claim(ctx, claims[:1]); err != nil {
		t.Fatal(err)
	}
	type step struct {
		name            string
		fn              func() error
		pipelines, cmds int64
	}
	releases := make([]route.Release, n)
	for i := range releases {
		releases[i] = route.Release{App: "a", Device: devs[i], Entry: route.Entry{Instance: "X", Conn: 1, Gen: 1}}
	}
	uclaims := make([]route.Claim, 100)
	for i := range uclaims {
		users = append(users, "u"+strconv.Itoa(i))
		uclaims[i] = route.Claim{App: "a", Device: "ud" + strconv.Itoa(i), User: users[i], Entry: route.Entry{Instance: "I", Conn: uint64(i), Gen: 1}}
	}
	msgs := make([]route.Message, 1000)
	for i := range msgs {
		msgs[i] = route.Message{To: "I" + strconv.Itoa(i%4), Data: []byte("x")}
	}
	pend := make([]route.Pending, 1000)
	acks := make([]route.Ack, 1000)
	for i := range pend {
		pend[i] = route.Pending{App: "a", Device: devs[i], ID: "m", Data: []byte("p"), Expires: time.Now().Add(time.Hour)}
		acks[i] = route.Ack{App: "a", Device: devs[i], ID: "m"}
	}
	members := make([]route.Membership, 1000)
	holdings := make([]route.Holding, 1000)
	for i := range members {
		members[i] = route.Membership{App: "a", Device: devs[i], Group: "g" + strconv.Itoa(i%10), In: true}
		holdings[i] = route.Holding{App: "a", Group: "g" + strconv.Itoa(i), Instance: "I", Held: true}
	}
	steps := []step{
		{"Claim 10000", func() error { _, err := s.Claim(ctx, claims); return err }, 1, n},
		{"Lookup 10000", func() error { _, err := s.Lookup(ctx, "a", devs); return err }, 1, n},
		{"Release 10000 (stale)", func() error { _, err := s.Release(ctx, releases); return err }, 1, n},
		{"Refresh 10000", func() error { _, err := s.Refresh(ctx, claims); return err }, 1, n},
		{"Claim 100 with users", func() error { _, err := s.Claim(ctx, uclaims); return err }, 2, 200},
		{"Users 100", func() error { _, err := s.Users(ctx, "a", users); return err }, 1, 100},
		{"Publish 1000", func() error { _, err := s.Publish(ctx, msgs); return err }, 1, 1000},
		{"AddPending 1000", func() error { return s.AddPending(ctx, pend) }, 1, 1000},
		{"Ack 1000", func() error { return s.Ack(ctx, acks) }, 1, 1000},
		{"SetMembership 1000", func() error { return s.SetMembership(ctx, members) }, 1, 1000},
		{"SetHolding 1000", func() error { return s.SetHolding(ctx, holdings) }, 1, 1000},
		{"Register", func() error { return s.Register(ctx, route.Instance{ID: "gw"}, time.Minute) }, 1, 4}, // MULTI, HSET, ZADD, EXEC
		{"Instances", func() error { _, err := s.Instances(ctx); return err }, 1, 1},
	}
	for _, st := range steps {
		cnt.reset()
		if err := st.fn(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if p, c, one := cnt.pipelines.Load(), cnt.cmds.Load(), cnt.single.Load(); p != st.pipelines || c != st.cmds || one != 0 {
			t.Errorf("%s: %d pipelines of %d commands and %d single commands, want %d pipelines of %d", st.name, p, c, one, st.pipelines, st.cmds)
		} else {
			t.Logf("%s: %d round trip(s), %d commands", st.name, p, c)
		}
	}
}

// A restarted Redis (data lost): the subscription reports the loss and the return, messages flow
// again, and the scripts the server forgot are loaded again.
func TestRedisRestart(t *testing.T) {
	p, err := redisproc.Start(t.Context(), redisproc.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = p.Stop() }()
	s := redis.NewFromClient(newClient(p.Addr()), freshPrefix())
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	if _, err := s.Claim(ctx, []route.Claim{{App: "a", Device: "d", Entry: route.Entry{Instance: "A", Conn: 1, Gen: 1}}}); err != nil {
		t.Fatal(err)
	}
	ups := make(chan bool, 16)
	var mu sync.Mutex
	var got []string
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.Subscribe(sctx, "A", func(b []byte) {
			mu.Lock()
			got = append(got, string(b))
			mu.Unlock()
		}, func(up bool) { ups <- up })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Subscribe: %v", err)
		}
	}()
	expect := func(want bool) {
		t.Helper()
		select {
		case up := <-ups:
			if up != want {
				t.Fatalf("up(%v), want up(%v)", up, want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no up(%v)", want)
		}
	}
	expect(true)
	before, err := s.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	expect(false)
	expect(true)
	// The store lost its data: a new epoch, after the old one.
	if after, err := s.Epoch(ctx); err != nil || !after.After(before) {
		t.Fatalf("Epoch after restart: %v %v, want after %v", after, err, before)
	}
	// The data went with the restart; commands and scripts work again.
	if e, err := s.Lookup(ctx, "a", []string{"d"}); err != nil || !e[0].IsZero() {
		t.Fatalf("Lookup after restart: %+v %v", e, err)
	}
	res, err := s.Claim(ctx, []route.Claim{{App: "a", Device: "d", Entry: route.Entry{Instance: "A", Conn: 2, Gen: 1}}})
	if err != nil || res[0].Gen != 1 {
		t.Fatalf("Claim after restart (scripts reloaded): %+v %v", res, err)
	}
	if ok, err := s.Refresh(ctx, []route.Claim{{App: "a", Device: "e", Entry: route.Entry{Instance: "A", Conn: 3, Gen: 9}}}); err != nil || !ok[0] {
		t.Fatalf("Refresh after restart: %v %v", ok, err)
	}
	n, err := s.Publish(ctx, []route.Message{{To: "A", Data: []byte("after")}})
	if err != nil || n[0] != 1 {
		t.Fatalf("Publish after restart: %v %v", n, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		ok := len(got) == 1 && got[0] == "after"
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("message after restart not delivered: %q", got)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Redis down: calls fail with the op named, and the subscription stays down until it returns.
	p.Kill()
	expect(false)
	if _, err := s.Lookup(ctx, "a", []string{"d"}); err == nil || !strings.Contains(err.Error(), "route/redis: lookup") {
		t.Fatalf("Lookup with Redis down: %v", err)
	}
	if err := p.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	expect(true)
}

func TestConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  redis.Config
		want string
	}{
		{redis.Config{}, "Addrs"},
		{redis.Config{Addrs: []string{"localhost"}}, "Addrs"},
		{redis.Config{Addrs: []string{"127.0.0.1:1"}, DB: -1}, "DB"},
		{redis.Config{Addrs: []string{"127.0.0.1:1", "127.0.0.1:2"}, DB: 2}, "DB"},
		{redis.Config{Addrs: []string{"127.0.0.1:1"}, Prefix: "a{b"}, "Prefix"},
		{redis.Config{Addrs: []string{"127.0.0.1:1"}, PoolSize: -1}, "PoolSize"},
		{redis.Config{Addrs: []string{"127.0.0.1:1"}, ReadTimeout: -1}, "ReadTimeout"},
	} {
		if _, err := redis.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v): %v, want an error naming %s", c.cfg, err, c.want)
		}
	}
	s, err := redis.New(redis.Config{Addrs: []string{srv.Addr()}, Prefix: freshPrefix()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	if err := s.Ping(t.Context()); err != nil {
		t.Fatal(err)
	}
	if s.Client() == nil {
		t.Fatal("Client nil")
	}
}

// Names holding the key syntax do not collide.
func TestKeyEscaping(t *testing.T) {
	s := redis.NewFromClient(newClient(srv.Addr()), freshPrefix())
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	if _, err := s.Claim(ctx, []route.Claim{
		{App: "a/b", Device: "c", Entry: route.Entry{Instance: "X", Conn: 1, Gen: 1}},
		{App: "a", Device: "b/c", Entry: route.Entry{Instance: "Y", Conn: 2, Gen: 1}},
		{App: "a", Device: "{b}%2Fc", Entry: route.Entry{Instance: "Z", Conn: 3, Gen: 1}},
	}); err != nil {
		t.Fatal(err)
	}
	e1, _ := s.Lookup(ctx, "a/b", []string{"c"})
	e2, _ := s.Lookup(ctx, "a", []string{"b/c", "{b}%2Fc"})
	if e1[0].Instance != "X" || e2[0].Instance != "Y" || e2[1].Instance != "Z" {
		t.Fatalf("collision: %+v %+v", e1, e2)
	}
}

func BenchmarkLookup1000(b *testing.B) {
	s := redis.NewFromClient(newClient(srv.Addr()), freshPrefix())
	defer func() { _ = s.Close() }()
	ctx := context.Background()
	devs := make([]string, 1000)
	claims := make([]route.Claim, len(devs))
	for i := range devs {
		devs[i] = "device-" + strconv.Itoa(i)
		claims[i] = route.Claim{App: "bench", Device: devs[i], Entry: route.Entry{Instance: "gw-" + strconv.Itoa(i%6), Conn: uint64(i), Gen: 1}}
	}
	if _, err := s.Claim(ctx, claims); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		es, err := s.Lookup(ctx, "bench", devs)
		if err != nil || es[999].IsZero() {
			b.Fatal(es[999], err)
		}
	}
}
