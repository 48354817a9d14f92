package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/frame"
)

// epoch anchors mono: a monotonic clock in an int64.
var epoch = time.Now()

func mono() int64 { return int64(time.Since(epoch)) }

// aLongTimeAgo is a deadline in the past: setting it interrupts blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// bufPool holds encode buffers shared by every client, so an idle connection keeps none.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

const maxPooledBuf = 64 << 10

// conn is one logged-in gateway connection. Its reader goroutine (readLoop) is the only one that
// reads the socket; writes come from any goroutine through write.
type conn struct {
	c  *Client
	nc net.Conn
	rd *frame.Reader

	proto string // the transport, set before login

	// Set by login, read-only afterwards.
	id, node string
	hb       time.Duration

	wmu sync.Mutex // held for one whole frame's write: frames never interleave

	nextSeq     atomic.Uint32 // the last request seq used; LOGIN is 1
	lastRecv    atomic.Int64  // mono() of the last frame read
	lastPushSeq uint32        // reader only

	closing chan struct{} // closed by shutdown
	done    chan struct{} // closed when readLoop has finished (after OnState(Disconnected))

	// GOAWAY: the reader sets the fields, then closes goawayCh (once).
	goawayCh    chan struct{}
	goawayErr   *Error
	goawayAt    time.Time
	goawayDelay time.Duration // retry_ms (else BackoffMin) with jitter

	mu      sync.Mutex
	closed  bool
	err     error // why the connection ended
	local   bool  // ended by Close or Run's context: not a failure
	timer   *time.Timer
	pending map[uint32]chan *Response // requests waiting, by seq; allocated on the first one
}

func newConn(c *Client, nc net.Conn) *conn {
	cn := &conn{
		c:        c,
		nc:       nc,
		rd:       frame.NewReader(nc, c.lim),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		goawayCh: make(chan struct{}),
	}
	cn.nextSeq.Store(1)
	return cn
}

// login sends LOGIN (seq 1) and waits for LOGIN_ACK, within cfg.Timeout and ctx.
func (cn *conn) login(ctx context.Context, info *ConnectInfo) error {
	deadline := time.Now().Add(cn.c.cfg.Timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := cn.nc.SetDeadline(deadline); err != nil {
		return &opError{"login", err}
	}
	stop := context.AfterFunc(ctx, func() { _ = cn.nc.SetDeadline(aLongTimeAgo) })
	err := cn.loginExchange(info)
	if !stop() {
		return fmt.Errorf("client: login: %w", context.Cause(ctx))
	}
	if err != nil {
		return err
	}
	if err := cn.nc.SetDeadline(time.Time{}); err != nil {
		return &opError{"login", err}
	}
	cn.lastRecv.Store(mono())
	return nil
}

func (cn *conn) loginExchange(info *ConnectInfo) error {
	cfg := &cn.c.cfg
	var meta frame.Meta
	for _, kv := range [...][2]string{
		{"token", info.Token}, {"device", cfg.Device}, {"app", cfg.App},
		{"platform", cfg.Platform}, {"sdk", cfg.SDK}, {"net", cfg.Network},
	} {
		if len(kv[1]) > frame.MaxMetaLen {
			return &opError{"login", fmt.Errorf("%s is %d bytes, over the meta limit", kv[0], len(kv[1]))}
		}
		meta = frame.AppendMetaString(meta, kv[0], kv[1])
	}
	f := frame.Frame{Header: frame.Header{Type: frame.TypeLogin, Seq: 1}, Meta: meta}
	if err := frame.Check(&f, cn.c.lim); err != nil {
		return &opError{"login", err}
	}
	if _, err := cn.nc.Write(frame.Append(nil, &f)); err != nil {
		return &opError{"login", err}
	}

	ack, err := cn.rd.Next()
	if err != nil {
		return &opError{"login", err}
	}
	switch ack.Type {
	case frame.TypeLoginAck:
	case frame.TypeError:
		return &Error{Code: ack.Code, Msg: ack.Meta.GetString("msg"), Frame: frame.TypeError}
	default:
		return &opError{"login", fmt.Errorf("%w: %s frame before LOGIN_ACK", errProtocol, ack.Type)}
	}
	if ack.Seq != 1 {
		return &opError{"login", fmt.Errorf("%w: LOGIN_ACK seq %d, want 1", errProtocol, ack.Seq)}
	}
	if ack.Code != frame.CodeOK {
		return &Error{Code: ack.Code, Msg: ack.Meta.GetString("msg"), Frame: frame.TypeLoginAck}
	}
	cn.id = ack.Meta.GetString("conn")
	cn.node = ack.Meta.GetString("node")
	cn.hb = cfg.Heartbeat
	if cn.hb <= 0 {
		if v, ok := ack.Meta.Get("hb"); ok {
			if n, err := strconv.ParseUint(string(v), 10, 32); err == nil && n > 0 {
				cn.hb = time.Duration(n) * cn.c.hbUnit
			}
		}
	}
	if cn.hb <= 0 {
		cn.hb = info.Heartbeat
	}
	if cn.hb <= 0 {
		cn.hb = DefaultHeartbeat
	}
	return nil
}

var errProtocol = errors.New("protocol violation")

// startHeartbeat arms the heartbeat timer: one time.AfterFunc per connection, re-armed at each beat.
func (cn *conn) startHeartbeat() {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if !cn.closed {
		cn.timer = time.AfterFunc(cn.hb, cn.heartbeat)
	}
}

// heartbeat runs on the timer's goroutine: it ends a connection that has been silent for
// missedBeats heartbeats (the gateway answers every PING), else sends PING and re-arms.
func (cn *conn) heartbeat() {
	if silent := time.Duration(mono() - cn.lastRecv.Load()); silent > missedBeats*cn.hb {
		cn.shutdown(ErrHeartbeatTimeout, false)
		return
	}
	if err := cn.write(&frame.Frame{Header: frame.Header{Type: frame.TypePing}}); err != nil {
		return // write has shut the connection down
	}
	cn.c.pings.Add(1)
	cn.mu.Lock()
	if !cn.closed {
		cn.timer.Reset(cn.hb)
	}
	cn.mu.Unlock()
}

// write encodes f and writes it whole under wmu, within cfg.Timeout. A failed write ends the
// connection (a partial frame cannot be taken back); write then returns the connection's reason.
func (cn *conn) write(f *frame.Frame) error {
	bp := bufPool.Get().(*[]byte)
	b := frame.Append((*bp)[:0], f)
	cn.wmu.Lock()
	var err error
	select {
	case <-cn.closing:
		err = net.ErrClosed
	default:
		if err = cn.nc.SetWriteDeadline(time.Now().Add(cn.c.cfg.Timeout)); err == nil {
			_, err = cn.nc.Write(b)
		}
	}
	cn.wmu.Unlock()
	if cap(b) <= maxPooledBuf {
		*bp = b[:0]
		bufPool.Put(bp)
	}
	if err != nil {
		cn.shutdown(&opError{"write", err}, false)
		reason, _ := cn.reason()
		return reason
	}
	return nil
}

// shutdown ends the connection once: it records why, stops the heartbeat, wakes waiting requests
// and closes the socket (which ends the reader). local marks a close asked for by the client.
func (cn *conn) shutdown(reason error, local bool) {
	cn.mu.Lock()
	if cn.closed {
		cn.mu.Unlock()
		return
	}
	cn.closed = true
	cn.err = reason
	cn.local = local
	if cn.timer != nil {
		cn.timer.Stop()
	}
	cn.pending = nil // waiters see closing
	cn.mu.Unlock()
	close(cn.closing)
	_ = cn.nc.Close()
}

func (cn *conn) reason() (error, bool) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.err, cn.local
}

// register reserves a seq for a request and the channel its RESPONSE goes to.
func (cn *conn) register() (uint32, chan *Response, error) {
	ch := make(chan *Response, 1)
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if cn.closed {
		return 0, nil, cn.err
	}
	if cn.pending == nil {
		cn.pending = make(map[uint32]chan *Response, 1)
	}
	for {
		seq := cn.nextSeq.Add(1)
		if _, busy := cn.pending[seq]; seq > 1 && !busy { // 0 and 1 (LOGIN) are never reused
			cn.pending[seq] = ch
			return seq, ch, nil
		}
	}
}

func (cn *conn) unregister(seq uint32) {
	cn.mu.Lock()
	delete(cn.pending, seq)
	cn.mu.Unlock()
}

// readLoop reads frames until the connection ends, then detaches it from the client, reports
// Disconnected and closes done.
func (cn *conn) readLoop() {
	c := cn.c
	var reason error
	for {
		f, err := cn.rd.Next()
		if err != nil {
			reason = &opError{"read", err}
			if cn.goawayErr != nil {
				reason = cn.goawayErr // the gateway closing after GOAWAY is the GOAWAY's doing
			}
			break
		}
		cn.lastRecv.Store(mono())
		if err := cn.handle(&f); err != nil {
			reason = err
			break
		}
	}
	cn.shutdown(reason, false) // no-op when something else ended it first: its reason stands
	reason, local := cn.reason()
	c.detach(cn, reason, local)
	c.setState(Disconnected, reason)
	close(cn.done)
}

// handle processes one frame on the reader goroutine. An error ends the connection.
func (cn *conn) handle(f *frame.Frame) error {
	c := cn.c
	switch f.Type {
	case frame.TypePong:
		c.pongs.Add(1)
	case frame.TypePush:
		return cn.onPush(f)
	case frame.TypeResponse:
		cn.onResponse(f)
	case frame.TypeGoaway:
		cn.onGoaway(f)
	case frame.TypeError:
		return &Error{Code: f.Code, Msg: f.Meta.GetString("msg"), Frame: frame.TypeError}
	default:
		// A receiver ignores what it does not expect (a second LOGIN_ACK, a client → gateway type).
		c.cfg.Logger.LogAttrs(context.Background(), slog.LevelDebug, "client: unexpected frame ignored",
			slog.String("device", c.cfg.Device), slog.String("type", f.Type.String()))
	}
	return nil
}

func (cn *conn) onPush(f *frame.Frame) error {
	c := cn.c
	c.pushes.Add(1)
	if cn.lastPushSeq != 0 && f.Seq > cn.lastPushSeq+1 {
		c.gaps.Add(1)
	}
	cn.lastPushSeq = f.Seq
	id, _ := f.Meta.Get("id")
	ack := f.Flags&frame.FlagAck != 0
	if ack && len(id) > 0 && !c.seen.add(id) {
		c.duplicates.Add(1)
		return cn.ackPush(f.Biz, id)
	}
	if c.cfg.OnPush != nil {
		p := Push{
			Biz:      f.Biz,
			Seq:      f.Seq,
			ID:       string(id),
			Group:    f.Meta.GetString("group"),
			Payload:  bytes.Clone(f.Body),
			Received: time.Now(),
		}
		if p.Payload == nil {
			p.Payload = []byte{}
		}
		c.inCallback.Add(1)
		c.cfg.OnPush(p)
		c.inCallback.Add(-1)
	}
	if ack {
		return cn.ackPush(f.Biz, id)
	}
	return nil
}

// ackPush answers a push with PUSH_ACK: same biz, meta id. It is sent after OnPush returned.
func (cn *conn) ackPush(biz uint16, id []byte) error {
	var mb [64]byte
	meta := frame.AppendMeta(frame.Meta(mb[:0]), "id", id)
	return cn.write(&frame.Frame{Header: frame.Header{Type: frame.TypePushAck, Biz: biz}, Meta: meta})
}

func (cn *conn) onResponse(f *frame.Frame) {
	cn.mu.Lock()
	ch := cn.pending[f.Seq]
	delete(cn.pending, f.Seq)
	cn.mu.Unlock()
	if ch == nil {
		return // its Request gave up (context) or never existed
	}
	ch <- &Response{
		Code: f.Code,
		Msg:  f.Meta.GetString("msg"),
		Meta: frame.Meta(bytes.Clone([]byte(f.Meta))),
		Body: bytes.Clone(f.Body),
	}
}

// onGoaway records the first GOAWAY; Run reconnects after retry_ms ± 25% (BackoffMin ± 25% when
// the GOAWAY has no retry_ms).
func (cn *conn) onGoaway(f *frame.Frame) {
	if cn.goawayErr != nil {
		return
	}
	cn.goawayErr = &Error{Code: f.Code, Msg: f.Meta.GetString("reason"), Frame: frame.TypeGoaway}
	cn.goawayAt = time.Now()
	retry := cn.c.cfg.BackoffMin // when retry_ms is missing or malformed
	if v, ok := f.Meta.Get("retry_ms"); ok {
		if ms, err := strconv.ParseUint(string(v), 10, 32); err == nil {
			retry = time.Duration(ms) * time.Millisecond
		}
	}
	cn.goawayDelay = jitter(retry)
	close(cn.goawayCh)
	cn.c.cfg.Logger.LogAttrs(context.Background(), slog.LevelDebug, "client: goaway",
		slog.String("device", cn.c.cfg.Device), slog.String("conn", cn.id),
		slog.String("reason", cn.goawayErr.Msg), slog.Duration("reconnect_in", cn.goawayDelay))
}

// jitter spreads d uniformly over [0.75d, 1.25d].
func jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d - d/4 + rand.N(d/2+1)
}

// reasonKey is the Stats.Errors key for err.
func reasonKey(err error) string {
	var se *Error
	var ce *ControlError
	var fe *frame.Error
	var oe *opError
	switch {
	case errors.As(err, &se):
		if se.Frame == frame.TypeGoaway {
			return "goaway"
		}
		return se.Code.String()
	case errors.As(err, &ce):
		return "control_" + strconv.Itoa(ce.Status)
	case errors.As(err, &oe) && oe.op == "dial":
		return "dial" // handshakes included: an EOF there is a failed dial, not a lost connection
	case errors.Is(err, ErrHeartbeatTimeout):
		return "heartbeat_timeout"
	case errors.Is(err, ErrNoEndpoint):
		return "no_endpoint"
	case errors.As(err, &fe), errors.Is(err, errProtocol):
		return "protocol"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.As(err, &oe):
		return oe.op
	}
	return "other"
}

// dedup remembers the last dedupSize acked push IDs: a ring for order, a map for lookup. Both
// grow on first use.
type dedup struct {
	ring []string
	next int // the ring slot to overwrite once full
	set  map[string]struct{}
}

const dedupSize = 1024

// add records id and reports whether it was new.
func (d *dedup) add(id []byte) bool {
	if _, ok := d.set[string(id)]; ok {
		return false
	}
	s := string(id)
	if d.set == nil {
		d.set = make(map[string]struct{})
	}
	if len(d.ring) < dedupSize {
		d.ring = append(d.ring, s)
	} else {
		delete(d.set, d.ring[d.next])
		d.ring[d.next] = s
		d.next = (d.next + 1) % dedupSize
	}
	d.set[s] = struct{}{}
	return true
}
