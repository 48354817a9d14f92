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
	Group     string   // every member of the app's group on this instance
	Broadcast bool     // every connection of the app on this instance
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
	Forwarded int    `json:"forwarded"`         // handed to other instances
	Offline   int    `json:"offline"`           // no live connection
	Failed    int    `json:"failed"`            // a connection that could not take it (slow consumer, closing)
	Pending   int    `json:"pending,omitempty"` // with ack: kept for PUSH_ACK
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

// Push delivers one message to the local connections of its targets. Large target sets are
// split across the fan-out workers; the message is encoded once and shared.
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
	switch {
	case len(req.Devices) > 0:
		targets = make([]*Client, 0, len(req.Devices))
		for _, d := range req.Devices {
			if s := n.table.ByDevice(req.App, d); s != nil {
				targets = append(targets, s)
			} else {
				c.offline.Add(1)
			}
		}
		res.Targets = len(req.Devices)
	case len(req.Users) > 0:
		for _, u := range req.Users {
			before := len(targets)
			targets = n.table.ByUser(targets, req.App, u)
			if len(targets) == before {
				c.offline.Add(1)
				res.Targets++
			}
		}
		res.Targets += len(targets)
	case req.Group != "":
		targets = n.groups.Members(nil, req.App, req.Group)
		res.Targets = len(targets)
	case req.Broadcast:
		targets = make([]*Client, 0, n.table.Len())
		n.table.Range(func(s *Client) bool {
			if s.app == req.App {
				targets = append(targets, s)
			}
			return true
		})
		res.Targets = len(targets)
	}
	n.m.pushes.WithLabelValues(outcomeOffline).Add(float64(c.offline.Load()))
	if err := n.fanout.Run(targets, func(chunk []*Client) { n.deliverChunk(msg, chunk, &c) }); err != nil {
		return res, err
	}
	res.Delivered = int(c.delivered.Load())
	res.Offline = int(c.offline.Load())
	res.Failed = int(c.failed.Load())
	res.Pending = int(c.pending.Load())
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
			n.acks.keep(s.app, s.device, msg)
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

// resendPending sends a device's unacknowledged messages to its new connection.
func (n *Node) resendPending(s *Client) {
	msgs := n.acks.pendingFor(s.app, s.device, n.clock.Now().UnixNano())
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
