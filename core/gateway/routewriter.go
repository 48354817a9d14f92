package gateway

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/route"
)

// The route writer: logins, closes, joins, leaves, holdings, pending messages and acks are written
// to the route store by one goroutine, so an engine's event loop never waits on the store. The
// event loop only appends to a bounded in-memory queue; the writer takes what is queued (up to
// writerBatch at a time: batches form by themselves under load) and sends it with one store call
// per kind per batch, in the order memberships, holdings, pending, acks, claims, releases. That
// order keeps what matters per device: a connection's claim precedes its release (a release whose
// claim is in the same batch runs after it), a left connection's membership and pending messages
// are recorded before a newer connection's claim reads them.
//
// A store call that fails is retried with back-off; when it still fails, or the queue is full,
// nothing is dropped silently: the operations are counted (pushwire_route_ops_total{outcome=
// "dropped"}) and the node is marked out of step. While out of step the writer pings the store
// every second; once it answers (or the bus subscription comes back) it re-asserts everything
// local: every session (Refresh: one superseded meanwhile is closed GOAWAY EVICTED), every group
// the instance holds, every connection's groups, and the registration.

const (
	writerBatch    = 1024
	writerQueueMax = 1 << 17
	writerRetries  = 3
	writerBackoff  = 50 * time.Millisecond
	drainBound     = 2 * time.Second
)

type opKind uint8

const (
	opMembership opKind = iota
	opHolding
	opPending
	opAck
	opClaim
	opRelease
	numOpKinds
)

var opNames = [numOpKinds]string{"membership", "holding", "pending", "ack", "claim", "release"}

// routeOp is one queued write. Claims and releases name the client: its identity and generation
// are read when the batch is sent, so a release sent after its claim's answer carries the
// generation the store assigned.
type routeOp struct {
	kind             opKind
	in               bool
	c                *Client
	app, device, key string // key: the group (membership, holding) or the message ID (pending, ack)
	data             []byte
	exp              int64
}

type routeWriter struct {
	n         *Node
	mu        sync.Mutex
	q         []routeOp
	signal    chan struct{}
	resync    atomic.Bool  // the store may miss what this instance holds: re-assert it
	resyncing atomic.Bool  // a re-assertion is running
	unsent    atomic.Int64 // queued or being written
}

// idle reports whether every queued write has been sent (or given up).
func (w *routeWriter) idle() bool { return w.unsent.Load() == 0 }

func newRouteWriter(n *Node) *routeWriter {
	return &routeWriter{n: n, signal: make(chan struct{}, 1)}
}

func (w *routeWriter) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// enqueue queues op; a full queue drops it, counts it and marks the node out of step.
func (w *routeWriter) enqueue(op routeOp) {
	w.mu.Lock()
	if len(w.q) >= writerQueueMax {
		w.mu.Unlock()
		w.n.m.routeOps.WithLabelValues(opNames[op.kind], "dropped").Inc()
		w.n.needResync("route queue full")
		return
	}
	w.q = append(w.q, op)
	w.unsent.Add(1)
	w.mu.Unlock()
	w.n.m.routeQueue.Inc()
	w.wake()
}

// take removes up to writerBatch queued operations.
func (w *routeWriter) take() []routeOp {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := min(len(w.q), writerBatch)
	if k == 0 {
		return nil
	}
	batch := make([]routeOp, k)
	copy(batch, w.q)
	clear(w.q[:k])
	w.q = w.q[k:]
	if len(w.q) == 0 {
		w.q = nil
	}
	w.n.m.routeQueue.Sub(float64(k))
	return batch
}

// run is the writer's goroutine: it writes batches until Stop, then drains the queue within
// drainBound.
func (w *routeWriter) run() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-w.n.stop:
			w.drain()
			return
		case <-w.signal:
		case <-tick.C:
		}
		if w.resync.Load() {
			w.tryResync()
		}
		for batch := w.take(); batch != nil; batch = w.take() {
			w.write(context.Background(), batch)
			w.unsent.Add(-int64(len(batch)))
		}
	}
}

// drain writes what is queued at Stop, within drainBound; what is left is counted dropped.
func (w *routeWriter) drain() {
	ctx, cancel := context.WithTimeout(context.Background(), drainBound)
	defer cancel()
	for ctx.Err() == nil {
		batch := w.take()
		if batch == nil {
			return
		}
		w.write(ctx, batch)
		w.unsent.Add(-int64(len(batch)))
	}
	rest := w.take()
	if rest == nil {
		return
	}
	w.unsent.Add(-int64(len(rest)))
	w.n.log.Warn("route writer: stopped with writes queued", "dropped", len(rest))
	for _, op := range rest {
		w.n.m.routeOps.WithLabelValues(opNames[op.kind], "dropped").Inc()
	}
}

// call runs one store call with retries; on final failure it counts the ops dropped and marks
// the node out of step.
func (w *routeWriter) call(ctx context.Context, kind opKind, ops int, fn func(ctx context.Context) error) bool {
	backoff := writerBackoff
	var err error
	for attempt := range writerRetries {
		cctx, cancel := context.WithTimeout(ctx, storeTimeout)
		err = fn(cctx)
		cancel()
		w.n.m.routeOp(opNames[kind], err)
		if err == nil {
			return true
		}
		if attempt == writerRetries-1 || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-w.n.stop:
			t.Stop()
		}
		backoff *= 2
	}
	w.n.m.routeOps.WithLabelValues(opNames[kind], "dropped").Add(float64(ops))
	w.n.log.Warn("route store write failed", "op", opNames[kind], "ops", ops, "err", err)
	w.n.needResync(opNames[kind] + " failed")
	return false
}

// write sends one batch: one store call per kind present.
func (w *routeWriter) write(ctx context.Context, batch []routeOp) {
	n := w.n
	st := n.cl.store
	var byKind [numOpKinds][]routeOp
	for _, op := range batch {
		byKind[op.kind] = append(byKind[op.kind], op)
	}
	if ops := byKind[opMembership]; len(ops) > 0 {
		list := make([]route.Membership, len(ops))
		for i, op := range ops {
			list[i] = route.Membership{App: op.app, Device: op.device, Group: op.key, In: op.in}
		}
		w.call(ctx, opMembership, len(ops), func(ctx context.Context) error { return st.SetMembership(ctx, list) })
	}
	if ops := byKind[opHolding]; len(ops) > 0 {
		list := make([]route.Holding, len(ops))
		for i, op := range ops {
			list[i] = route.Holding{App: op.app, Group: op.key, Instance: n.cfg.Node, Held: op.in}
		}
		w.call(ctx, opHolding, len(ops), func(ctx context.Context) error { return st.SetHolding(ctx, list) })
	}
	if ops := byKind[opPending]; len(ops) > 0 {
		list := make([]route.Pending, len(ops))
		for i, op := range ops {
			list[i] = route.Pending{App: op.app, Device: op.device, ID: op.key, Data: op.data, Expires: time.Unix(0, op.exp)}
		}
		w.call(ctx, opPending, len(ops), func(ctx context.Context) error { return st.AddPending(ctx, list) })
	}
	if ops := byKind[opAck]; len(ops) > 0 {
		list := make([]route.Ack, len(ops))
		for i, op := range ops {
			list[i] = route.Ack{App: op.app, Device: op.device, ID: op.key}
		}
		w.call(ctx, opAck, len(ops), func(ctx context.Context) error { return st.Ack(ctx, list) })
	}
	if ops := byKind[opClaim]; len(ops) > 0 {
		w.claim(ctx, ops)
	}
	if ops := byKind[opRelease]; len(ops) > 0 {
		list := make([]route.Release, len(ops))
		for i, op := range ops {
			c := op.c
			list[i] = route.Release{App: c.app, Device: c.device, User: c.user, Linger: n.cfg.Linger,
				Entry: route.Entry{Instance: n.cfg.Node, Conn: c.id(), Gen: c.gen.Load()}}
		}
		w.call(ctx, opRelease, len(ops), func(ctx context.Context) error {
			_, err := st.Release(ctx, list)
			return err
		})
	}
}

// claim sends the claims of a batch (of clients still open) and applies the answers.
func (w *routeWriter) claim(ctx context.Context, ops []routeOp) {
	n := w.n
	clients := make([]*Client, 0, len(ops))
	claims := make([]route.Claim, 0, len(ops))
	for _, op := range ops {
		c := op.c
		if !c.state().LoggedIn() {
			continue // closed before its claim went out: its release follows and finds nothing
		}
		clients = append(clients, c)
		claims = append(claims, route.Claim{App: c.app, Device: c.device, User: c.user,
			Entry: route.Entry{Instance: n.cfg.Node, Conn: c.id(), Gen: c.gen.Load()}})
	}
	if len(claims) == 0 {
		return
	}
	var answers []route.Claimed
	ok := w.call(ctx, opClaim, len(claims), func(ctx context.Context) error {
		var err error
		answers, err = n.cl.store.Claim(ctx, claims)
		if err == nil && len(answers) != len(claims) {
			err = fmt.Errorf("route store answered %d of %d claims", len(answers), len(claims))
		}
		return err
	})
	if !ok {
		return
	}
	var kicks []route.Message
	var kinds []byte
	for i, c := range clients {
		if m := n.claimed(c, &answers[i]); m != nil {
			kicks = append(kicks, *m)
			kinds = append(kinds, busKick)
		}
	}
	if len(kicks) > 0 {
		_, _ = n.publish(kicks, kinds)
	}
}

// claimed applies the store's answer to a client's claim: its generation, the groups its device
// is kept in, the device's unacknowledged messages, and the previous connection's close. It
// returns the kick to send when the previous connection is on another instance.
func (n *Node) claimed(c *Client, cl *route.Claimed) *route.Message {
	c.gen.Store(cl.Gen)
	if !c.state().LoggedIn() {
		return nil
	}
	for _, g := range cl.Groups {
		_, _ = n.groups.Join(c, g, 0)
	}
	n.deliverPending(c, cl.Pending)
	prev := cl.Previous
	switch {
	case prev.IsZero():
	case prev.Instance == n.cfg.Node:
		if old := n.table.ByConn(prev.Conn); old != nil && old != c && old.app == c.app && old.device == c.device && old.gen.Load() < cl.Gen {
			n.m.evictions.Inc()
			old.evict()
		}
	default:
		m := &busMsg{Kind: busKick, Origin: n.cfg.Node, App: c.app, Device: c.device, Conn: connRef{Conn: prev.Conn, Gen: cl.Gen}}
		return &route.Message{To: prev.Instance, Data: encodeBus(m)}
	}
	return nil
}

// tryResync pings the store and, when it answers, re-asserts everything local.
func (w *routeWriter) tryResync() {
	n := w.n
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := n.cl.store.Ping(ctx); err != nil {
		n.m.routeOp("ping", err)
		return
	}
	w.resyncing.Store(true) // before resync is cleared: the node is never settled in between
	defer w.resyncing.Store(false)
	if !w.resync.CompareAndSwap(true, false) {
		return
	}
	n.m.resyncs.Inc()
	if err := n.resync(ctx); err != nil {
		n.log.Warn("re-asserting local state failed", "err", err)
		w.resync.Store(true)
		return
	}
	n.log.Info("local state re-asserted in the route store")
}

// resync writes everything this instance holds back to the store: every session (one whose
// device has a newer connection elsewhere is closed GOAWAY EVICTED), every group it holds
// members of, every connection's groups, and its registration.
func (n *Node) resync(ctx context.Context) error {
	st := n.cl.store
	var clients []*Client
	n.table.Range(func(c *Client) bool {
		clients = append(clients, c)
		return true
	})
	var errs []error
	var members []route.Membership
	for len(clients) > 0 {
		k := min(len(clients), writerBatch)
		chunk := clients[:k]
		clients = clients[k:]
		claims := make([]route.Claim, len(chunk))
		for i, c := range chunk {
			claims[i] = route.Claim{App: c.app, Device: c.device, User: c.user,
				Entry: route.Entry{Instance: n.cfg.Node, Conn: c.id(), Gen: c.gen.Load()}}
			for _, g := range c.groupsOf() {
				members = append(members, route.Membership{App: c.app, Device: c.device, Group: g, In: true})
			}
		}
		current, err := st.Refresh(ctx, claims)
		n.m.routeOp("refresh", err)
		if err != nil {
			errs = append(errs, err)
			break
		}
		for i, ok := range current {
			if !ok && i < len(chunk) {
				n.m.evictions.Inc()
				chunk[i].evict()
			}
		}
	}
	if len(members) > 0 {
		err := st.SetMembership(ctx, members)
		n.m.routeOp("membership", err)
		errs = append(errs, err)
	}
	var holdings []route.Holding
	n.groups.rangeKeys(func(app, group string) {
		holdings = append(holdings, route.Holding{App: app, Group: group, Instance: n.cfg.Node, Held: true})
	})
	if len(holdings) > 0 {
		err := st.SetHolding(ctx, holdings)
		n.m.routeOp("holding", err)
		errs = append(errs, err)
	}
	errs = append(errs, n.registerInstance(ctx))
	return errors.Join(errs...)
}

// rangeKeys calls fn for every group with members.
func (g *groups) rangeKeys(fn func(app, group string)) {
	var keys []string
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.RLock()
		for k := range sh.m {
			keys = append(keys, k)
		}
		sh.mu.RUnlock()
	}
	for _, k := range keys {
		app, group, _ := strings.Cut(k, "\x00")
		fn(app, group)
	}
}

// Pending messages are kept in the store as data the store does not read:
//
//	biz (2 bytes) | flags (1) | meta length (2) | meta and body (the PUSH frame's tail)
func encodePending(m *message) []byte {
	b := make([]byte, 0, 5+len(m.tail))
	b = binary.BigEndian.AppendUint16(b, m.biz)
	b = append(b, m.flags)
	b = binary.BigEndian.AppendUint16(b, m.metaN)
	return append(b, m.tail...)
}

func (n *Node) decodePending(p *route.Pending) (*message, bool) {
	d := p.Data
	if len(d) < 5 {
		return nil, false
	}
	biz := binary.BigEndian.Uint16(d)
	metaN := binary.BigEndian.Uint16(d[3:])
	tail := d[5:]
	if int(metaN) > len(tail) || len(tail)-int(metaN) > frame.MaxBodyLimit {
		return nil, false
	}
	m := &message{id: p.ID, biz: biz, flags: d[2], tail: tail, metaN: metaN, bodyN: uint32(len(tail) - int(metaN)),
		ack: true, exp: p.Expires.UnixNano(), slow: SlowConsumerClose}
	if b, ok := n.biz[biz]; ok {
		m.slow = b.SlowConsumer
	}
	return m, true
}

// deliverPending delivers a device's unacknowledged messages, as the store returned them at its
// claim, to its new connection: the newest MaxPending of them (the older are counted as
// overflow).
func (n *Node) deliverPending(c *Client, list []route.Pending) {
	if len(list) == 0 {
		return
	}
	if over := len(list) - n.cfg.MaxPending; over > 0 {
		n.acks.overflow(over)
		list = list[over:]
	}
	msgs := make([]*message, 0, len(list))
	for i := range list {
		if m, ok := n.decodePending(&list[i]); ok {
			msgs = append(msgs, m)
		} else {
			n.log.Warn("undecodable pending message", "device", c.device, "id", list[i].ID)
		}
	}
	n.resend(c, msgs)
}
