package gateway

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/frame"
)

// PushRequest is one message to a set of targets of one app. Exactly one target kind is set.
type PushRequest struct {
	App       string
	Biz       uint16
	Devices   []string // unicast / batch unicast
	Users     []string // every live connection of each user
	Group     string   // every member of the app's group, on every instance
	Broadcast bool     // every connection of the app, on every instance
	Payload   []byte   // the PUSH body; not modified, shared by every delivery
	// Ack asks for at-least-once delivery: the PUSH carries flag ACK and the message is kept per
	// device until PUSH_ACK, resent when the device logs in again within TTL.
	Ack bool
	TTL time.Duration // with Ack; default Config.AckTTL
}

// PushResult counts what happened to one push, so that nothing is lost silently:
// Targets = Delivered + Forwarded + Offline + Failed. Targets are counted per connection for
// users, groups and broadcast (a user with no connection counts one, offline).
type PushResult struct {
	ID        string `json:"id"`
	Targets   int    `json:"targets"`
	Delivered int    `json:"delivered"`         // queued to a connection on this instance
	Forwarded int    `json:"forwarded"`         // handed to other instances (a bus message with a receiver)
	Offline   int    `json:"offline"`           // no live connection
	Failed    int    `json:"failed"`            // a connection that could not take it (slow consumer, closing), or remote targets that could not be handed over
	Pending   int    `json:"pending,omitempty"` // with ack: kept for PUSH_ACK
	// Remote is what the other instances reported (on a route store, when the push went to any).
	Remote *RemoteResult `json:"remote,omitempty"`
}

// RemoteResult sums the reports of the instances a push was handed to. When every one reported,
// Forwarded = Delivered + Offline + Stale + Failed.
type RemoteResult struct {
	Instances int `json:"instances"` // instances the push was handed to
	Reported  int `json:"reported"`  // of them, those that reported within the remote timeout
	Delivered int `json:"delivered"` // queued to a connection there
	Offline   int `json:"offline"`   // not held there (broadcast mode: held nowhere)
	Stale     int `json:"stale"`     // a route entry named a connection the instance no longer has
	Failed    int `json:"failed"`    // a connection there could not take it
}

// Errors of Push.
var (
	ErrNoTargets   = errors.New("gateway: push names no targets")
	ErrBadBiz      = errors.New("gateway: push biz must be 1..65535")
	ErrPayloadSize = errors.New("gateway: push payload over the max body")
)

// outcomeOffline counts, in pushwire_pushes_total{outcome}, the targets with no live connection.
const outcomeOffline = "offline"

// counts is one push's tally, shared by the fan-out chunks.
type counts struct {
	delivered, offline, failed, pending atomic.Int64
}

// message is one push encoded once: tail is meta and body, shared by every connection.
type message struct {
	id    string
	biz   uint16
	flags uint8
	tail  []byte
	metaN uint16
	bodyN uint32
	slow  SlowConsumerPolicy // the biz's
	ack   bool
	exp   int64 // with ack: unix nanoseconds after which it is no longer resent
}

func (n *Node) newMessage(id string, biz uint16, group string, payload []byte, ack bool, ttl time.Duration) *message {
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "id", id)
	if group != "" {
		meta = frame.AppendMetaString(meta, "group", group)
	}
	tail := make([]byte, 0, len(meta)+len(payload))
	tail = append(append(tail, meta...), payload...)
	m := &message{id: id, biz: biz, tail: tail, metaN: uint16(len(meta)), bodyN: uint32(len(payload)), ack: ack,
		slow: SlowConsumerClose}
	if b, ok := n.biz[biz]; ok {
		m.slow = b.SlowConsumer
	}
	if ack {
		m.flags = frame.FlagAck
		if ttl <= 0 {
			ttl = n.cfg.AckTTL
		}
		m.exp = n.clock.Now().Add(ttl).UnixNano()
	}
	return m
}

// Push delivers one message to its targets: first to the connections this instance holds, then,
// on a route store, to the other instances' (see route.go), waiting up to Config.RemoteTimeout
// for their reports. Large target sets are split across the fan-out workers; the message is
// encoded once and shared.
func (n *Node) Push(req *PushRequest) (PushResult, error) {
	var res PushResult
	if req.Biz == 0 {
		return res, ErrBadBiz
	}
	if len(req.Devices) == 0 && len(req.Users) == 0 && req.Group == "" && !req.Broadcast {
		return res, ErrNoTargets
	}
	if len(req.Payload) > n.cfg.MaxBody {
		return res, ErrPayloadSize
	}
	res.ID = n.cfg.Node + "-" + strconv.FormatUint(n.msgSeq.Add(1), 36)
	msg := n.newMessage(res.ID, req.Biz, req.Group, req.Payload, req.Ack, req.TTL)
	var c counts
	var targets []*Client
	var misses []string  // devices not held here
	var localUsers []int // connections held here per user
	switch {
	case len(req.Devices) > 0:
		targets = make([]*Client, 0, len(req.Devices))
		for _, d := range req.Devices {
			if s := n.table.ByDevice(req.App, d); s != nil {
				targets = append(targets, s)
			} else {
				misses = append(misses, d)
			}
		}
		res.Targets = len(req.Devices)
	case len(req.Users) > 0:
		localUsers = make([]int, len(req.Users))
		for i, u := range req.Users {
			before := len(targets)
			targets = n.table.ByUser(targets, req.App, u)
			localUsers[i] = len(targets) - before
		}
		res.Targets = len(targets)
	case req.Group != "":
		targets = n.groups.Members(nil, req.App, req.Group)
		res.Targets = len(targets)
	case req.Broadcast:
		targets = n.appClients(req.App)
		res.Targets = len(targets)
	}
	if err := n.fanout.Run(targets, func(chunk []*Client) { n.deliverChunk(msg, chunk, &c) }); err != nil {
		return res, err
	}
	if n.clustered() {
		n.pushRemote(req, msg, misses, localUsers, &res)
	} else {
		offline := len(misses)
		for _, k := range localUsers {
			if k == 0 {
				offline++
				res.Targets++
			}
		}
		res.Offline += offline
		n.m.pushes.WithLabelValues(outcomeOffline).Add(float64(offline))
	}
	res.Delivered += int(c.delivered.Load())
	res.Offline += int(c.offline.Load())
	res.Failed += int(c.failed.Load())
	res.Pending += int(c.pending.Load())
	return res, nil
}

// deliverChunk delivers msg to each client of chunk. The frame headers of the whole chunk are
// carved from one allocation; the meta and body are shared.
func (n *Node) deliverChunk(msg *message, chunk []*Client, c *counts) {
	slab := make([]byte, frame.HeaderLen*len(chunk))
	var offline, pending int64
	t := tally{typ: frame.TypePush}
	for i, s := range chunk {
		if !s.state().LoggedIn() {
			offline++
			continue
		}
		if msg.ack {
			n.keepPending(s, msg)
			pending++
		}
		n.deliverMessage(s, msg, slab[i*frame.HeaderLen:(i+1)*frame.HeaderLen:(i+1)*frame.HeaderLen], &t)
	}
	c.delivered.Add(t.n[outDelivered])
	c.failed.Add(t.n[outDropped] + t.n[outSlowConsumer] + t.n[outClosing])
	c.offline.Add(offline)
	c.pending.Add(pending)
	n.m.pushes.WithLabelValues(outcomeOffline).Add(float64(offline))
	t.flush(n.m)
}

// deliverMessage delivers msg to s with its own header (s's next push seq) written into head.
func (n *Node) deliverMessage(s *Client, msg *message, head []byte, t *tally) outcome {
	frame.AppendHeader(head[:0], frame.Header{Type: frame.TypePush, Flags: msg.flags, Biz: msg.biz,
		Seq: s.pushSeq.Add(1), MetaLen: msg.metaN, BodyLen: msg.bodyN})
	return n.deliver(s, frame.TypePush, head, msg.tail, msg.slow, t)
}

// resendPending sends a device's unacknowledged messages to its new connection (standalone: on a
// route store they come with the claim's answer, deliverPending).
func (n *Node) resendPending(s *Client) {
	n.resend(s, n.acks.pendingFor(s.app, s.device, n.clock.Now().UnixNano()))
}

// resend delivers msgs, oldest first, to s, until one cannot be queued.
func (n *Node) resend(s *Client, msgs []*message) {
	if len(msgs) == 0 {
		return
	}
	slab := make([]byte, frame.HeaderLen*len(msgs))
	t := tally{typ: frame.TypePush}
	for i, msg := range msgs {
		head := slab[i*frame.HeaderLen : (i+1)*frame.HeaderLen : (i+1)*frame.HeaderLen]
		if n.deliverMessage(s, msg, head, &t) != outDelivered {
			break
		}
	}
	n.m.resent.Add(float64(t.n[outDelivered]))
	t.flush(n.m)
}

// uptime is how long the node has run.
func (n *Node) uptime() time.Duration { return time.Since(n.started) }
