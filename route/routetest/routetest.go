// Package routetest is the one contract suite every route store runs: route/memory's tests and
// route/redis's tests call Run with a constructor of a fresh store, so both stores are held to the
// same semantics (generations, what follows a device, the registry's TTL, the bus).
//
// Time. A store whose clock the test controls implements Clock (route/memory's test wraps its
// store with a fake clock); the suite then advances it. Against any other store (Redis) the suite
// uses short TTLs and lingers and waits for the real deadline to pass before checking.
package routetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pushwire/pushwire/route"
)

// Clock is implemented by a store under test whose time the suite controls.
type Clock interface {
	// Now is the store's current time.
	Now() time.Time
	// Advance moves the store's time forward.
	Advance(d time.Duration)
}

// short is a linger the suite lets lapse; lapse is a TTL or expiry the suite first checks
// unexpired (so it leaves room for a slow machine) and then lets lapse. On a real clock both are
// waited for.
const (
	short = 300 * time.Millisecond
	lapse = time.Second
)

// Run runs the contract suite; newStore returns a fresh, empty store (the suite closes it).
func Run(t *testing.T, newStore func(t *testing.T) route.Store) {
	cases := []struct {
		name string
		fn   func(t *testing.T, h *harness)
	}{
		{"ClaimGenerations", testClaimGenerations},
		{"ClaimBatchInOrder", testClaimBatchInOrder},
		{"ConcurrentClaimsGetDistinctGens", testConcurrentClaims},
		{"ReleaseRaceKeepsNewer", testReleaseRace},
		{"ReleaseCurrent", testReleaseCurrent},
		{"DeadInstanceEntry", testDeadInstance},
		{"Refresh", testRefresh},
		{"Lookup", testLookup},
		{"Users", testUsers},
		{"Memberships", testMemberships},
		{"Holders", testHolders},
		{"Pending", testPending},
		{"Registry", testRegistry},
		{"BusDelivery", testBus},
		{"BusOrder", testBusOrder},
		{"Batch10000", testBatch10000},
		{"Epoch", testEpoch},
		{"Closed", testClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newStore(t)
			h := &harness{s: s}
			if clk, ok := s.(Clock); ok {
				h.clock = clk
			}
			t.Cleanup(func() { _ = s.Close() })
			c.fn(t, h)
		})
	}
}

type harness struct {
	s     route.Store
	clock Clock
}

func (h *harness) now() time.Time {
	if h.clock != nil {
		return h.clock.Now()
	}
	return time.Now()
}

// elapse lets d pass on the store's clock: advanced when the suite controls it, else waited for
// until the deadline has passed (the condition a TTL in the store depends on).
func (h *harness) elapse(d time.Duration) {
	if h.clock != nil {
		h.clock.Advance(d)
		return
	}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		time.Sleep(min(10*time.Millisecond, time.Until(deadline)+time.Millisecond))
	}
}

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const app = "app1"

func claim1(t *testing.T, s route.Store, dev, user, inst string, conn, gen uint64) route.Claimed {
	t.Helper()
	res, err := s.Claim(ctxOf(t), []route.Claim{{App: app, Device: dev, User: user, Entry: route.Entry{Instance: inst, Conn: conn, Gen: gen}}})
	if err != nil {
		t.Fatalf("Claim %s on %s: %v", dev, inst, err)
	}
	if len(res) != 1 {
		t.Fatalf("Claim: %d answers for 1 claim", len(res))
	}
	return res[0]
}

func release1(t *testing.T, s route.Store, dev, user string, e route.Entry, linger time.Duration) bool {
	t.Helper()
	ok, err := s.Release(ctxOf(t), []route.Release{{App: app, Device: dev, User: user, Entry: e, Linger: linger}})
	if err != nil {
		t.Fatalf("Release %s: %v", dev, err)
	}
	if len(ok) != 1 {
		t.Fatalf("Release: %d answers for 1 release", len(ok))
	}
	return ok[0]
}

func lookup1(t *testing.T, s route.Store, dev string) route.Entry {
	t.Helper()
	es, err := s.Lookup(ctxOf(t), app, []string{dev})
	if err != nil {
		t.Fatalf("Lookup %s: %v", dev, err)
	}
	return es[0]
}

func users1(t *testing.T, s route.Store, user string) []route.Entry {
	t.Helper()
	us, err := s.Users(ctxOf(t), app, []string{user})
	if err != nil {
		t.Fatalf("Users %s: %v", user, err)
	}
	if len(us) != 1 {
		t.Fatalf("Users: %d answers for 1 user", len(us))
	}
	return us[0]
}

func testClaimGenerations(t *testing.T, h *harness) {
	s := h.s
	const big = 1_700_000_000_000_000_123 // a login time in nanoseconds: past a double's precision
	steps := []struct {
		proposed, want uint64
	}{
		{0, 1},                 // first login, nothing proposed
		{0, 2},                 // stored+1
		{1000, 1000},           // proposed above stored
		{5, 1001},              // proposed below stored: stored+1
		{1001, 1002},           // proposed equal to stored: stored+1
		{big, big},             // nanosecond timestamps stay exact
		{big - 7, big + 1},     // ... and so does stored+1
		{1<<64 - 2, 1<<64 - 2}, // the top of the range
		{0, 1<<64 - 1},         // stored+1 carries through every digit
	}
	var prev route.Entry
	for i, st := range steps {
		inst := "A"
		if i%2 == 1 {
			inst = "B"
		}
		res := claim1(t, s, "d1", "", inst, uint64(i+1), st.proposed)
		if res.Gen != st.want {
			t.Fatalf("step %d: proposed %d: gen %d, want %d", i, st.proposed, res.Gen, st.want)
		}
		if res.Previous != prev {
			t.Fatalf("step %d: Previous %+v, want %+v", i, res.Previous, prev)
		}
		want := route.Entry{Instance: inst, Conn: uint64(i + 1), Gen: st.want}
		if got := lookup1(t, s, "d1"); got != want {
			t.Fatalf("step %d: Lookup %+v, want %+v", i, got, want)
		}
		prev = want
	}
	// The same device of another app is another device.
	es, err := s.Lookup(ctxOf(t), "app2", []string{"d1"})
	if err != nil || !es[0].IsZero() {
		t.Fatalf("app2/d1: %+v %v", es, err)
	}
}

func testClaimBatchInOrder(t *testing.T, h *harness) {
	s := h.s
	claims := []route.Claim{
		{App: app, Device: "a", Entry: route.Entry{Instance: "A", Conn: 1, Gen: 10}},
		{App: app, Device: "b", User: "u", Entry: route.Entry{Instance: "A", Conn: 2, Gen: 20}},
		{App: app, Device: "a", Entry: route.Entry{Instance: "B", Conn: 3, Gen: 5}}, // same device again
		{App: app, Device: "c|x", User: "u|v", Entry: route.Entry{Instance: "inst|1", Conn: 4, Gen: 1}},
	}
	res, err := s.Claim(ctxOf(t), claims)
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 4 || res[0].Gen != 10 || res[1].Gen != 20 || res[2].Gen != 11 || res[3].Gen != 1 {
		t.Fatalf("gens %+v", res)
	}
	if (res[2].Previous != route.Entry{Instance: "A", Conn: 1, Gen: 10}) {
		t.Fatalf("the second claim of a in one batch: Previous %+v", res[2].Previous)
	}
	es, err := s.Lookup(ctxOf(t), app, []string{"a", "b", "c|x"})
	if err != nil {
		t.Fatal(err)
	}
	want := []route.Entry{{Instance: "B", Conn: 3, Gen: 11}, {Instance: "A", Conn: 2, Gen: 20}, {Instance: "inst|1", Conn: 4, Gen: 1}}
	if !slices.Equal(es, want) {
		t.Fatalf("Lookup %+v, want %+v", es, want)
	}
	if got := users1(t, s, "u|v"); !slices.Equal(got, want[2:]) {
		t.Fatalf("Users u|v: %+v", got)
	}
	if res, err := s.Claim(ctxOf(t), nil); err != nil || len(res) != 0 {
		t.Fatalf("empty Claim: %v %v", res, err)
	}
}

func testConcurrentClaims(t *testing.T, h *harness) {
	s := h.s
	const n = 32
	gens := make([]uint64, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := s.Claim(ctxOf(t), []route.Claim{{App: app, Device: "hot", Entry: route.Entry{Instance: "I" + strconv.Itoa(i%4), Conn: uint64(i), Gen: 1}}})
			if err != nil {
				errs <- err
				return
			}
			gens[i] = res[0].Gen
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	slices.Sort(gens)
	for i := 1; i < n; i++ {
		if gens[i] == gens[i-1] {
			t.Fatalf("two concurrent claims got gen %d: %v", gens[i], gens)
		}
	}
	if got := lookup1(t, s, "hot"); got.Gen != gens[n-1] {
		t.Fatalf("Lookup gen %d, want the highest given %d", got.Gen, gens[n-1])
	}
}

// The reconnect race: the device logs in on B before A notices the disconnect; A's late release
// must not delete B's entry, nor B's field of the user.
func testReleaseRace(t *testing.T, h *harness) {
	s := h.s
	a := claim1(t, s, "d", "u", "A", 7, 100)
	ea := route.Entry{Instance: "A", Conn: 7, Gen: a.Gen}
	b := claim1(t, s, "d", "u", "B", 9, 0)
	eb := route.Entry{Instance: "B", Conn: 9, Gen: b.Gen}
	if b.Gen <= a.Gen || b.Previous != ea {
		t.Fatalf("B's claim: gen %d (A had %d), Previous %+v", b.Gen, a.Gen, b.Previous)
	}
	if release1(t, s, "d", "u", ea, 0) {
		t.Fatal("A's late release reported as removing the current entry")
	}
	if got := lookup1(t, s, "d"); got != eb {
		t.Fatalf("after A's late release Lookup %+v, want B's %+v", got, eb)
	}
	if got := users1(t, s, "u"); !slices.Equal(got, []route.Entry{eb}) {
		t.Fatalf("after A's late release Users %+v, want B's", got)
	}
	// A release naming B's instance and connection with an old generation is stale as well.
	if release1(t, s, "d", "u", route.Entry{Instance: "B", Conn: 9, Gen: a.Gen}, 0) {
		t.Fatal("a release with an older generation removed the entry")
	}
	// A late refresh from A does not shadow B either.
	cur, err := s.Refresh(ctxOf(t), []route.Claim{{App: app, Device: "d", User: "u", Entry: ea}})
	if err != nil || cur[0] {
		t.Fatalf("A's refresh: current %v, %v; want false", cur, err)
	}
	if got := lookup1(t, s, "d"); got != eb {
		t.Fatalf("after A's refresh Lookup %+v", got)
	}
}

func testReleaseCurrent(t *testing.T, h *harness) {
	s := h.s
	c := claim1(t, s, "d", "u", "A", 1, 0)
	claim1(t, s, "d2", "u", "B", 2, 0)
	e := route.Entry{Instance: "A", Conn: 1, Gen: c.Gen}
	if !release1(t, s, "d", "u", e, 0) {
		t.Fatal("release of the current entry not reported")
	}
	if got := lookup1(t, s, "d"); !got.IsZero() {
		t.Fatalf("Lookup after release %+v", got)
	}
	if got := users1(t, s, "u"); len(got) != 1 || got[0].Instance != "B" {
		t.Fatalf("Users after release %+v, want only d2 on B", got)
	}
	if release1(t, s, "d", "u", e, 0) {
		t.Fatal("second release reported as removing")
	}
	// The released generation stays behind: the next claim gets a higher one, and a refresh of
	// the released connection does not bring it back.
	if cur, err := s.Refresh(ctxOf(t), []route.Claim{{App: app, Device: "d", User: "u", Entry: route.Entry{Instance: "A", Conn: 1, Gen: c.Gen - 1}}}); err != nil || cur[0] {
		t.Fatalf("refresh of an older connection after release: %v %v", cur, err)
	}
	if n := claim1(t, s, "d", "u", "C", 3, 0); n.Gen <= c.Gen || !n.Previous.IsZero() {
		t.Fatalf("claim after release: gen %d (released %d), Previous %+v", n.Gen, c.Gen, n.Previous)
	}
	// Releasing a device the store never saw is not an error.
	if release1(t, s, "nobody", "", route.Entry{Instance: "A", Conn: 1, Gen: 1}, 0) {
		t.Fatal("release of an unknown device reported as removing")
	}
}

// An instance killed with entries in place: its entries stay until the devices claim elsewhere;
// the claim reports the dead entry as Previous and supersedes it; nothing the dead instance
// could still send later (a release, a refresh) touches the new entry.
func testDeadInstance(t *testing.T, h *harness) {
	s := h.s
	var claims []route.Claim
	for i := range 5 {
		claims = append(claims, route.Claim{App: app, Device: "k" + strconv.Itoa(i), User: "ku", Entry: route.Entry{Instance: "dead", Conn: uint64(i + 1), Gen: 50}})
	}
	old, err := s.Claim(ctxOf(t), claims)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		dev := "k" + strconv.Itoa(i)
		n := claim1(t, s, dev, "ku", "live", uint64(100+i), 0)
		if n.Previous.Instance != "dead" || n.Gen <= old[i].Gen {
			t.Fatalf("%s: claim after the dead instance: %+v", dev, n)
		}
	}
	for _, e := range users1(t, s, "ku") {
		if e.Instance != "live" {
			t.Fatalf("user field still names the dead instance: %+v", e)
		}
	}
	for i := range 5 {
		dev := "k" + strconv.Itoa(i)
		if release1(t, s, dev, "ku", route.Entry{Instance: "dead", Conn: uint64(i + 1), Gen: old[i].Gen}, 0) {
			t.Fatalf("%s: the dead instance's release removed the new entry", dev)
		}
		if got := lookup1(t, s, dev); got.Instance != "live" {
			t.Fatalf("%s: Lookup %+v", dev, got)
		}
	}
}

func testRefresh(t *testing.T, h *harness) {
	s := h.s
	// A store that lost the entry (never saw it): refresh writes it back, user included.
	e := route.Entry{Instance: "A", Conn: 3, Gen: 50}
	cur, err := s.Refresh(ctxOf(t), []route.Claim{{App: app, Device: "d", User: "u", Entry: e}})
	if err != nil || !cur[0] {
		t.Fatalf("refresh of a lost entry: %v %v", cur, err)
	}
	if got := lookup1(t, s, "d"); got != e {
		t.Fatalf("Lookup after refresh %+v", got)
	}
	if got := users1(t, s, "u"); !slices.Equal(got, []route.Entry{e}) {
		t.Fatalf("Users after refresh %+v", got)
	}
	// Refreshing the current entry again keeps it current and never changes its generation.
	cur, err = s.Refresh(ctxOf(t), []route.Claim{{App: app, Device: "d", User: "u", Entry: e}})
	if err != nil || !cur[0] || lookup1(t, s, "d") != e {
		t.Fatalf("second refresh: %v %v", cur, err)
	}
	// A claim after a refresh continues from the refreshed generation.
	n := claim1(t, s, "d", "u", "B", 4, 0)
	if n.Gen != 51 || n.Previous != e {
		t.Fatalf("claim after refresh: %+v", n)
	}
	// A refresh never shadows a newer generation.
	cur, err = s.Refresh(ctxOf(t), []route.Claim{
		{App: app, Device: "d", User: "u", Entry: e},
		{App: app, Device: "other", Entry: route.Entry{Instance: "C", Conn: 1, Gen: 1}},
	})
	if err != nil || cur[0] || !cur[1] {
		t.Fatalf("refresh of a superseded entry and a new one: %v %v", cur, err)
	}
	if got := lookup1(t, s, "d"); got != (route.Entry{Instance: "B", Conn: 4, Gen: 51}) {
		t.Fatalf("Lookup after a stale refresh %+v", got)
	}
	if got := users1(t, s, "u"); len(got) != 1 || got[0].Gen != 51 {
		t.Fatalf("Users after a stale refresh %+v", got)
	}
	// A refresh returns nothing that follows the device and does not clear its groups.
	if err := s.SetMembership(ctxOf(t), []route.Membership{{App: app, Device: "d", Group: "g", In: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Refresh(ctxOf(t), []route.Claim{{App: app, Device: "d", User: "u", Entry: route.Entry{Instance: "B", Conn: 4, Gen: 51}}}); err != nil {
		t.Fatal(err)
	}
	if n := claim1(t, s, "d", "u", "B", 5, 0); !slices.Equal(n.Groups, []string{"g"}) {
		t.Fatalf("groups after refresh %v", n.Groups)
	}
}

func testLookup(t *testing.T, h *harness) {
	s := h.s
	var claims []route.Claim
	for i := 0; i < 20; i += 2 {
		claims = append(claims, route.Claim{App: app, Device: "L" + strconv.Itoa(i), Entry: route.Entry{Instance: "I" + strconv.Itoa(i%3), Conn: uint64(i), Gen: uint64(i + 1)}})
	}
	if _, err := s.Claim(ctxOf(t), claims); err != nil {
		t.Fatal(err)
	}
	devs := make([]string, 0, 22)
	for i := 19; i >= 0; i-- {
		devs = append(devs, "L"+strconv.Itoa(i))
	}
	devs = append(devs, "", "L0")
	es, err := s.Lookup(ctxOf(t), app, devs)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != len(devs) {
		t.Fatalf("%d entries for %d devices", len(es), len(devs))
	}
	for i, d := range devs {
		n, _ := strconv.Atoi(d[min(1, len(d)):])
		want := route.Entry{}
		if d != "" && n%2 == 0 {
			want = route.Entry{Instance: "I" + strconv.Itoa(n%3), Conn: uint64(n), Gen: uint64(n + 1)}
		}
		if es[i] != want {
			t.Fatalf("Lookup[%d] %q = %+v, want %+v", i, d, es[i], want)
		}
	}
	if es, err := s.Lookup(ctxOf(t), app, nil); err != nil || len(es) != 0 {
		t.Fatalf("empty Lookup: %v %v", es, err)
	}
}

func testUsers(t *testing.T, h *harness) {
	s := h.s
	e1 := route.Entry{Instance: "A", Conn: 1, Gen: claim1(t, s, "phone", "alice", "A", 1, 0).Gen}
	e2 := route.Entry{Instance: "B", Conn: 2, Gen: claim1(t, s, "laptop", "alice", "B", 2, 0).Gen}
	e3 := route.Entry{Instance: "C", Conn: 3, Gen: claim1(t, s, "tablet", "alice", "C", 3, 0).Gen}
	claim1(t, s, "watch", "bob", "A", 4, 0)
	us, err := s.Users(ctxOf(t), app, []string{"alice", "nobody", "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 3 || len(us[1]) != 0 || len(us[2]) != 1 {
		t.Fatalf("Users %+v", us)
	}
	got := slices.Clone(us[0])
	want := []route.Entry{e1, e2, e3}
	key := func(e route.Entry) string { return e.Instance }
	slices.SortFunc(got, func(a, b route.Entry) int { return compare(key(a), key(b)) })
	if !slices.Equal(got, want) {
		t.Fatalf("alice's devices %+v, want %+v", got, want)
	}
	// The laptop logs in as bob: it leaves alice.
	e2b := claim1(t, s, "laptop", "bob", "B", 5, 0)
	if got := users1(t, s, "alice"); len(got) != 2 || slices.Contains(got, e2) {
		t.Fatalf("alice after the laptop moved to bob: %+v", got)
	}
	if got := users1(t, s, "bob"); len(got) != 2 || !slices.Contains(got, route.Entry{Instance: "B", Conn: 5, Gen: e2b.Gen}) {
		t.Fatalf("bob: %+v", got)
	}
	// The phone reconnects on C: alice's entry for it follows.
	p := claim1(t, s, "phone", "alice", "C", 6, 0)
	if got := users1(t, s, "alice"); !slices.Contains(got, route.Entry{Instance: "C", Conn: 6, Gen: p.Gen}) || slices.Contains(got, e1) {
		t.Fatalf("alice after the phone moved: %+v", got)
	}
}

func compare(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func testMemberships(t *testing.T, h *harness) {
	s := h.s
	c := claim1(t, s, "d", "", "A", 1, 0)
	if len(c.Groups) != 0 {
		t.Fatalf("a new device has groups %v", c.Groups)
	}
	ops := []route.Membership{
		{App: app, Device: "d", Group: "zeta", In: true},
		{App: app, Device: "d", Group: "alpha", In: true},
		{App: app, Device: "d", Group: "mid", In: true},
		{App: app, Device: "d", Group: "mid", In: false},
		{App: app, Device: "d", Group: "alpha", In: true}, // twice is once
		{App: app, Device: "d", Group: "never", In: false},
		{App: app, Device: "other", Group: "x", In: true},
	}
	if err := s.SetMembership(ctxOf(t), ops); err != nil {
		t.Fatal(err)
	}
	want := []string{"alpha", "zeta"}
	// The device reconnects to B before A noticed: the groups follow.
	c2 := claim1(t, s, "d", "", "B", 2, 0)
	if !slices.Equal(c2.Groups, want) {
		t.Fatalf("groups on B %v, want %v", c2.Groups, want)
	}
	e := route.Entry{Instance: "B", Conn: 2, Gen: c2.Gen}
	// They survive a release for the linger ...
	if !release1(t, s, "d", "", e, time.Minute) {
		t.Fatal("release")
	}
	h.elapse(short)
	c3 := claim1(t, s, "d", "", "C", 3, 0)
	if !slices.Equal(c3.Groups, want) {
		t.Fatalf("groups after a release within the linger %v, want %v", c3.Groups, want)
	}
	// ... and are gone after it.
	if !release1(t, s, "d", "", route.Entry{Instance: "C", Conn: 3, Gen: c3.Gen}, short) {
		t.Fatal("release")
	}
	h.elapse(short + 50*time.Millisecond)
	c4 := claim1(t, s, "d", "", "A", 4, 0)
	if len(c4.Groups) != 0 {
		t.Fatalf("groups after the linger %v", c4.Groups)
	}
	// Leaving every group leaves none.
	if err := s.SetMembership(ctxOf(t), []route.Membership{{App: app, Device: "d", Group: "g", In: true}, {App: app, Device: "d", Group: "g", In: false}}); err != nil {
		t.Fatal(err)
	}
	if c5 := claim1(t, s, "d", "", "A", 5, 0); len(c5.Groups) != 0 {
		t.Fatalf("groups after leaving %v", c5.Groups)
	}
	if c := claim1(t, s, "other", "", "A", 6, 0); !slices.Equal(c.Groups, []string{"x"}) {
		t.Fatalf("other's groups %v", c.Groups)
	}
}

func testHolders(t *testing.T, h *harness) {
	s := h.s
	ctx := ctxOf(t)
	if err := s.SetHolding(ctx, []route.Holding{
		{App: app, Group: "g", Instance: "B", Held: true},
		{App: app, Group: "g", Instance: "A", Held: true},
		{App: app, Group: "g", Instance: "C", Held: true},
		{App: app, Group: "h", Instance: "C", Held: true},
		{App: app, Group: "g", Instance: "C", Held: false},
		{App: app, Group: "g", Instance: "Z", Held: false},
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		app, group string
		want       []string
	}{
		{app, "g", []string{"A", "B"}},
		{app, "h", []string{"C"}},
		{app, "none", nil},
		{"app2", "g", nil},
	} {
		got, err := s.Holders(ctx, c.app, c.group)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(c.want) || !slices.Equal(got, c.want) && len(c.want) > 0 {
			t.Fatalf("Holders %s/%s = %v, want %v", c.app, c.group, got, c.want)
		}
	}
	if err := s.SetHolding(ctx, []route.Holding{{App: app, Group: "h", Instance: "C"}}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Holders(ctx, app, "h"); err != nil || len(got) != 0 {
		t.Fatalf("Holders after the last left: %v %v", got, err)
	}
}

func testPending(t *testing.T, h *harness) {
	s := h.s
	ctx := ctxOf(t)
	claim1(t, s, "d", "", "A", 1, 0)
	now := h.now()
	bin := []byte("a|b\x00c|\xff")
	msgs := []route.Pending{
		{App: app, Device: "d", ID: "m1", Data: []byte("one"), Expires: now.Add(time.Hour)},
		{App: app, Device: "d", ID: "m2", Data: bin, Expires: now.Add(time.Hour)},
		{App: app, Device: "d", ID: "soon", Data: []byte("short"), Expires: now.Add(lapse)},
		{App: app, Device: "d", ID: "m3", Data: []byte("three"), Expires: now.Add(time.Hour)},
		{App: app, Device: "d", ID: "past", Data: []byte("gone"), Expires: now.Add(-time.Second)},
		{App: app, Device: "e", ID: "m1", Data: []byte("e's"), Expires: now.Add(time.Hour)},
	}
	if err := s.AddPending(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	ids := func(ps []route.Pending) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.ID)
		}
		return out
	}
	// The device reconnects on B: its pending messages come with the claim, oldest first.
	c2 := claim1(t, s, "d", "", "B", 2, 0)
	if got := ids(c2.Pending); !slices.Equal(got, []string{"m1", "m2", "soon", "m3"}) {
		t.Fatalf("pending %v", got)
	}
	p := c2.Pending[1]
	if p.App != app || p.Device != "d" || !bytes.Equal(p.Data, bin) || !p.Expires.Equal(msgs[1].Expires.Truncate(time.Millisecond)) && !p.Expires.Equal(msgs[1].Expires) {
		t.Fatalf("pending m2 = %+v", p)
	}
	if err := s.Ack(ctx, []route.Ack{{App: app, Device: "d", ID: "m2"}, {App: app, Device: "d", ID: "unknown"}, {App: app, Device: "nobody", ID: "x"}}); err != nil {
		t.Fatal(err)
	}
	h.elapse(lapse + 50*time.Millisecond)
	// Released and claimed again (a lingering device keeps them too): expired ones never return.
	if !release1(t, s, "d", "", route.Entry{Instance: "B", Conn: 2, Gen: c2.Gen}, time.Minute) {
		t.Fatal("release")
	}
	c3 := claim1(t, s, "d", "", "C", 3, 0)
	if got := ids(c3.Pending); !slices.Equal(got, []string{"m1", "m3"}) {
		t.Fatalf("pending after ack and expiry %v", got)
	}
	if err := s.Ack(ctx, []route.Ack{{App: app, Device: "d", ID: "m1"}, {App: app, Device: "d", ID: "m3"}}); err != nil {
		t.Fatal(err)
	}
	if c4 := claim1(t, s, "d", "", "C", 4, 0); len(c4.Pending) != 0 {
		t.Fatalf("pending after every ack %v", ids(c4.Pending))
	}
	// A message for a device that is not online waits for its claim.
	if ce := claim1(t, s, "e", "", "A", 5, 0); !slices.Equal(ids(ce.Pending), []string{"m1"}) || string(ce.Pending[0].Data) != "e's" {
		t.Fatalf("e's pending %+v", ce.Pending)
	}
}

func testRegistry(t *testing.T, h *harness) {
	s := h.s
	ctx := ctxOf(t)
	a := route.Instance{ID: "gw-a", Engine: "gnet", HTTP: "http://127.0.0.1:8001", Conns: 10,
		Endpoints: []route.Endpoint{{Protocol: "tcp", Addr: "127.0.0.1:9001"}, {Protocol: "ws", Addr: "127.0.0.1:9101"}}}
	b := route.Instance{ID: "gw-b", Engine: "std", HTTP: "http://127.0.0.1:8002", Conns: 5, Draining: true,
		Endpoints: []route.Endpoint{{Protocol: "tcp", Addr: "127.0.0.1:9002"}}}
	before := h.now()
	for _, inst := range []route.Instance{b, a} {
		if err := s.Register(ctx, inst, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "gw-a" || list[1].ID != "gw-b" {
		t.Fatalf("Instances %+v", list)
	}
	got := list[0]
	if got.Engine != a.Engine || got.HTTP != a.HTTP || got.Conns != 10 || got.Draining || !slices.Equal(got.Endpoints, a.Endpoints) {
		t.Fatalf("gw-a = %+v, want %+v", got, a)
	}
	if !list[1].Draining {
		t.Fatal("gw-b lost Draining")
	}
	if got.Updated.Before(before.Add(-time.Second)) || got.Expires.Before(got.Updated.Add(time.Minute-time.Second)) {
		t.Fatalf("gw-a Updated %v Expires %v (registered at %v for a minute)", got.Updated, got.Expires, before)
	}
	// Refreshing updates the load.
	a.Conns = 99
	if err := s.Register(ctx, a, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.Deregister(ctx, "gw-b"); err != nil {
		t.Fatal(err)
	}
	if err := s.Deregister(ctx, "never-registered"); err != nil {
		t.Fatal(err)
	}
	// An instance whose TTL lapses is never listed again, though nobody deregistered it.
	c := route.Instance{ID: "gw-c", Engine: "nbio", Endpoints: []route.Endpoint{{Protocol: "tcp", Addr: "127.0.0.1:9003"}}}
	if err := s.Register(ctx, c, lapse); err != nil {
		t.Fatal(err)
	}
	list, err = s.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "gw-a" || list[0].Conns != 99 || list[1].ID != "gw-c" {
		t.Fatalf("Instances after refresh, deregister and a short registration: %+v", list)
	}
	h.elapse(lapse + 50*time.Millisecond)
	list, err = s.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "gw-a" {
		t.Fatalf("Instances after gw-c's TTL lapsed: %+v", list)
	}
	// It registers again: it is back.
	if err := s.Register(ctx, c, time.Minute); err != nil {
		t.Fatal(err)
	}
	if list, err = s.Instances(ctx); err != nil || len(list) != 2 {
		t.Fatalf("Instances after gw-c came back: %+v %v", list, err)
	}
}

// sub is a running Subscribe with what it received.
type sub struct {
	mu   sync.Mutex
	got  [][]byte
	ups  []bool
	upCh chan bool
	done chan error
	stop context.CancelFunc
}

func subscribe(t *testing.T, s route.Store, instance string) *sub {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	x := &sub{upCh: make(chan bool, 16), done: make(chan error, 1), stop: cancel}
	go func() {
		x.done <- s.Subscribe(ctx, instance, func(data []byte) {
			x.mu.Lock()
			x.got = append(x.got, slices.Clone(data))
			x.mu.Unlock()
		}, func(up bool) {
			x.mu.Lock()
			x.ups = append(x.ups, up)
			x.mu.Unlock()
			x.upCh <- up
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-x.done:
			if err != nil && !errors.Is(err, route.ErrClosed) {
				t.Errorf("Subscribe %s returned %v", instance, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("Subscribe %s did not return after its context ended", instance)
		}
	})
	select {
	case up := <-x.upCh:
		if !up {
			t.Fatalf("Subscribe %s: first up(%v)", instance, up)
		}
	case err := <-x.done:
		t.Fatalf("Subscribe %s returned at once: %v", instance, err)
	case <-time.After(10 * time.Second):
		t.Fatalf("Subscribe %s: no up(true)", instance)
	}
	return x
}

func (x *sub) received() [][]byte {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.got)
}

// waitFor polls cond until it holds or 10 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testBus(t *testing.T, h *harness) {
	s := h.s
	ctx := ctxOf(t)
	a := subscribe(t, s, "A")
	b := subscribe(t, s, "B")
	n, err := s.Publish(ctx, []route.Message{
		{To: "A", Data: []byte("to-a")},
		{To: "", Data: []byte("to-all")},
		{To: "Z", Data: []byte("to-nobody")},
		{To: "B", Data: []byte("to-b\x00|bin")},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(n, []int{1, 2, 0, 1}) {
		t.Fatalf("receivers %v, want [1 2 0 1]", n)
	}
	str := func(bs [][]byte) []string {
		var out []string
		for _, b := range bs {
			out = append(out, string(b))
		}
		return out
	}
	waitFor(t, "A's two messages", func() bool { return len(a.received()) >= 2 })
	waitFor(t, "B's two messages", func() bool { return len(b.received()) >= 2 })
	if got := str(a.received()); !slices.Equal(got, []string{"to-a", "to-all"}) {
		t.Fatalf("A got %q", got)
	}
	if got := str(b.received()); !slices.Equal(got, []string{"to-all", "to-b\x00|bin"}) {
		t.Fatalf("B got %q", got)
	}
	// A subscriber that ended no longer counts.
	b.stop()
	select {
	case err := <-b.done:
		if err != nil {
			t.Fatalf("Subscribe returned %v when its context ended, want nil", err)
		}
		b.done <- err // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe did not return when its context ended")
	}
	waitFor(t, "B's subscription to end", func() bool {
		n, err := s.Publish(ctx, []route.Message{{To: "B", Data: []byte("late")}})
		return err == nil && n[0] == 0
	})
	if n, err := s.Publish(ctx, []route.Message{{Data: []byte("all-again")}}); err != nil || n[0] != 1 {
		t.Fatalf("broadcast with only A: %v %v", n, err)
	}
	waitFor(t, "A's third message", func() bool { return len(a.received()) == 3 })
	if n, err := s.Publish(ctx, nil); err != nil || len(n) != 0 {
		t.Fatalf("empty Publish: %v %v", n, err)
	}
}

func testBusOrder(t *testing.T, h *harness) {
	s := h.s
	ctx := ctxOf(t)
	a := subscribe(t, s, "A")
	const total = 1000
	sent := 0
	for sent < total {
		var batch []route.Message
		for i := 0; i < 100; i++ {
			to := "A"
			if sent%3 == 0 {
				to = ""
			}
			batch = append(batch, route.Message{To: to, Data: []byte(strconv.Itoa(sent))})
			sent++
		}
		n, err := s.Publish(ctx, batch)
		if err != nil {
			t.Fatal(err)
		}
		for i, r := range n {
			if r != 1 {
				t.Fatalf("message %d: receivers %d", sent-100+i, r)
			}
		}
	}
	waitFor(t, "every message", func() bool { return len(a.received()) == total })
	for i, b := range a.received() {
		if string(b) != strconv.Itoa(i) {
			t.Fatalf("message %d is %q: order lost", i, b)
		}
	}
}

func testBatch10000(t *testing.T, h *harness) {
	s := h.s
	ctx := ctxOf(t)
	const n = 10000
	claims := make([]route.Claim, n)
	devs := make([]string, n+1)
	for i := range claims {
		dev := fmt.Sprintf("dev-%05d", i)
		claims[i] = route.Claim{App: app, Device: dev, Entry: route.Entry{Instance: "I" + strconv.Itoa(i%4), Conn: uint64(i + 1), Gen: 1}}
		devs[n-i] = dev
	}
	devs[0] = "unknown"
	if _, err := s.Claim(ctx, claims); err != nil {
		t.Fatal(err)
	}
	es, err := s.Lookup(ctx, app, devs)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != n+1 || !es[0].IsZero() {
		t.Fatalf("%d entries, first %+v", len(es), es[0])
	}
	for j := 1; j <= n; j++ {
		i := n - j
		want := route.Entry{Instance: "I" + strconv.Itoa(i%4), Conn: uint64(i + 1), Gen: 1}
		if es[j] != want {
			t.Fatalf("Lookup %s = %+v, want %+v", devs[j], es[j], want)
		}
	}
}

func testClosed(t *testing.T, h *harness) {
	s := h.s
	ctx := ctxOf(t)
	x := subscribe(t, s, "A")
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-x.done:
		x.done <- err
	case <-time.After(10 * time.Second):
		t.Fatal("Subscribe still running after Close")
	}
	checks := map[string]error{
		"Ping": s.Ping(ctx),
	}
	_, checks["Claim"] = s.Claim(ctx, []route.Claim{{App: app, Device: "d", Entry: route.Entry{Instance: "A", Gen: 1}}})
	_, checks["Lookup"] = s.Lookup(ctx, app, []string{"d"})
	_, checks["Publish"] = s.Publish(ctx, []route.Message{{To: "A"}})
	_, checks["Instances"] = s.Instances(ctx)
	checks["Register"] = s.Register(ctx, route.Instance{ID: "x"}, time.Minute)
	for op, err := range checks {
		if !errors.Is(err, route.ErrClosed) {
			t.Errorf("%s after Close: %v, want route.ErrClosed", op, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// testEpoch: the store's epoch is set by the first call and the same for every later one.
func testEpoch(t *testing.T, h *harness) {
	s := h.s
	ctx := ctxOf(t)
	first, err := s.Epoch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if first.IsZero() {
		t.Fatal("Epoch: the zero time")
	}
	claim1(t, s, "d", "", "A", 1, 0)
	again, err := s.Epoch(ctx)
	if err != nil || !again.Equal(first) {
		t.Fatalf("Epoch again: %v %v, want %v", again, err, first)
	}
}
