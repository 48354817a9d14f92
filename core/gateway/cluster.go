package gateway

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/route"
)

// Directory is what the node asks of the route layer's directory (route.Directory): where
// devices, users and groups live, and what follows a device between connections.
type Directory interface {
	Claim(ctx context.Context, claims []route.Claim) ([]route.Claimed, error)
	Release(ctx context.Context, releases []route.Release) ([]bool, error)
	Refresh(ctx context.Context, claims []route.Claim) ([]bool, error)
	Lookup(ctx context.Context, app string, devices []string) ([]route.Entry, error)
	Users(ctx context.Context, app string, users []string) ([][]route.Entry, error)
	SetMembership(ctx context.Context, ops []route.Membership) error
	SetHolding(ctx context.Context, ops []route.Holding) error
	Holders(ctx context.Context, app, group string) ([]string, error)
	AddPending(ctx context.Context, msgs []route.Pending) error
	Ack(ctx context.Context, acks []route.Ack) error
	Epoch(ctx context.Context) (time.Time, error)
}

// Registry is what the node asks of the instance registry (route.Registry).
type Registry interface {
	Register(ctx context.Context, inst route.Instance, ttl time.Duration) error
	Deregister(ctx context.Context, id string) error
	Instances(ctx context.Context) ([]route.Instance, error)
}

// Bus is what the node asks of the bus between instances (route.Bus).
type Bus interface {
	Publish(ctx context.Context, msgs []route.Message) ([]int, error)
	Subscribe(ctx context.Context, instance string, deliver func(data []byte), up func(bool)) error
}

// RouteStore is the route layer the node runs on: route/memory and route/redis satisfy it. The
// node never closes it: its owner (the binary) does, after Stop.
type RouteStore interface {
	Directory
	Registry
	Bus
	Ping(ctx context.Context) error
}

// storeTimeout bounds one call to the store.
const storeTimeout = 5 * time.Second

// cluster is the node's share of the cluster: nil fields and a nil *cluster mean standalone.
type cluster struct {
	store RouteStore
	mode  string
	w     *routeWriter

	live     atomic.Pointer[[]route.Instance] // the registry's live instances, refreshed each registration
	liveAt   atomic.Int64                     // when live was read (wall clock, unix nanoseconds)
	reqSeq   atomic.Uint64
	waitMu   sync.Mutex
	waiters  map[uint64]*waiter
	upBefore atomic.Bool // the bus subscription was up once: a later up means a re-subscription
	up       atomic.Bool // the bus subscription is up: this instance takes its own messages to all
	// epoch is when the store's present data began (unix nanoseconds; 0: not read yet), read at
	// each registration; epochBase is the first one this node read. See settled.
	epoch, epochBase atomic.Int64

	// Reports to other instances' pushes are sent by one goroutine, every report queued meanwhile
	// in one Publish, so the bus subscription never waits on a round trip per push.
	repMu     sync.Mutex
	repQ      []route.Message
	repSignal chan struct{}
	subCancel context.CancelFunc
}

// waiter collects the reports of one push's remote instances.
type waiter struct {
	mu   sync.Mutex
	sum  RemoteResult  // the reports so far; Reported counts them
	more chan struct{} // signalled at each report (capacity 1: a signal is never lost, never blocks)
}

// add sums one report.
func (w *waiter) add(m *busMsg) {
	w.mu.Lock()
	w.sum.Reported++
	w.sum.Delivered += int(m.Delivered)
	w.sum.Offline += int(m.Offline)
	w.sum.Stale += int(m.Stale)
	w.sum.Failed += int(m.Failed)
	w.mu.Unlock()
	select {
	case w.more <- struct{}{}:
	default:
	}
}

// clustered reports whether the node runs on a route store.
func (n *Node) clustered() bool { return n.cl != nil }

// liveOthers returns the live instances other than this one, as last read from the registry.
func (n *Node) liveOthers() []string {
	p := n.cl.live.Load()
	if p == nil {
		return nil
	}
	out := make([]string, 0, len(*p))
	for _, in := range *p {
		if in.ID != n.cfg.Node {
			out = append(out, in.ID)
		}
	}
	return out
}

// instance is this node as the registry lists it.
func (n *Node) instance() route.Instance {
	return route.Instance{ID: n.cfg.Node, Engine: n.cfg.Engine, Endpoints: n.cfg.Endpoints, HTTP: n.cfg.HTTPURL,
		Region: n.cfg.Region, Group: n.cfg.Group, Conns: n.conns.Load(), Draining: n.draining.Load()}
}

// registerInstance registers the node and refreshes the cached list of live instances.
func (n *Node) registerInstance(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	err := n.cl.store.Register(ctx, n.instance(), n.cfg.InstanceTTL)
	n.m.routeOp("register", err)
	if err != nil {
		n.needResync("register")
		return err
	}
	epoch, err := n.cl.store.Epoch(ctx)
	n.m.routeOp("epoch", err)
	if err == nil {
		n.cl.epochBase.CompareAndSwap(0, epoch.UnixNano())
		n.cl.epoch.Store(epoch.UnixNano())
	}
	return errors.Join(err, n.refreshLive(ctx))
}

// settled reports whether a device or user missing from the store is offline. It is not while
// this instance is out of step with the store (its bus subscription is down, or it has yet to
// re-assert what it holds), nor within an instance TTL of the store losing its data (its epoch
// moved on from the one this node first read: Redis restarted without persistence, or flushed):
// the store is refilled as each instance re-subscribes and re-asserts, and until then a miss may
// be a device online elsewhere. Such a miss is counted failed (pushwire_route_unknown_total),
// never offline. An instance that joins within a TTL of a loss cannot tell it from a new store.
func (n *Node) settled() bool {
	if !n.cl.up.Load() || n.cl.w.resync.Load() || n.cl.w.resyncing.Load() {
		return false
	}
	epoch := n.cl.epoch.Load()
	return epoch == n.cl.epochBase.Load() ||
		time.Since(time.Unix(0, epoch)) >= n.cfg.InstanceTTL // the epoch is marked on a wall clock
}

// refreshLive reads the live instances from the registry.
func (n *Node) refreshLive(ctx context.Context) error {
	list, err := n.cl.store.Instances(ctx)
	n.m.routeOp("instances", err)
	if err != nil {
		return err
	}
	n.cl.live.Store(&list)
	n.cl.liveAt.Store(time.Now().UnixNano())
	return nil
}

// liveRefreshMin is how often a push may re-read the registry when it meets an instance the
// cached list does not know (one that registered since the last registration tick).
const liveRefreshMin = time.Second

// refreshLiveIfOld re-reads the live instances when the cached list is missing or older than
// liveRefreshMin, and reports whether it did.
func (n *Node) refreshLiveIfOld(ctx context.Context) bool {
	if n.cl.live.Load() != nil && time.Since(time.Unix(0, n.cl.liveAt.Load())) < liveRefreshMin {
		return false
	}
	return n.refreshLive(ctx) == nil
}

// registration registers the node every InstanceTTL/3 until Stop.
func (n *Node) registration() {
	_ = n.registerInstance(context.Background())
	t := time.NewTicker(n.cfg.InstanceTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			_ = n.registerInstance(context.Background())
		}
	}
}

// subscribe receives the bus until Stop.
func (n *Node) subscribe(ctx context.Context) {
	err := n.cl.store.Subscribe(ctx, n.cfg.Node, n.onBus, n.onBusUp)
	if err != nil && ctx.Err() == nil {
		n.log.Error("bus subscription ended", "err", err)
	}
}

// onBusUp learns that the bus subscription is (re-)established or lost. A re-subscription means
// the store may have lost what this instance wrote: the writer re-asserts it.
func (n *Node) onBusUp(up bool) {
	if !up {
		n.cl.up.Store(false)
		n.log.Warn("bus subscription lost")
		return
	}
	if n.cl.upBefore.Swap(true) {
		n.log.Info("bus subscription re-established")
		n.needResync("resubscribed") // before up: the node is never settled in between
	}
	n.cl.up.Store(true)
}

// needResync marks that the store may miss what this instance holds.
func (n *Node) needResync(why string) {
	if n.cl.w.resync.CompareAndSwap(false, true) {
		n.log.Warn("route store out of step: will re-assert local state", "why", why)
	}
	n.cl.w.wake()
}

// publish sends bus messages and counts them.
func (n *Node) publish(msgs []route.Message, kinds []byte) ([]int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	recv, err := n.cl.store.Publish(ctx, msgs)
	n.m.routeOp("publish", err)
	for i, k := range kinds {
		n.m.bus("out", k)
		if err != nil || i >= len(recv) || recv[i] == 0 {
			n.m.busUnreceived.Inc()
		}
	}
	if err == nil && len(recv) != len(msgs) {
		recv = append(recv, make([]int, len(msgs)-len(recv))...)
	}
	return recv, err
}

// onBus handles one message from the bus. It runs on the subscription's goroutine.
func (n *Node) onBus(data []byte) {
	m, err := decodeBus(data)
	if err != nil {
		n.m.bus("in", 0)
		n.log.Warn("bad bus message", "err", err)
		return
	}
	if m.Origin == n.cfg.Node {
		return // this instance's own message to every instance
	}
	n.m.bus("in", m.Kind)
	switch m.Kind {
	case busPush:
		n.onRemotePush(m)
	case busReport:
		n.cl.waitMu.Lock()
		w := n.cl.waiters[m.Request]
		n.cl.waitMu.Unlock()
		if w != nil {
			w.add(m)
		}
	case busKick:
		if c := n.table.ByConn(m.Conn.Conn); c != nil && c.app == m.App && c.device == m.Device && c.gen.Load() < m.Conn.Gen {
			n.m.evictions.Inc()
			c.evict()
		}
	case busMembership:
		for _, d := range m.Devices {
			c := n.table.ByDevice(m.App, d)
			if c == nil {
				continue
			}
			if m.In {
				_, _ = n.groups.Join(c, m.Group, 0)
			} else {
				n.groups.Leave(c, m.Group)
			}
		}
	}
}

// onRemotePush delivers a push from another instance to the connections this instance holds and
// reports the counts back to its origin.
func (n *Node) onRemotePush(m *busMsg) {
	msg := n.newMessage(m.ID, m.Biz, m.Group, m.Payload, m.Flags&frame.FlagAck != 0, time.Duration(m.TTLMs)*time.Millisecond)
	var c counts
	var stale int64
	var targets []*Client
	switch m.Target {
	case targetConns:
		targets = make([]*Client, 0, len(m.Conns))
		for _, r := range m.Conns {
			s := n.table.ByConn(r.Conn)
			if s == nil || s.app != m.App || s.gen.Load() != r.Gen {
				stale++
				continue
			}
			targets = append(targets, s)
		}
	case targetDevices:
		for _, d := range m.Devices {
			if s := n.table.ByDevice(m.App, d); s != nil {
				targets = append(targets, s)
			}
		}
	case targetUsers:
		for _, u := range m.Users {
			targets = n.table.ByUser(targets, m.App, u)
		}
	case targetGroup:
		targets = n.groups.Members(nil, m.App, m.Group)
	case targetAll:
		targets = n.appClients(m.App)
	}
	if stale > 0 {
		n.m.stale.Add(float64(stale))
	}
	_ = n.fanout.Run(targets, func(chunk []*Client) { n.deliverChunk(msg, chunk, &c) })
	if m.ReportTo == "" {
		return
	}
	rep := &busMsg{Kind: busReport, Origin: n.cfg.Node, Request: m.Request,
		Delivered: uint64(c.delivered.Load()), Offline: uint64(c.offline.Load()), Stale: uint64(stale), Failed: uint64(c.failed.Load())}
	n.cl.repMu.Lock()
	n.cl.repQ = append(n.cl.repQ, route.Message{To: m.ReportTo, Data: encodeBus(rep)})
	n.cl.repMu.Unlock()
	select {
	case n.cl.repSignal <- struct{}{}:
	default:
	}
}

// reporter sends the queued reports until Stop, up to writerBatch per Publish.
func (n *Node) reporter() {
	for {
		select {
		case <-n.stop:
			n.sendReports()
			return
		case <-n.cl.repSignal:
			n.sendReports()
		}
	}
}

func (n *Node) sendReports() {
	for {
		n.cl.repMu.Lock()
		k := min(len(n.cl.repQ), writerBatch)
		batch := slices.Clone(n.cl.repQ[:k])
		n.cl.repQ = n.cl.repQ[k:]
		if len(n.cl.repQ) == 0 {
			n.cl.repQ = nil
		}
		n.cl.repMu.Unlock()
		if k == 0 {
			return
		}
		kinds := make([]byte, k)
		for i := range kinds {
			kinds[i] = busReport
		}
		_, _ = n.publish(batch, kinds)
	}
}

// appClients returns every connection of app on this instance.
func (n *Node) appClients(app string) []*Client {
	targets := make([]*Client, 0, n.table.Len())
	n.table.Range(func(s *Client) bool {
		if s.app == app {
			targets = append(targets, s)
		}
		return true
	})
	return targets
}

// newWaiter registers request id, whose reports (at most max) the caller waits for.
func (n *Node) newWaiter(id uint64) *waiter {
	w := &waiter{more: make(chan struct{}, 1)}
	n.cl.waitMu.Lock()
	n.cl.waiters[id] = w
	n.cl.waitMu.Unlock()
	return w
}

// await collects up to expect reports for request id within RemoteTimeout, and forgets it.
func (n *Node) await(id uint64, w *waiter, expect int, rr *RemoteResult) {
	defer func() {
		n.cl.waitMu.Lock()
		delete(n.cl.waiters, id)
		n.cl.waitMu.Unlock()
	}()
	if expect == 0 {
		return
	}
	timer := time.NewTimer(n.cfg.RemoteTimeout)
	defer timer.Stop()
	// Reports may have arrived before the wait began; any number is summed (an instance the
	// expectation did not count still reports what it delivered).
	collect := func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		*rr = w.sum
		rr.Instances = max(expect, w.sum.Reported)
		return w.sum.Reported >= expect
	}
	for !collect() {
		select {
		case <-w.more:
		case <-timer.C:
			n.m.remoteTimeouts.Inc()
			collect()
			return
		case <-n.stop:
			collect()
			return
		}
	}
}

// startCluster starts the cluster's goroutines: the route writer, the registration and the bus
// subscription. Called by Start.
func (n *Node) startCluster() {
	ctx, cancel := context.WithCancel(context.Background())
	n.cl.subCancel = cancel
	n.bg.Go(n.cl.w.run)
	n.bg.Go(n.reporter)
	n.bg.Go(n.registration)
	n.bg.Go(func() { n.subscribe(ctx) })
}

// stopCluster ends the bus subscription, lets the route writer drain what is queued (bounded by
// ctx and drainBound) and removes this instance from the registry. Called by Stop after the
// goroutines were told to stop.
func (n *Node) stopCluster(ctx context.Context) error {
	n.cl.subCancel()
	n.bg.Wait()
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	err := n.cl.store.Deregister(ctx, n.cfg.Node)
	n.m.routeOp("deregister", err)
	return err
}

// holders returns the instances other than this one that hold members of app's group: those the
// registry lists as live, and those it does not know (unknown: one that registered since the list
// was read, or one that is gone and left its holdings behind). A push goes to both; an unknown
// holder nobody listens for is not a failure (its members, if any, reconnect elsewhere).
func (n *Node) holders(ctx context.Context, app, group string) (live, unknown []string, err error) {
	ids, err := n.cl.store.Holders(ctx, app, group)
	n.m.routeOp("holders", err)
	if err != nil {
		return nil, nil, err
	}
	others := n.liveOthers()
	for _, id := range ids {
		if id != n.cfg.Node && !slices.Contains(others, id) && n.refreshLiveIfOld(ctx) {
			others = n.liveOthers() // a holder the cached list does not know: read the registry again
			break
		}
	}
	for _, id := range ids {
		switch {
		case id == n.cfg.Node:
		case slices.Contains(others, id):
			live = append(live, id)
		default:
			unknown = append(unknown, id)
		}
	}
	return live, unknown, nil
}

// refreshLiveIfMissing reads the live instances when they were never read (a push right after
// Start, before the first registration answered).
func (n *Node) refreshLiveIfMissing(ctx context.Context) {
	if n.cl.live.Load() == nil {
		_ = n.refreshLive(ctx)
	}
}
