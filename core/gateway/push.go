package gateway

import (
	"errors"
	"strconv"
	"time"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
	"github.com/pushwire/pushwire/engines"
)

// PushRequest is one message to a set of targets of one app. Exactly one target kind is set.
type PushRequest struct {
	App     string
	Biz     uint16
	Devices []string // unicast / batch unicast
	Users   []string // every live connection of each user
	Payload []byte   // the PUSH body; not modified, shared by every delivery
}

// PushResult counts what happened to one push, so that nothing is lost silently:
// Targets = Delivered + Forwarded + Offline + Failed (targets counted per connection for users).
type PushResult struct {
	ID        string `json:"id"`
	Targets   int    `json:"targets"`
	Delivered int    `json:"delivered"` // queued to a connection on this instance
	Forwarded int    `json:"forwarded"` // handed to other instances
	Offline   int    `json:"offline"`   // no live connection
	Failed    int    `json:"failed"`    // a connection that could not take it (slow consumer, closing)
}

// Errors of Push.
var (
	ErrNoTargets   = errors.New("gateway: push names no targets")
	ErrBadBiz      = errors.New("gateway: push biz must be 1..65535")
	ErrPayloadSize = errors.New("gateway: push payload over the max body")
)

// Push delivers one message to the local connections of its targets.
func (n *Node) Push(req *PushRequest) (PushResult, error) {
	var res PushResult
	if req.Biz == 0 {
		return res, ErrBadBiz
	}
	if len(req.Devices) == 0 && len(req.Users) == 0 {
		return res, ErrNoTargets
	}
	if len(req.Payload) > n.cfg.MaxBody {
		return res, ErrPayloadSize
	}
	res.ID = n.cfg.Node + "-" + strconv.FormatUint(n.msgSeq.Add(1), 36)
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "id", res.ID)
	p := pushFrame{biz: req.Biz, meta: meta, body: req.Payload}
	for _, d := range req.Devices {
		res.Targets++
		n.deliver(&res, &p, n.table.ByDevice(req.App, d))
	}
	var list []*session.Session
	for _, u := range req.Users {
		list = n.table.ByUser(list[:0], req.App, u)
		if len(list) == 0 {
			res.Targets++
			res.Offline++
			n.m.pushes.WithLabelValues("offline").Inc()
			continue
		}
		for _, s := range list {
			res.Targets++
			n.deliver(&res, &p, s)
		}
	}
	return res, nil
}

type pushFrame struct {
	biz   uint16
	flags uint8
	meta  frame.Meta
	body  []byte
}

func (n *Node) deliver(res *PushResult, p *pushFrame, s *session.Session) {
	if s == nil {
		res.Offline++
		n.m.pushes.WithLabelValues("offline").Inc()
		return
	}
	if st := s.State(); st != session.StateActive && st != session.StateDraining {
		res.Offline++
		n.m.pushes.WithLabelValues("offline").Inc()
		return
	}
	f := frame.Frame{
		Header: frame.Header{Type: frame.TypePush, Flags: p.flags, Biz: p.biz, Seq: s.NextPushSeq()},
		Meta:   p.meta,
		Body:   p.body,
	}
	buf := frame.Append(make([]byte, 0, frame.HeaderLen+len(p.meta)+len(p.body)), &f)
	switch err := n.write(s, frame.TypePush, buf); {
	case err == nil:
		res.Delivered++
		n.m.pushes.WithLabelValues("delivered").Inc()
	case errors.Is(err, engines.ErrClosed):
		res.Offline++
		n.m.pushes.WithLabelValues("offline").Inc()
	default:
		res.Failed++
		n.m.pushes.WithLabelValues("failed").Inc()
	}
}

// uptime is how long the node has run.
func (n *Node) uptime() time.Duration { return time.Since(n.started) }
