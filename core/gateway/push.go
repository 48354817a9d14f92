package gateway

import (
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
	"github.com/pushwire/pushwire/engines"
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

// Reasons a push is not delivered to a connection, as counted in pushwire_pushes_total{outcome}.
const (
	outcomeDelivered    = "delivered"
	outcomeOffline      = "offline"       // no live connection of the target
	outcomeClosing      = "closing"       // the connection closed while the push was on its way
	outcomeSlowConsumer = "slow_consumer" // the write queue overflowed; the connection was closed
	outcomeDropped      = "dropped"       // the write queue overflowed; the biz drops instead
)

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
	drop  bool // the biz's slow-consumer policy is "drop"
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
	m := &message{id: id, biz: biz, tail: tail, metaN: uint16(len(meta)), bodyN: uint32(len(payload)), ack: ack}
	if b, ok := n.biz[biz]; ok && b.SlowConsumer == forward.SlowConsumerDrop {
		m.drop = true
	}
	if ack {
		m.flags = frame.FlagAck
		if ttl <= 0 {
			ttl = n.cfg.AckTTL
		}
		m.exp = time.Now().Add(ttl).UnixNano()
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
	var targets []*session.Session
	switch {
	case len(req.Devices) > 0:
		targets = make([]*session.Session, 0, len(req.Devices))
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
		targets = make([]*session.Session, 0, n.table.Len())
		n.table.Range(func(s *session.Session) bool {
			if s.App == req.App {
				targets = append(targets, s)
			}
			return true
		})
		res.Targets = len(targets)
	}
	n.m.pushes.WithLabelValues(outcomeOffline).Add(float64(c.offline.Load()))
	if err := n.fanout.Run(targets, func(chunk []*session.Session) { n.deliverChunk(msg, chunk, &c) }); err != nil {
		return res, err
	}
	res.Delivered = int(c.delivered.Load())
	res.Offline = int(c.offline.Load())
	res.Failed = int(c.failed.Load())
	res.Pending = int(c.pending.Load())
	return res, nil
}

// deliverChunk writes msg to each session of chunk. The frame headers of the whole chunk are
// carved from one allocation; the meta and body are shared.
func (n *Node) deliverChunk(msg *message, chunk []*session.Session, c *counts) {
	slab := make([]byte, frame.HeaderLen*len(chunk))
	var delivered, offline, failed, pending, slow, dropped, closing int64
	for i, s := range chunk {
		if st := s.State(); st != session.StateActive && st != session.StateDraining {
			offline++
			continue
		}
		if msg.ack {
			n.acks.keep(s.App, s.Device, msg)
			pending++
		}
		head := slab[i*frame.HeaderLen : (i+1)*frame.HeaderLen : (i+1)*frame.HeaderLen]
		switch err := n.writeShared(s, msg, head); {
		case err == nil:
			delivered++
		case errors.Is(err, engines.ErrQueueFull) && msg.drop:
			dropped++
			failed++
		case errors.Is(err, engines.ErrQueueFull):
			slow++
			failed++
			n.m.slowConsumers.Inc()
			n.kill(s, frame.CodeSlowConsumer)
		default:
			closing++
			failed++
		}
	}
	c.delivered.Add(delivered)
	c.offline.Add(offline)
	c.failed.Add(failed)
	c.pending.Add(pending)
	m := n.m
	m.pushes.WithLabelValues(outcomeDelivered).Add(float64(delivered))
	m.pushes.WithLabelValues(outcomeOffline).Add(float64(offline))
	m.pushes.WithLabelValues(outcomeSlowConsumer).Add(float64(slow))
	m.pushes.WithLabelValues(outcomeDropped).Add(float64(dropped))
	m.pushes.WithLabelValues(outcomeClosing).Add(float64(closing))
	m.framesOut[frame.TypePush].Add(float64(delivered))
}

// writeShared queues msg to s with its own header (s's next push seq) written into head.
func (n *Node) writeShared(s *session.Session, msg *message, head []byte) error {
	frame.AppendHeader(head[:0], frame.Header{Type: frame.TypePush, Flags: msg.flags, Biz: msg.biz,
		Seq: s.NextPushSeq(), MetaLen: msg.metaN, BodyLen: msg.bodyN})
	if fw, ok := s.Conn.(engines.FrameWriter); ok {
		return fw.WriteFrame(head, msg.tail)
	}
	buf := make([]byte, 0, len(head)+len(msg.tail))
	return s.Conn.Write(append(append(buf, head...), msg.tail...))
}

// resendPending sends a device's unacknowledged messages to its new connection.
func (n *Node) resendPending(s *session.Session) {
	msgs := n.acks.pendingFor(s.App, s.Device, time.Now().UnixNano())
	if len(msgs) == 0 {
		return
	}
	var c counts
	slab := make([]byte, frame.HeaderLen*len(msgs))
	for i, msg := range msgs {
		head := slab[i*frame.HeaderLen : (i+1)*frame.HeaderLen : (i+1)*frame.HeaderLen]
		if err := n.writeShared(s, msg, head); err != nil {
			break
		}
		c.delivered.Add(1)
	}
	n.m.resent.Add(float64(c.delivered.Load()))
}

// uptime is how long the node has run.
func (n *Node) uptime() time.Duration { return time.Since(n.started) }
