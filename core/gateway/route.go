package gateway

import (
	"context"
	"time"

	"github.com/pushwire/pushwire/route"
)

// Push routing across instances. After the local connections had the message (Push), the targets
// this instance does not hold go to the others:
//
// Registry mode: the devices not held here are looked up in ONE Directory.Lookup, a user push's
// users in ONE Directory.Users; the entries on other instances become one bus message per holding
// instance naming the connections and their generations (a connection whose generation differs is
// reported stale by its instance). A group push goes to the group's holders, one message each
// (a holder the registry does not list and nobody listens for is skipped, not failed); a push to every connection of the app is one message to every instance.
//
// Broadcast mode: a push that is not wholly local is one message to every instance, naming the
// devices, users, group or app; each delivers what it holds.
//
// All the messages of one push go out in one Publish. Each receiver reports back (delivered,
// offline, stale, failed); the push waits up to RemoteTimeout for them. Accounting:
//
//   - devices and users in registry mode: Forwarded counts the connections handed to an instance
//     (a message with a receiver); remote targets that could not be handed over (the look-up or
//     the publish failed, nobody subscribed) are Failed, never Offline. A device whose entry names
//     this instance but which it does not hold is Offline (and counted stale).
//   - groups and the whole app (both modes), users in broadcast mode: the origin does not know how
//     many connections the others hold, so Forwarded is the sum of what the instances reported
//     (delivered + offline + stale + failed), and an instance that could not be reached counts one
//     Failed target. A user in broadcast mode with no connection here is not counted offline: no
//     instance can tell that it has none anywhere.
//   - devices in broadcast mode: Forwarded counts the devices not held here; when every live
//     instance reported, remote.offline = Forwarded − the reported delivered, stale and failed.
func (n *Node) pushRemote(req *PushRequest, msg *message, misses []string, localUsers []int, res *PushResult) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	base := busMsg{Kind: busPush, Origin: n.cfg.Node, App: req.App, ID: msg.id, Biz: msg.biz, Flags: msg.flags,
		Group: req.Group, Payload: req.Payload, ReportTo: n.cfg.Node}
	if req.Ack {
		ttl := req.TTL
		if ttl <= 0 {
			ttl = n.cfg.AckTTL
		}
		base.TTLMs = uint64(ttl / time.Millisecond)
	}
	reqID := n.cl.reqSeq.Add(1)
	base.Request = reqID
	var (
		msgs     []route.Message
		sizes    []int // registry mode's connection messages: targets per message; -1: counted by report
		toAll    []bool
		optional []bool // an unknown group holder: not received is not a failure
		others   []string
	)
	add := func(to string, m busMsg, size int) {
		msgs = append(msgs, route.Message{To: to, Data: encodeBus(&m)})
		sizes = append(sizes, size)
		toAll = append(toAll, to == "")
		optional = append(optional, false)
	}
	// A target missing from the store is offline only when the node was settled with the store
	// (see settled) both before the look-up and after its answer: a look-up that waited out a
	// store outage may have read a store that has just lost its data. Otherwise it is unknown,
	// and counted failed.
	settledBefore := n.cl.mode != route.ModeRegistry || n.settled()
	settled := settledBefore
	unknown := 0
	byInstance := func(entries []route.Entry, into map[string][]connRef) (offline int) {
		for _, e := range entries {
			switch {
			case e.IsZero() && !settled:
				unknown++
			case e.IsZero():
				offline++
			case e.Instance == n.cfg.Node:
				offline++
				n.m.stale.Inc()
			default:
				into[e.Instance] = append(into[e.Instance], connRef{Conn: e.Conn, Gen: e.Gen})
			}
		}
		return offline
	}
	offline := 0
	if n.cl.mode == route.ModeRegistry {
		conns := map[string][]connRef{}
		switch {
		case len(req.Devices) > 0 && len(misses) > 0:
			entries, err := n.cl.store.Lookup(ctx, req.App, misses)
			n.m.routeOp("lookup", err)
			settled = settledBefore && n.settled()
			if err != nil || len(entries) != len(misses) {
				res.Failed += len(misses)
				break
			}
			offline += byInstance(entries, conns)
		case len(req.Users) > 0:
			lists, err := n.cl.store.Users(ctx, req.App, req.Users)
			n.m.routeOp("users", err)
			settled = settledBefore && n.settled()
			if err != nil || len(lists) != len(req.Users) {
				for _, k := range localUsers {
					if k == 0 {
						res.Failed++
						res.Targets++
					}
				}
				break
			}
			for i, list := range lists {
				remote := 0
				for _, e := range list {
					if !e.IsZero() && e.Instance != n.cfg.Node {
						conns[e.Instance] = append(conns[e.Instance], connRef{Conn: e.Conn, Gen: e.Gen})
						remote++
					}
				}
				res.Targets += remote
				if remote == 0 && localUsers[i] == 0 {
					if settled {
						offline++
					} else {
						unknown++
					}
					res.Targets++
				}
			}
		case req.Group != "":
			live, unknown, err := n.holders(ctx, req.App, req.Group)
			if err != nil {
				res.Failed++
				res.Targets++
				break
			}
			m := base
			m.Target = targetGroup
			for _, h := range live {
				add(h, m, -1)
			}
			for _, h := range unknown {
				add(h, m, -1)
				optional[len(optional)-1] = true
			}
		case req.Broadcast:
			// Published even when the cached list names no other instance: one may have
			// registered since, and Publish counts who listens.
			n.refreshLiveIfMissing(ctx)
			others = n.liveOthers()
			m := base
			m.Target = targetAll
			add("", m, -1)
		}
		for inst, refs := range conns {
			m := base
			m.Target = targetConns
			m.Conns = refs
			add(inst, m, len(refs))
		}
	} else {
		// Broadcast mode: one message to every instance, sent even when the cached list names no
		// other instance (one may have registered since: Publish counts who listens).
		n.refreshLiveIfMissing(ctx)
		others = n.liveOthers()
		m := base
		switch {
		case len(req.Devices) > 0:
			if len(misses) > 0 {
				m.Target = targetDevices
				m.Devices = misses
				add("", m, len(misses))
			}
		case len(req.Users) > 0:
			m.Target = targetUsers
			m.Users = req.Users
			add("", m, -1)
		case req.Group != "":
			m.Target = targetGroup
			add("", m, -1)
		default:
			m.Target = targetAll
			add("", m, -1)
		}
	}

	expect := 0
	counted := 0 // targets counted in Forwarded before the reports
	var w *waiter
	if len(msgs) > 0 {
		w = n.newWaiter(reqID)
		kinds := make([]byte, len(msgs))
		for i := range kinds {
			kinds[i] = busPush
		}
		recv, err := n.publish(msgs, kinds)
		self := 0 // this instance's own subscription, counted among a message to all's receivers
		if n.cl.up.Load() {
			self = 1
		}
		for i := range msgs {
			handed := err == nil && recv[i] > 0 && (!toAll[i] || recv[i]-self > 0 || len(others) > 0)
			switch {
			case toAll[i] && err == nil && recv[i]-self <= 0 && len(others) == 0:
				// No other instance is live or listening: the devices are held nowhere; a group,
				// a user or the whole app has no connection elsewhere.
				offline += max(sizes[i], 0)
			case !handed && optional[i]:
			case !handed && sizes[i] >= 0:
				res.Failed += sizes[i]
			case !handed:
				res.Failed++
				res.Targets++
			case toAll[i]:
				// Every subscriber but this instance reports: the receivers Publish counted (exact
				// on one server, local to a node's subscribers in a Redis Cluster), or the live
				// instances the registry listed, whichever is more.
				expect += max(recv[i]-self, len(others))
				counted += max(sizes[i], 0)
			default:
				expect++
				counted += max(sizes[i], 0)
			}
		}
	}
	res.Forwarded = counted
	res.Offline += offline
	res.Failed += unknown
	if unknown > 0 {
		n.m.unknown.Add(float64(unknown))
	}
	if offline > 0 {
		n.m.pushes.WithLabelValues(outcomeOffline).Add(float64(offline))
	}
	if expect == 0 {
		if w != nil {
			n.await(reqID, w, 0, nil)
		}
		return
	}
	rr := &RemoteResult{Instances: expect}
	n.await(reqID, w, expect, rr)
	res.Remote = rr
	reported := rr.Delivered + rr.Offline + rr.Stale + rr.Failed
	switch {
	case n.cl.mode == route.ModeBroadcast && len(req.Devices) > 0:
		// Each instance reports what it delivered; a device nobody held is offline.
		rr.Offline = 0
		if rr.Reported == rr.Instances {
			rr.Offline = max(counted-(rr.Delivered+rr.Stale+rr.Failed), 0)
		}
	case counted == 0:
		// Groups, the whole app, users in broadcast mode: what the instances reported.
		res.Forwarded += reported
		res.Targets += reported
	}
	if rr.Stale > 0 {
		n.m.stale.Add(float64(rr.Stale))
	}
}

// held records, through the route writer, that this instance gained its first member of a group
// or lost its last.
func (n *Node) held(app, group string, held bool) {
	n.cl.w.enqueue(routeOp{kind: opHolding, app: app, key: group, in: held})
}

// recordMembership records a device joining or leaving a group in the route store, where it
// follows the device to its next connection.
func (n *Node) recordMembership(app, device, group string, in bool) {
	if n.clustered() {
		n.cl.w.enqueue(routeOp{kind: opMembership, app: app, device: device, key: group, in: in})
	}
}

// keepPending keeps an at-least-once message delivered to s until PUSH_ACK: in the route store
// (through the writer) on a cluster, so that the device's next claim anywhere returns it; in the
// local ackStore standalone.
func (n *Node) keepPending(s *Client, msg *message) {
	if !n.clustered() {
		n.acks.keep(s.app, s.device, msg)
		return
	}
	n.cl.w.enqueue(routeOp{kind: opPending, app: s.app, device: s.device, key: msg.id, data: encodePending(msg), exp: msg.exp})
}

// ackPending removes the pending message id of s's device.
func (n *Node) ackPending(s *Client, id []byte) {
	if !n.clustered() {
		n.acks.ack(s.app, s.device, id)
		return
	}
	n.acks.acked(1)
	n.cl.w.enqueue(routeOp{kind: opAck, app: s.app, device: s.device, key: string(id)})
}

// forwardMembership sends a membership API call for devices held on other instances to their
// holders, one bus message per instance. It returns how many devices were handed over.
func (n *Node) forwardMembership(app, group string, in bool, devices []string) (forwarded, offline, failed int) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	entries, err := n.cl.store.Lookup(ctx, app, devices)
	n.m.routeOp("lookup", err)
	if err != nil || len(entries) != len(devices) {
		return 0, 0, len(devices)
	}
	by := map[string][]string{}
	for i, e := range entries {
		if e.IsZero() || e.Instance == n.cfg.Node {
			offline++
			continue
		}
		by[e.Instance] = append(by[e.Instance], devices[i])
	}
	var msgs []route.Message
	var sizes []int
	for inst, list := range by {
		m := &busMsg{Kind: busMembership, Origin: n.cfg.Node, App: app, Group: group, In: in, Devices: list}
		msgs = append(msgs, route.Message{To: inst, Data: encodeBus(m)})
		sizes = append(sizes, len(list))
	}
	if len(msgs) == 0 {
		return 0, offline, 0
	}
	kinds := make([]byte, len(msgs))
	for i := range kinds {
		kinds[i] = busMembership
	}
	recv, err := n.publish(msgs, kinds)
	for i, k := range sizes {
		if err == nil && recv[i] > 0 {
			forwarded += k
		} else {
			failed += k
		}
	}
	return forwarded, offline, failed
}
