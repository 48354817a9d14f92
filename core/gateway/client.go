package gateway

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
	"github.com/pushwire/pushwire/engines"
)

// Client is one connection's protocol object, after centrifuge's Client: it owns the connection's
// state, identity, counters, inbound rate limiter and groups, and handles each frame the
// connection sends (login, ping, request, join and leave, push ack) and each event the node sends
// it (drain, eviction, timeouts, close with a code). Its state moves only through the session
// transition table (session.Next): an illegal move is refused with a *session.TransitionError,
// never set.
//
// Concurrency: the engine never calls onData and onClose of one connection concurrently; the
// state, the close and the writes are safe from any goroutine (pushes, timeouts, eviction, drain,
// backend answers).
//
// Memory: an idle logged-in client is this struct (128 bytes), its identity strings and its index
// entries; its group list is allocated at its first JOIN.
type Client struct {
	node *Node
	conn engines.Conn
	cid  uint64 // the node's ID of the connection: unique across every listener and transport of the node

	// Identity, set at login before the client enters the table and never changed after: readers
	// on other goroutines find the client through the table, whose lock orders the writes first.
	app, device, user string
	gen               atomic.Uint64 // per-device connection generation; 0 before login; the route store's once it answered the claim

	word     atomic.Uint32 // state (low byte) and close code (second byte); see transition
	pushSeq  atomic.Uint32 // seq of the last PUSH sent
	lastSeen atomic.Int64  // unix nanoseconds of the last frame received (the wheel's coarse clock)
	rateTAT  int64         // the rate limiter's theoretical arrival time (GCRA); onData's only

	inTable atomic.Bool // added to the table and not yet removed
	gmu     sync.Mutex  // guards groups
	groups  *groupList  // the groups joined; nil before the first join; &leftAll once closed
}

// groupList is a client's groups, allocated at its first join: most connections never join one,
// and an idle connection should not pay for it.
type groupList struct{ names []string }

// leftAll marks a client whose LeaveAll ran: no more joins.
var leftAll groupList

const (
	stateBits = 8
	stateMask = 1<<stateBits - 1
)

func newClient(n *Node, conn engines.Conn, now int64) *Client {
	c := &Client{node: n, conn: conn, cid: n.connIDs.Add(1)}
	c.lastSeen.Store(now)
	return c
}

// id is the connection's ID in the node. Not the engine's: a node may serve several listeners
// (one per transport), each an engine numbering its own connections.
func (c *Client) id() uint64 { return c.cid }

// state is the current state.
func (c *Client) state() session.State { return session.State(c.word.Load() & stateMask) }

// closeCode is why the client closed: frame.CodeOK while open, and when the transport closed
// without a reason of the node's.
func (c *Client) closeCode() frame.Code { return frame.Code(c.word.Load() >> stateBits) }

// transition applies ev through the session transition table. A move to CLOSED records code as
// the close reason, atomically with the move, so the first reason sticks. It returns the state
// it moved from, or a *session.TransitionError when ev is not legal in the current state.
func (c *Client) transition(ev session.Event, code frame.Code) (session.State, error) {
	for {
		w := c.word.Load()
		from := session.State(w & stateMask)
		to, ok := session.Next(from, ev)
		if !ok {
			return from, &session.TransitionError{From: from, Event: ev}
		}
		next := w&^stateMask | uint32(to)
		if to == session.StateClosed {
			next = uint32(code)<<stateBits | uint32(to)
		}
		if c.word.CompareAndSwap(w, next) {
			return from, nil
		}
	}
}

// close moves the client to CLOSED with code as the reason and closes its connection; what was
// queued before (an ERROR, a GOAWAY) is still flushed by the engine. It reports whether this call
// closed it.
func (c *Client) close(code frame.Code) bool {
	if _, err := c.transition(session.EventClose, code); err != nil {
		return false
	}
	_ = c.conn.Close()
	return true
}

// onData decodes every whole frame in in and handles it, and returns how many bytes it consumed:
// a partial frame is left for the next call. After a protocol error or a close it consumes
// everything.
func (c *Client) onData(in []byte) int {
	n := c.node
	if c.state() == session.StateClosed {
		return len(in)
	}
	consumed := 0
	for consumed < len(in) {
		f, k, err := frame.Decode(in[consumed:], n.lim)
		if errors.Is(err, frame.ErrShort) {
			break
		}
		if err != nil {
			code, msg := frame.CodeBadFrame, err.Error()
			if fe, ok := errors.AsType[*frame.Error](err); ok {
				code, msg = fe.Code, fe.Msg
			}
			n.m.protocolErrors.Inc()
			c.fail(code, msg)
			return len(in)
		}
		consumed += k
		n.m.framesIn[f.Type].Inc()
		if st := c.state(); session.Check(st, f.Type) != frame.CodeOK {
			n.m.protocolErrors.Inc()
			c.fail(session.Check(st, f.Type), f.Type.String()+" not accepted in state "+st.String())
			return len(in)
		}
		c.lastSeen.Store(n.now())
		c.handle(&f)
		if c.state() == session.StateClosed {
			return len(in)
		}
	}
	return consumed
}

// handle serves one frame its state accepts.
func (c *Client) handle(f *frame.Frame) {
	n := c.node
	switch f.Type {
	case frame.TypeLogin:
		c.login(f)
	case frame.TypePing:
		c.send(frame.Header{Type: frame.TypePong, Seq: f.Seq}, nil, nil)
	case frame.TypePushAck:
		n.m.pushAcks.Inc()
		if id, ok := f.Meta.Get("id"); ok {
			n.ackPending(c, id)
		}
	default: // REQUEST, JOIN, LEAVE: session.Check lets nothing else through
		if !c.allow(n.clock.Now().UnixNano()) {
			n.m.rateLimited.Inc()
			c.respond(f, frame.CodeRateLimited, "over "+strconv.FormatFloat(n.cfg.RateLimit, 'g', -1, 64)+" requests/s")
			return
		}
		if f.Type == frame.TypeRequest {
			c.request(f)
		} else {
			c.joinLeave(f)
		}
	}
}

// login verifies the token of a LOGIN, registers the identity and answers LOGIN_ACK; a bad token
// is answered LOGIN_ACK AUTH_FAILED and closes the connection.
func (c *Client) login(f *frame.Frame) {
	n := c.node
	if _, err := c.transition(session.EventLogin, 0); err != nil {
		return // closed meanwhile (a timeout)
	}
	now := n.clock.Now()
	tok, ok := f.Meta.Get("token")
	if !ok || len(tok) == 0 {
		c.loginFailed(f.Seq, "missing", "token missing")
		return
	}
	id, err := n.verifier.Verify(string(tok), now)
	switch {
	case err != nil:
		c.loginFailed(f.Seq, "invalid", "token rejected: "+err.Error())
		return
	case !metaIs(f.Meta, "device", id.Device):
		c.loginFailed(f.Seq, "mismatch", "token is for another device")
		return
	case !metaIs(f.Meta, "app", id.App):
		c.loginFailed(f.Seq, "mismatch", "token is for another app")
		return
	}
	c.app, c.device, c.user = id.App, id.Device, id.User
	c.gen.Store(n.nextGen(uint64(now.UnixNano())))
	if _, err := c.transition(session.EventTokenOK, 0); err != nil {
		return // timed out meanwhile
	}
	n.register(c)
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "conn", strconv.FormatUint(c.id(), 10))
	meta = frame.AppendMetaString(meta, "hb", n.hb)
	meta = frame.AppendMetaString(meta, "node", n.cfg.Node)
	c.send(frame.Header{Type: frame.TypeLoginAck, Seq: f.Seq}, meta, nil)
	n.m.logins.WithLabelValues("ok").Inc()
	if n.draining.Load() {
		// Logged in while the drain's GOAWAYs were going out: send this one its own.
		c.goaway(n.retryJitter())
	}
	n.notify(forward.EventConnect, c, "")
	if n.clustered() {
		// Queued after LOGIN_ACK, so that nothing the answer brings precedes it. The store answers
		// on the route writer's goroutine: the assigned generation, the device's groups and
		// unacknowledged messages, and the previous connection to close. The connect notification
		// carries the generation this node proposed, which the store keeps unless the device had
		// a higher one (clocks out of step).
		n.cl.w.enqueue(routeOp{kind: opClaim, c: c})
	} else {
		n.resendPending(c)
	}
}

// metaIs reports whether meta's key, when present, is want.
func metaIs(m frame.Meta, key, want string) bool {
	v, ok := m.Get(key)
	return !ok || string(v) == want
}

func (c *Client) loginFailed(seq uint32, result, msg string) {
	c.node.m.logins.WithLabelValues(result).Inc()
	c.send(frame.Header{Type: frame.TypeLoginAck, Code: frame.CodeAuthFailed, Seq: seq}, frame.AppendMetaString(nil, "msg", msg), nil)
	if _, err := c.transition(session.EventTokenBad, frame.CodeAuthFailed); err == nil {
		_ = c.conn.Close()
	}
}

// allow is the connection's inbound rate limit (GCRA): it reports whether one more limited frame
// may pass at now (unix nanoseconds).
func (c *Client) allow(now int64) bool {
	n := c.node
	if n.rateIvl == 0 {
		return true
	}
	tat := max(c.rateTAT, now)
	if tat-now > n.rateTol {
		return false
	}
	c.rateTAT = tat + n.rateIvl
	return true
}

// request hands a REQUEST to its business's forward pool; the answer comes back as RESPONSE from
// a pool worker.
func (c *Client) request(f *frame.Frame) {
	n := c.node
	n.m.requests.Inc()
	biz, seq := f.Biz, f.Seq
	err := n.fwd.Submit(&forward.Request{
		App: c.app, Device: c.device, User: c.user, Biz: biz, Conn: c.id(), Node: n.cfg.Node, Seq: seq,
		Meta: f.Meta, Body: f.Body,
		Done: func(r forward.Response) {
			var meta frame.Meta
			if r.Msg != "" {
				meta = frame.AppendMetaString(nil, "msg", r.Msg)
			}
			n.m.responses.WithLabelValues(r.Code.String()).Inc()
			c.send(frame.Header{Type: frame.TypeResponse, Code: r.Code, Biz: biz, Seq: seq}, meta, r.Body)
		},
	})
	if err != nil {
		code := frame.CodeBackendError
		if fe, ok := errors.AsType[*forward.Error](err); ok {
			code = fe.Code
		}
		n.m.responses.WithLabelValues(code.String()).Inc()
		c.respond(f, code, err.Error())
	}
}

// maxGroupLen bounds a group name.
const maxGroupLen = 128

// joinLeave serves JOIN and LEAVE: the biz must be configured and allow client joins, and a
// connection joins at most Config.MaxGroupsPerConn groups.
func (c *Client) joinLeave(f *frame.Frame) {
	n := c.node
	b, ok := n.biz[f.Biz]
	switch {
	case !ok:
		c.respond(f, frame.CodeUnknownBiz, "no backend configured for biz "+strconv.Itoa(int(f.Biz)))
		return
	case !b.AllowJoin:
		c.respond(f, frame.CodeForbidden, "biz "+strconv.Itoa(int(f.Biz))+" does not let clients join groups")
		return
	}
	g := f.Meta.GetString("group")
	if g == "" || len(g) > maxGroupLen {
		c.respond(f, frame.CodeBadFrame, "meta group must be 1.."+strconv.Itoa(maxGroupLen)+" bytes")
		return
	}
	if f.Type == frame.TypeLeave {
		n.groups.Leave(c, g)
		n.recordMembership(c.app, c.device, g, false)
		c.respond(f, frame.CodeOK, "")
		return
	}
	if _, err := n.groups.Join(c, g, max(n.cfg.MaxGroupsPerConn, 0)); errors.Is(err, errGroupLimit) {
		c.respond(f, frame.CodeForbidden, "at most "+strconv.Itoa(n.cfg.MaxGroupsPerConn)+" groups per connection")
		return
	}
	n.recordMembership(c.app, c.device, g, true)
	c.respond(f, frame.CodeOK, "")
}

// respond answers a REQUEST, JOIN or LEAVE with RESPONSE: same biz and seq, msg on failure.
func (c *Client) respond(f *frame.Frame, code frame.Code, msg string) {
	var meta frame.Meta
	if msg != "" {
		meta = frame.AppendMetaString(nil, "msg", msg)
	}
	c.send(frame.Header{Type: frame.TypeResponse, Code: code, Biz: f.Biz, Seq: f.Seq}, meta, nil)
}

// send encodes one frame into a fresh buffer and delivers it (deliver: a full write queue closes
// the connection as a slow consumer).
func (c *Client) send(h frame.Header, meta frame.Meta, body []byte) outcome {
	f := frame.Frame{Header: h, Meta: meta, Body: body}
	buf := frame.Append(make([]byte, 0, frame.HeaderLen+len(meta)+len(body)), &f)
	var t tally
	o := c.node.deliver(c, h.Type, buf, nil, SlowConsumerClose, &t)
	t.flush(c.node.m)
	return o
}

// fail answers a protocol violation or a timeout with ERROR and closes the connection.
func (c *Client) fail(code frame.Code, msg string) {
	c.send(frame.Header{Type: frame.TypeError, Code: code}, frame.AppendMetaString(nil, "msg", msg), nil)
	c.close(code)
}

// goaway tells the client the instance drains: GOAWAY SHUTTING_DOWN with retry_ms. A logged-in
// client moves to DRAINING, where it may still PING and PUSH_ACK; one not logged in is closed.
func (c *Client) goaway(retryMs int) {
	if c.state() != session.StateConnected {
		if _, err := c.transition(session.EventGoaway, 0); err != nil {
			return // already draining or closed
		}
	}
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "reason", "shutting down")
	meta = frame.AppendMetaString(meta, "retry_ms", strconv.Itoa(retryMs))
	c.node.m.goaways.Inc()
	c.send(frame.Header{Type: frame.TypeGoaway, Code: frame.CodeShuttingDown}, meta, nil)
	if c.state() == session.StateConnected {
		c.close(frame.CodeShuttingDown)
	}
}

// evict closes a client displaced by a newer connection of its device or user: GOAWAY EVICTED.
func (c *Client) evict() {
	meta := frame.AppendMetaString(nil, "reason", "evicted: a newer connection of the same device or user")
	c.send(frame.Header{Type: frame.TypeGoaway, Code: frame.CodeEvicted}, meta, nil)
	c.close(frame.CodeEvicted)
}

// onClose ends the client when the engine reports its connection closed: it leaves its groups and
// the table, and the businesses are told.
func (c *Client) onClose(err error) {
	n := c.node
	_, _ = c.transition(session.EventClose, frame.CodeOK) // the transport closed first: no reason of ours
	label := "transport"
	switch code := c.closeCode(); {
	case code != frame.CodeOK:
		label = code.String()
	case errors.Is(err, engines.ErrWriteTimeout):
		label = frame.CodeSlowConsumer.String()
	case err == nil:
		label = "local"
	}
	n.m.closes.WithLabelValues(label).Inc()
	if n.unregister(c) {
		if n.clustered() {
			n.cl.w.enqueue(routeOp{kind: opRelease, c: c})
		}
		n.notify(forward.EventDisconnect, c, label)
	}
	n.log.Debug("connection closed", "conn", c.id(), "device", c.device, "reason", label, "err", err)
}
