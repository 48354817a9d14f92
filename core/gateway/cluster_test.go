package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/route"
	"github.com/pushwire/pushwire/route/memory"
)

// flaky is the route store of a test that takes the store down: the real in-memory store behind
// it, every call failing while down (the bus subscription stays: the writer's pings bring the
// node back in step).
type flaky struct {
	route.Store
	down                    atomic.Bool
	lookups, users, publish atomic.Int64 // calls
}

var errDown = errors.New("store down")

func (f *flaky) err() error {
	if f.down.Load() {
		return errDown
	}
	return nil
}

func (f *flaky) Claim(ctx context.Context, c []route.Claim) ([]route.Claimed, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Claim(ctx, c)
}

func (f *flaky) Release(ctx context.Context, r []route.Release) ([]bool, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Release(ctx, r)
}

func (f *flaky) Refresh(ctx context.Context, c []route.Claim) ([]bool, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Refresh(ctx, c)
}

func (f *flaky) Lookup(ctx context.Context, app string, d []string) ([]route.Entry, error) {
	f.lookups.Add(1)
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Lookup(ctx, app, d)
}

func (f *flaky) Users(ctx context.Context, app string, u []string) ([][]route.Entry, error) {
	f.users.Add(1)
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Users(ctx, app, u)
}

func (f *flaky) SetMembership(ctx context.Context, ops []route.Membership) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.SetMembership(ctx, ops)
}

func (f *flaky) SetHolding(ctx context.Context, ops []route.Holding) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.SetHolding(ctx, ops)
}

func (f *flaky) Holders(ctx context.Context, app, group string) ([]string, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Holders(ctx, app, group)
}

func (f *flaky) AddPending(ctx context.Context, p []route.Pending) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.AddPending(ctx, p)
}

func (f *flaky) Ack(ctx context.Context, a []route.Ack) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.Ack(ctx, a)
}

func (f *flaky) Register(ctx context.Context, inst route.Instance, ttl time.Duration) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.Register(ctx, inst, ttl)
}

func (f *flaky) Instances(ctx context.Context) ([]route.Instance, error) {
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Instances(ctx)
}

func (f *flaky) Publish(ctx context.Context, msgs []route.Message) ([]int, error) {
	f.publish.Add(1)
	if err := f.err(); err != nil {
		return nil, err
	}
	return f.Store.Publish(ctx, msgs)
}

func (f *flaky) Ping(ctx context.Context) error {
	if err := f.err(); err != nil {
		return err
	}
	return f.Store.Ping(ctx)
}

// testCluster is k started nodes n0..n(k-1) on one in-memory route store.
type testCluster struct {
	clock *testClock // the nodes' and the store's
	store *flaky
	nodes []*testNode
}

func newCluster(t *testing.T, k int, mode string) *testCluster {
	t.Helper()
	clock := newTestClock()
	return newClusterOn(t, k, mode, memory.New(memory.WithClock(clock.Now)), clock)
}

// nodeClock is the nodes' shared clock, or none (each its own) when c is nil.
func nodeClock(c *testClock) Clock {
	if c == nil {
		return nil
	}
	return c
}

// newClusterOn is k nodes on st, closed at the end of the test.
func newClusterOn(t *testing.T, k int, mode string, st route.Store, clock *testClock) *testCluster {
	t.Helper()
	store := &flaky{Store: st}
	t.Cleanup(func() { _ = store.Close() })
	tc := &testCluster{store: store, clock: clock}
	for i := range k {
		n := newNode(t, Config{Node: fmt.Sprintf("n%d", i), Route: store, Mode: mode, Businesses: echoBusinesses(),
			RemoteTimeout: wait, Clock: nodeClock(clock)})
		tc.nodes = append(tc.nodes, n)
	}
	tc.refresh(t)
	for _, n := range tc.nodes {
		eventually(t, n.cfg.Node+" settled with the store", n.settled)
	}
	return tc
}

// echoBusinesses is biz 1, allowing joins, with a backend nobody calls.
func echoBusinesses() map[uint16]Business {
	return map[uint16]Business{bizEcho: {Biz: bizAt("http://127.0.0.1:1"), AllowJoin: true}}
}

// eventually waits for cond, polling.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", wait, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// refresh makes every running node see every registered instance and subscribed to the bus.
func (tc *testCluster) refresh(t *testing.T) {
	t.Helper()
	for _, n := range tc.nodes {
		if n.stopped {
			continue
		}
		eventually(t, n.cfg.Node+" subscribed", func() bool { return n.cl.upBefore.Load() })
	}
	for _, n := range tc.nodes {
		if !n.stopped {
			eventually(t, n.cfg.Node+" registered", func() bool { return n.registerInstance(context.Background()) == nil })
		}
	}
	tc.settle(t)
}

// settle waits until every running node's route writer has sent what it queued.
func (tc *testCluster) settle(t *testing.T) {
	t.Helper()
	for _, n := range tc.nodes {
		if !n.stopped {
			eventually(t, n.cfg.Node+"'s route writes", n.cl.w.idle)
		}
	}
}

// entry is the store's entry of a device.
func (tc *testCluster) entry(t *testing.T, device string) route.Entry {
	t.Helper()
	e, err := tc.store.Store.Lookup(context.Background(), "app", []string{device})
	if err != nil {
		t.Fatal(err)
	}
	return e[0]
}

// expectPush reads one PUSH from each pipe, with the payload, and then nothing more.
func expectPush(t *testing.T, payload string, pipes ...*pipe) []frame.Frame {
	t.Helper()
	out := make([]frame.Frame, 0, len(pipes))
	for _, p := range pipes {
		f := p.expect(t, frame.TypePush, frame.CodeOK)
		if string(f.Body) != payload {
			t.Fatalf("conn %d: push %q, want %q", p.id, f.Body, payload)
		}
		p.silent(t)
		out = append(out, f)
	}
	return out
}

// checkSums checks that an answer accounts for every target.
func checkSums(t *testing.T, r PushResult) {
	t.Helper()
	if r.Targets != r.Delivered+r.Forwarded+r.Offline+r.Failed {
		t.Fatalf("targets %d != delivered %d + forwarded %d + offline %d + failed %d", r.Targets, r.Delivered, r.Forwarded, r.Offline, r.Failed)
	}
	if rr := r.Remote; rr != nil && rr.Reported == rr.Instances && r.Forwarded != rr.Delivered+rr.Offline+rr.Stale+rr.Failed {
		t.Fatalf("forwarded %d != remote %+v", r.Forwarded, *rr)
	}
}

// TestClusterPush: a push by device, by user, to a group and to the whole app, sent to each
// node, reaches every target on every node exactly once, in both modes, and the answer adds up.
func TestClusterPush(t *testing.T) {
	for _, mode := range []string{route.ModeRegistry, route.ModeBroadcast} {
		t.Run(mode, func(t *testing.T) { clusterPush(t, newCluster(t, 3, mode)) })
	}
}

func clusterPush(t *testing.T, tc *testCluster) {
	{
		{
			var devs, users []string
			var all, room, multi []*pipe
			for i, n := range tc.nodes {
				d := fmt.Sprintf("d%d", i)
				p := n.connect(t, d, fmt.Sprintf("u%d", i))
				m := n.connect(t, fmt.Sprintf("m%d", i), "multi")
				devs = append(devs, d)
				users = append(users, fmt.Sprintf("u%d", i))
				all = append(all, p, m)
				multi = append(multi, m)
				p.send(frame.Header{Type: frame.TypeJoin, Biz: bizEcho, Seq: 2}, frame.AppendMetaString(nil, "group", "room"), nil)
				p.expect(t, frame.TypeResponse, frame.CodeOK)
				room = append(room, p)
			}
			tc.settle(t)
			var single []*pipe
			for i := range tc.nodes {
				single = append(single, all[2*i])
			}
			cases := []struct {
				name    string
				req     PushRequest
				to      []*pipe
				targets int
				offline int
			}{
				{"devices", PushRequest{Devices: append(slices.Clone(devs), "nobody")}, single, 4, 1},
				{"users", PushRequest{Users: append(slices.Clone(users), "multi")}, all, 6, 0},
				{"multi", PushRequest{Users: []string{"multi"}}, multi, 3, 0},
				{"group", PushRequest{Group: "room"}, room, 3, 0},
				{"broadcast", PushRequest{Broadcast: true}, all, 6, 0},
			}
			for _, tcase := range cases {
				for i, n := range tc.nodes {
					t.Run(fmt.Sprintf("%s/from-n%d", tcase.name, i), func(t *testing.T) {
						req := tcase.req
						req.App, req.Biz = "app", bizEcho
						req.Payload = fmt.Appendf(nil, "%s-%d", tcase.name, i)
						res, err := n.Push(&req)
						if err != nil {
							t.Fatal(err)
						}
						checkSums(t, res)
						expectPush(t, string(req.Payload), tcase.to...)
						for _, p := range all {
							p.silent(t)
						}
						if res.Targets != tcase.targets || res.Offline+res.Remote.Offline != tcase.offline || res.Failed != 0 {
							t.Fatalf("%+v (remote %+v): want %d targets, %d offline, none failed", res, res.Remote, tcase.targets, tcase.offline)
						}
						if res.Remote.Reported != res.Remote.Instances || res.Remote.Instances == 0 {
							t.Fatalf("remote %+v: want every instance's report", res.Remote)
						}
					})
				}
			}
		}
	}
}

// TestClusterReconnectRace: a device logs in on B before A processed its close: A's connection
// is kicked (GOAWAY EVICTED) and A's late release does not delete B's entry.
func TestClusterReconnectRace(t *testing.T) {
	tc := newCluster(t, 3, route.ModeRegistry)
	a, b, c := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	pa := a.connect(t, "d", "u")
	tc.settle(t)
	pb := b.connect(t, "d", "u")
	f := pa.expect(t, frame.TypeGoaway, frame.CodeEvicted)
	_ = f
	pa.waitClosed(t)
	tc.settle(t)
	if e := tc.entry(t, "d"); e.Instance != "n1" || e.Conn != pb.id || e.Gen != pb.client().gen.Load() {
		t.Fatalf("entry %+v, want n1's connection %d gen %d", e, pb.id, pb.client().gen.Load())
	}
	res, err := c.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"d"}, Payload: []byte("after")})
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, res)
	if res.Forwarded != 1 || res.Remote.Delivered != 1 {
		t.Fatalf("%+v %+v", res, res.Remote)
	}
	expectPush(t, "after", pb)
	// A's release, late and replayed, changes nothing.
	ok, err := tc.store.Store.Release(context.Background(), []route.Release{{App: "app", Device: "d", User: "u",
		Entry: route.Entry{Instance: "n0", Conn: pa.id, Gen: pa.client().gen.Load()}}})
	if err != nil || ok[0] {
		t.Fatalf("late release: %v %v", ok, err)
	}
	if e := tc.entry(t, "d"); e.Instance != "n1" {
		t.Fatalf("entry %+v after the late release", e)
	}
}

// TestClusterKilledInstance: an instance stops with its entries in place; pushes to its devices
// are counted failed (never offline, never lost silently), and reach them once they log in
// elsewhere.
func TestClusterKilledInstance(t *testing.T) {
	tc := newCluster(t, 3, route.ModeRegistry)
	a, b, c := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	pc := c.connect(t, "d", "u")
	tc.settle(t)
	// Killed: no close reaches the node; its entries stay.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	_ = pc
	if e := tc.entry(t, "d"); e.Instance != "n2" {
		t.Fatalf("entry %+v", e)
	}
	for _, req := range []PushRequest{{Devices: []string{"d"}}, {Users: []string{"u"}}} {
		req.App, req.Biz, req.Payload = "app", bizEcho, []byte("lost?")
		res, err := a.Push(&req)
		if err != nil {
			t.Fatal(err)
		}
		checkSums(t, res)
		if res.Failed != 1 || res.Offline != 0 || res.Forwarded != 0 {
			t.Fatalf("%+v: want the target failed", res)
		}
	}
	pb := b.connect(t, "d", "u")
	tc.settle(t)
	res, err := a.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"d"}, Payload: []byte("found")})
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, res)
	if res.Forwarded != 1 || res.Remote.Delivered != 1 {
		t.Fatalf("%+v %+v", res, res.Remote)
	}
	expectPush(t, "found", pb)
}

// TestClusterStaleEntry: an entry that names a connection its instance no longer has is reported
// stale by that instance.
func TestClusterStaleEntry(t *testing.T) {
	tc := newCluster(t, 2, route.ModeRegistry)
	a, b := tc.nodes[0], tc.nodes[1]
	pb := b.connect(t, "d", "u")
	tc.settle(t)
	// An entry with a newer generation than B's connection, as a slow instance would leave it.
	if _, err := tc.store.Store.Refresh(context.Background(), []route.Claim{{App: "app", Device: "d", User: "u",
		Entry: route.Entry{Instance: "n1", Conn: pb.id + 100, Gen: pb.client().gen.Load() + 1}}}); err != nil {
		t.Fatal(err)
	}
	res, err := a.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"d"}, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, res)
	if res.Forwarded != 1 || res.Remote.Stale != 1 {
		t.Fatalf("%+v %+v: want one stale", res, res.Remote)
	}
	pb.silent(t)
	if v := counterValue(t, b.m.stale); v != 1 {
		t.Fatalf("stale counted %v", v)
	}
}

// TestClusterUnsettledStore: a device or user missing from a store that lost its data within an
// instance TTL, or while the node is out of step with it, is counted failed (unknown), never
// offline; once the store settled it is offline.
func TestClusterUnsettledStore(t *testing.T) {
	tc := newCluster(t, 2, route.ModeRegistry)
	a := tc.nodes[0]
	settledEpoch := a.cl.epoch.Load()
	for _, c := range []struct {
		name  string
		setup func()
	}{
		{"the store lost its data", func() { a.cl.epoch.Store(time.Now().UnixNano()) }},
		{"bus down", func() { a.cl.up.Store(false) }},
		{"resync pending", func() { a.cl.w.resync.Store(true) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := counterValue(t, a.m.unknown)
			c.setup()
			for _, req := range []PushRequest{{Devices: []string{"nowhere"}}, {Users: []string{"nobody"}}} {
				req.App, req.Biz, req.Payload = "app", bizEcho, []byte("x")
				res, err := a.Push(&req)
				if err != nil {
					t.Fatal(err)
				}
				checkSums(t, res)
				if res.Failed != 1 || res.Offline != 0 {
					t.Fatalf("%+v: want the missing target failed, not offline", res)
				}
			}
			if v := counterValue(t, a.m.unknown) - before; v != 2 {
				t.Fatalf("unknown counted %v, want 2", v)
			}
			a.cl.epoch.Store(settledEpoch)
			a.cl.up.Store(true)
			a.cl.w.resync.Store(false)
			res, err := a.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"nowhere"}, Payload: []byte("x")})
			if err != nil {
				t.Fatal(err)
			}
			if res.Offline != 1 || res.Failed != 0 {
				t.Fatalf("settled: %+v, want offline", res)
			}
		})
	}
}

// TestClusterPendingFollowsDevice: an at-least-once push not acknowledged on A is delivered when
// the device logs in on B; once acknowledged, not again.
func TestClusterPendingFollowsDevice(t *testing.T) {
	tc := newCluster(t, 3, route.ModeRegistry)
	a, b, c := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	pa := a.connect(t, "d", "u")
	tc.settle(t)
	res, err := c.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"d"}, Payload: []byte("keep"), Ack: true})
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, res)
	if res.Forwarded != 1 || res.Remote.Delivered != 1 {
		t.Fatalf("%+v %+v", res, res.Remote)
	}
	f := expectPush(t, "keep", pa)[0]
	if f.Flags&frame.FlagAck == 0 {
		t.Fatal("no ACK flag")
	}
	tc.settle(t)
	pa.hangUp()
	tc.settle(t)
	pb := b.connect(t, "d", "u")
	g := expectPush(t, "keep", pb)[0]
	if g.Meta.GetString("id") != f.Meta.GetString("id") {
		t.Fatalf("resent id %q, want %q", g.Meta.GetString("id"), f.Meta.GetString("id"))
	}
	pb.send(frame.Header{Type: frame.TypePushAck}, frame.AppendMetaString(nil, "id", g.Meta.GetString("id")), nil)
	tc.settle(t)
	pb.hangUp()
	tc.settle(t)
	pc := c.connect(t, "d", "u")
	tc.settle(t)
	pc.silent(t)
}

// TestClusterGroupsFollowDevice: a device's groups follow it to its next connection on another
// node, where group pushes reach it; a LEAVE is remembered too.
func TestClusterGroupsFollowDevice(t *testing.T) {
	tc := newCluster(t, 3, route.ModeRegistry)
	a, b, c := tc.nodes[0], tc.nodes[1], tc.nodes[2]
	pa := a.connect(t, "d", "u")
	for _, g := range []string{"room", "hall"} {
		pa.send(frame.Header{Type: frame.TypeJoin, Biz: bizEcho, Seq: 2}, frame.AppendMetaString(nil, "group", g), nil)
		pa.expect(t, frame.TypeResponse, frame.CodeOK)
	}
	pa.send(frame.Header{Type: frame.TypeLeave, Biz: bizEcho, Seq: 3}, frame.AppendMetaString(nil, "group", "hall"), nil)
	pa.expect(t, frame.TypeResponse, frame.CodeOK)
	tc.settle(t)
	pa.hangUp()
	tc.settle(t)
	pb := b.connect(t, "d", "u")
	tc.settle(t)
	if got := pb.client().groupsOf(); !slices.Equal(got, []string{"room"}) {
		t.Fatalf("groups on the new connection: %v", got)
	}
	res, err := c.Push(&PushRequest{App: "app", Biz: bizEcho, Group: "room", Payload: []byte("g")})
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, res)
	if res.Targets != 1 || res.Forwarded != 1 || res.Remote == nil || res.Remote.Instances != 1 {
		t.Fatalf("%+v %+v: want the one holder", res, res.Remote)
	}
	expectPush(t, "g", pb)
}

// TestClusterMembersAPI: the membership API on one node for a device held on another forwards the
// change to its holder.
func TestClusterMembersAPI(t *testing.T) {
	tc := newCluster(t, 2, route.ModeRegistry)
	a, b := tc.nodes[0], tc.nodes[1]
	pb := b.connect(t, "d", "u")
	tc.settle(t)
	var res membersResult
	if code := call(t, a.Handler(), "PUT", "/v1/groups/room/members", `{"devices":["d","nobody"]}`, &res); code != 200 {
		t.Fatalf("%d %+v", code, res)
	}
	if res.Forwarded != 1 || res.Offline != 1 || res.Changed != 0 {
		t.Fatalf("%+v", res)
	}
	eventually(t, "the join on n1", func() bool { return slices.Equal(pb.client().groupsOf(), []string{"room"}) })
	tc.settle(t)
	if code := call(t, a.Handler(), "DELETE", "/v1/groups/room/members", `{"devices":["d"]}`, &res); code != 200 || res.Forwarded != 1 {
		t.Fatalf("%d %+v", code, res)
	}
	eventually(t, "the leave on n1", func() bool { return len(pb.client().groupsOf()) == 0 })
}

// TestClusterStoreDown: with the store down, local deliveries go on and remote targets are
// counted failed; logins meanwhile are re-asserted once it is back.
func TestClusterStoreDown(t *testing.T) {
	tc := newCluster(t, 2, route.ModeRegistry)
	a, b := tc.nodes[0], tc.nodes[1]
	pa := a.connect(t, "da", "u")
	pb := b.connect(t, "db", "u")
	tc.settle(t)
	tc.store.down.Store(true)
	res, err := a.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"da", "db"}, Payload: []byte("down")})
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, res)
	if res.Delivered != 1 || res.Failed != 1 || res.Offline != 0 {
		t.Fatalf("%+v: want the local one delivered, the remote one failed", res)
	}
	expectPush(t, "down", pa)
	pb.silent(t)
	late := a.connect(t, "late", "v")
	eventually(t, "a resync pending", func() bool { return a.cl.w.resync.Load() })
	tc.settle(t)
	tc.store.down.Store(false)
	eventually(t, "the resync", func() bool {
		e := tc.entry(t, "late")
		return e.Instance == "n0" && e.Conn == late.id && counterValue(t, a.m.resyncs) >= 1
	})
	res, err = b.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"late"}, Payload: []byte("back")})
	if err != nil {
		t.Fatal(err)
	}
	checkSums(t, res)
	expectPush(t, "back", late)
}

// TestClusterDrainRegisters: a draining node says so in the registry at once, and leaves it at
// Stop.
func TestClusterDrainRegisters(t *testing.T) {
	tc := newCluster(t, 2, route.ModeRegistry)
	a := tc.nodes[0]
	a.cfg.DrainWindow = time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := a.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	list, err := tc.store.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != "n0" || !list[0].Draining || list[1].Draining {
		t.Fatalf("instances %+v", list)
	}
	if err := a.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	list, _ = tc.store.Instances(ctx)
	if len(list) != 1 || list[0].ID != "n1" {
		t.Fatalf("instances after Stop %+v", list)
	}
}

// TestClusterStoreDownAnswers: with the store down, no remote target is ever counted offline.
func TestClusterStoreDownAnswers(t *testing.T) {
	tc := newCluster(t, 2, route.ModeRegistry)
	a := tc.nodes[0]
	pa := a.connect(t, "da", "ua")
	tc.settle(t)
	tc.store.down.Store(true)
	cases := []struct {
		name string
		req  PushRequest
		want PushResult
	}{
		{"users", PushRequest{Users: []string{"ua", "ub"}}, PushResult{Targets: 2, Delivered: 1, Failed: 1}},
		{"group", PushRequest{Group: "room"}, PushResult{Targets: 1, Failed: 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.req.App, c.req.Biz, c.req.Payload = "app", bizEcho, []byte(c.name)
			res, err := a.Push(&c.req)
			if err != nil {
				t.Fatal(err)
			}
			checkSums(t, res)
			res.ID, res.Remote = "", nil
			if res != c.want {
				t.Fatalf("%+v, want %+v", res, c.want)
			}
			if c.name == "users" {
				expectPush(t, c.name, pa)
			}
		})
	}
	if v := counterValue(t, a.m.routeOps.WithLabelValues("users", "error")); v != 1 {
		t.Fatalf("route_ops_total{users,error} %v", v)
	}
}

// TestClusterAlone: one instance on a route store, in broadcast mode, counts the devices it does
// not hold offline without sending anything.
func TestClusterAlone(t *testing.T) {
	tc := newCluster(t, 1, route.ModeBroadcast)
	n := tc.nodes[0]
	p := n.connect(t, "d", "u")
	res, err := n.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"d", "x"}, Payload: []byte("a")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Targets != 2 || res.Delivered != 1 || res.Offline != 1 || res.Remote != nil {
		t.Fatalf("%+v", res)
	}
	expectPush(t, "a", p)
	rec := httptest.NewRecorder()
	n.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, name := range []string{"pushwire_route_ops_total", "pushwire_route_queue", "pushwire_route_resyncs_total", "pushwire_route_stale_total"} {
		if !strings.Contains(rec.Body.String(), name) {
			t.Errorf("/metrics has no %s", name)
		}
	}
}

func TestClusterConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want string
	}{
		{Config{Mode: "gossip"}, `mode "gossip"`},
		{Config{InstanceTTL: time.Millisecond}, "instance ttl"},
	} {
		_, err := New(c.cfg, testKey, oneApp{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.cfg, err, c.want)
		}
	}
}

// TestClusterRoundTrips: a push to many devices spread over 4 instances costs the origin one
// look-up and one publish, whatever the number of devices; a user push one Users call.
func TestClusterRoundTrips(t *testing.T) {
	tc := newCluster(t, 4, route.ModeRegistry)
	const perNode = 2500 // a push to 10,000 devices over 4 instances
	var devs, users []string
	var pipes []*pipe
	for i, n := range tc.nodes {
		for j := range perNode {
			d := fmt.Sprintf("d%d-%d", i, j)
			pipes = append(pipes, n.connect(t, d, "u"+d))
			devs = append(devs, d)
			users = append(users, "u"+d)
		}
	}
	tc.settle(t)
	for _, c := range []struct {
		name  string
		req   PushRequest
		calls *atomic.Int64
	}{
		{"devices", PushRequest{Devices: devs}, &tc.store.lookups},
		{"users", PushRequest{Users: users}, &tc.store.users},
	} {
		before, pubs := c.calls.Load(), tc.store.publish.Load()
		c.req.App, c.req.Biz, c.req.Payload = "app", bizEcho, []byte(c.name)
		res, err := tc.nodes[0].Push(&c.req)
		if err != nil {
			t.Fatal(err)
		}
		checkSums(t, res)
		if res.Delivered != perNode || res.Forwarded != 3*perNode || res.Remote.Delivered != 3*perNode || res.Remote.Instances != 3 {
			t.Fatalf("%s: %+v %+v", c.name, res, res.Remote)
		}
		if got := c.calls.Load() - before; got != 1 {
			t.Fatalf("%s: %d look-ups", c.name, got)
		}
		// The origin's one publish and at most one report from each of the 3 others.
		if got := tc.store.publish.Load() - pubs; got < 2 || got > 4 {
			t.Fatalf("%s: %d publishes", c.name, got)
		}
		for _, p := range pipes {
			expectPush(t, c.name, p)
		}
	}
}
