package floor

import (
	"errors"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/core/frame"
)

// loop is one event loop: an epoll instance, the connections it owns, and its read buffer.
type loop struct {
	s    *Server
	idx  int
	epfd int
	efd  int // eventfd: wakes the loop for new connections and for Close

	conns  []*conn // by file descriptor; only this loop's goroutine touches it
	buf    []byte  // reads land here, after a connection's partial frame
	out    []byte  // the replies to one read, written in one go
	meta   frame.Meta
	events []unix.EpollEvent

	inMu  sync.Mutex
	inbox []int // accepted descriptors handed to this loop

	lastAcceptLog time.Time
}

func newLoop(s *Server, idx int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, errors.New("floor: epoll_create1: " + err.Error())
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)
		return nil, errors.New("floor: eventfd: " + err.Error())
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(efd)}); err != nil {
		_ = unix.Close(efd)
		_ = unix.Close(epfd)
		return nil, errors.New("floor: epoll: the eventfd: " + err.Error())
	}
	return &loop{
		s:      s,
		idx:    idx,
		epfd:   epfd,
		efd:    efd,
		conns:  make([]*conn, 1024),
		buf:    make([]byte, s.lim.MaxFrame()+64<<10), // a partial frame is always shorter than MaxFrame
		meta:   make(frame.Meta, 0, 512),
		events: make([]unix.EpollEvent, 256),
	}, nil
}

// watchListener adds the listening socket to this loop's epoll (loop 0 accepts).
func (lp *loop) watchListener() error {
	return unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, lp.s.lfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(lp.s.lfd)})
}

// wake makes the loop look at its inbox and at Close.
func (lp *loop) wake() {
	var one = [8]byte{1}
	_, _ = unix.Write(lp.efd, one[:])
}

// closeFds closes the loop's epoll and eventfd descriptors; after run returned.
func (lp *loop) closeFds() {
	_ = unix.Close(lp.efd)
	_ = unix.Close(lp.epfd)
}

// run serves events until the server closes.
func (lp *loop) run() {
	s := lp.s
	for {
		n, err := unix.EpollWait(lp.epfd, lp.events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			s.log.Error("floor: epoll_wait failed; the loop stops", "loop", lp.idx, "err", err)
			return
		}
		for i := range n {
			ev := &lp.events[i]
			fd := int(ev.Fd)
			switch {
			case fd == lp.efd:
				var b [8]byte
				_, _ = unix.Read(lp.efd, b[:])
				if s.stopping.Load() {
					return
				}
				lp.adopt()
			case lp.idx == 0 && fd == s.lfd:
				lp.accept()
			default:
				if fd >= len(lp.conns) || lp.conns[fd] == nil {
					continue // closed earlier in this batch
				}
				c := lp.conns[fd]
				if ev.Events&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR|unix.EPOLLRDHUP) != 0 {
					lp.read(c)
				}
				// A stale event of a closed descriptor reused in this batch only tries a
				// read or a flush, which find nothing to do.
				if lp.conns[fd] == c && ev.Events&(unix.EPOLLOUT|unix.EPOLLERR) != 0 {
					c.flush()
				}
			}
		}
		if s.stopping.Load() {
			return
		}
	}
}

// accept takes the connections waiting on the listener and hands them out round-robin.
func (lp *loop) accept() {
	s := lp.s
	for range 256 {
		nfd, _, err := unix.Accept4(s.lfd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		switch {
		case err == nil:
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.ECONNABORTED):
			continue
		case errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENFILE), errors.Is(err, unix.ENOBUFS), errors.Is(err, unix.ENOMEM):
			// Out of descriptors: the listener would wake this level-triggered loop at once
			// again. Take it out of epoll for a moment; the backlog keeps the clients waiting.
			if time.Since(lp.lastAcceptLog) > time.Second {
				lp.lastAcceptLog = time.Now()
				s.log.Warn("floor: accept failed; pausing accepts for 100ms", "err", err, "conns", s.conns.Load())
			}
			if unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_DEL, s.lfd, nil) == nil {
				time.AfterFunc(100*time.Millisecond, func() {
					if !s.stopping.Load() {
						_ = lp.watchListener()
					}
				})
			}
			return
		default:
			if time.Since(lp.lastAcceptLog) > time.Second {
				lp.lastAcceptLog = time.Now()
				s.log.Warn("floor: accept failed", "err", err)
			}
			return
		}
		_ = unix.SetsockoptInt(nfd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
		target := s.loops[int(s.rr.Add(1)-1)%len(s.loops)]
		if target == lp {
			lp.add(nfd)
			continue
		}
		target.inMu.Lock()
		target.inbox = append(target.inbox, nfd)
		target.inMu.Unlock()
		target.wake()
	}
}

// adopt registers the descriptors handed to this loop.
func (lp *loop) adopt() {
	lp.inMu.Lock()
	fds := lp.inbox
	lp.inbox = nil
	lp.inMu.Unlock()
	for _, fd := range fds {
		lp.add(fd)
	}
}

// add makes fd a connection of this loop.
func (lp *loop) add(fd int) {
	s := lp.s
	if fd >= len(lp.conns) {
		grown := make([]*conn, max(fd+1, 2*len(lp.conns)))
		copy(grown, lp.conns)
		lp.conns = grown
	}
	c := &conn{fd: fd, lp: lp, id: s.connSeq.Add(1)}
	lp.conns[fd] = c
	s.conns.Add(1)
	if err := unix.EpollCtl(lp.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		s.log.Warn("floor: epoll: adding a connection", "err", err)
		lp.close(c)
	}
}

// read reads what the socket holds after c's partial frame and handles every whole frame.
func (lp *loop) read(c *conn) {
	buf := lp.buf
	n0 := copy(buf, c.partial)
	n, err := unix.Read(c.fd, buf[n0:])
	switch {
	case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
		return
	case err != nil || n <= 0:
		lp.close(c) // the peer closed, reset, or a shut-down socket reached its end
		return
	}
	c.mu.Lock()
	dead := c.dead
	c.mu.Unlock()
	if dead {
		c.partial = nil // on its way out: input is discarded
		return
	}
	data := buf[:n0+n]
	used := lp.handle(c, data)
	if rest := data[used:]; len(rest) > 0 {
		c.partial = append(c.partial[:0], rest...)
	} else {
		c.partial = nil
	}
}

// handle serves the whole frames at the start of data and returns the bytes they take. Replies
// are written together at the end. A protocol error answers ERROR and ends the connection, as
// the gateway does, and consumes everything.
func (lp *loop) handle(c *conn, data []byte) int {
	lp.out = lp.out[:0]
	used := 0
	for used < len(data) {
		f, k, err := frame.Decode(data[used:], lp.s.lim)
		if errors.Is(err, frame.ErrShort) {
			break
		}
		if err != nil {
			code, msg := frame.CodeBadFrame, err.Error()
			if fe, ok := errors.AsType[*frame.Error](err); ok {
				code, msg = fe.Code, fe.Msg
			}
			lp.fail(c, code, msg)
			return len(data)
		}
		used += k
		if !lp.frame(c, &f) {
			return len(data)
		}
	}
	if len(lp.out) > 0 {
		c.send(lp.out, false)
	}
	return used
}

// frame serves one frame. It returns false when the connection is ending.
func (lp *loop) frame(c *conn, f *frame.Frame) bool {
	if !c.loggedIn {
		if f.Type != frame.TypeLogin {
			lp.fail(c, frame.CodeNotLoggedIn, f.Type.String()+" not accepted in state CONNECTED")
			return false
		}
		return lp.login(c, f)
	}
	switch f.Type {
	case frame.TypePing:
		lp.reply(frame.Header{Type: frame.TypePong, Seq: f.Seq}, nil)
	case frame.TypeRequest:
		lp.reply(frame.Header{Type: frame.TypeResponse, Code: frame.CodeUnknownBiz, Biz: f.Biz, Seq: f.Seq},
			frame.AppendMetaString(lp.meta[:0], "msg", "the floor serves no business"))
	case frame.TypePushAck:
		// The floor keeps no message for an acknowledgement.
	case frame.TypeJoin, frame.TypeLeave:
		lp.joinLeave(c, f)
	default:
		lp.fail(c, frame.CodeBadFrame, f.Type.String()+" not accepted in state ACTIVE")
		return false
	}
	return true
}

// login answers LOGIN with LOGIN_ACK. The token is not verified (it must be there, as the
// protocol requires); the device and app come from the frame's meta (app: the only app when the
// LOGIN names none).
func (lp *loop) login(c *conn, f *frame.Frame) bool {
	s := lp.s
	refuse := func(msg string) bool {
		lp.reply(frame.Header{Type: frame.TypeLoginAck, Code: frame.CodeAuthFailed, Seq: f.Seq},
			frame.AppendMetaString(lp.meta[:0], "msg", msg))
		c.send(lp.out, false)
		lp.out = lp.out[:0]
		c.finish()
		return false
	}
	if tok, _ := f.Meta.Get("token"); len(tok) == 0 {
		return refuse("token missing")
	}
	dev, _ := f.Meta.Get("device")
	if len(dev) == 0 || len(dev) > maxIDLen {
		return refuse("meta device must be 1.." + strconv.Itoa(maxIDLen) + " bytes")
	}
	app := s.reg.app(f.Meta)
	if app == nil {
		return refuse("meta app: not an app of this deployment")
	}
	c.device = string(dev)
	c.app = app
	c.loggedIn = true
	s.sessions.Add(1)
	s.reg.login(c)
	var idb [20]byte
	m := frame.AppendMeta(lp.meta[:0], "conn", strconv.AppendUint(idb[:0], c.id, 10))
	m = frame.AppendMetaString(m, "hb", s.hb)
	m = frame.AppendMetaString(m, "node", s.cfg.Node)
	lp.meta = m
	lp.reply(frame.Header{Type: frame.TypeLoginAck, Seq: f.Seq}, m)
	return true
}

// joinLeave answers JOIN and LEAVE with RESPONSE, recording the membership.
func (lp *loop) joinLeave(c *conn, f *frame.Frame) {
	respond := func(code frame.Code, msg string) {
		var m frame.Meta
		if msg != "" {
			m = frame.AppendMetaString(lp.meta[:0], "msg", msg)
		}
		lp.reply(frame.Header{Type: frame.TypeResponse, Code: code, Biz: f.Biz, Seq: f.Seq}, m)
	}
	if f.Biz == 0 {
		respond(frame.CodeUnknownBiz, "biz 0 is the connection itself: name a business")
		return
	}
	g, _ := f.Meta.Get("group")
	if len(g) == 0 || len(g) > maxGroupLen {
		respond(frame.CodeBadFrame, "meta group must be 1.."+strconv.Itoa(maxGroupLen)+" bytes")
		return
	}
	if f.Type == frame.TypeLeave {
		lp.s.reg.leave(c, string(g))
		respond(frame.CodeOK, "")
		return
	}
	if _, err := lp.s.reg.join(c, string(g), lp.s.cfg.MaxGroupsPerConn); err != nil {
		respond(frame.CodeForbidden, "at most "+strconv.Itoa(lp.s.cfg.MaxGroupsPerConn)+" groups per connection")
		return
	}
	respond(frame.CodeOK, "")
}

// reply appends a frame to the replies of this read.
func (lp *loop) reply(h frame.Header, meta frame.Meta) {
	lp.out = frame.Append(lp.out, &frame.Frame{Header: h, Meta: meta})
}

// fail answers a protocol error with ERROR (after the replies so far) and ends the connection.
func (lp *loop) fail(c *conn, code frame.Code, msg string) {
	lp.s.protocolErrors.Add(1)
	lp.reply(frame.Header{Type: frame.TypeError, Code: code}, frame.AppendMetaString(lp.meta[:0], "msg", msg))
	c.send(lp.out, false)
	lp.out = lp.out[:0]
	c.finish()
}

// close closes c: out of the indexes, then its descriptor, then out of the table.
func (lp *loop) close(c *conn) {
	s := lp.s
	if c.loggedIn {
		s.reg.logout(c)
		s.sessions.Add(-1)
	}
	c.mu.Lock()
	c.closed, c.dead, c.pending = true, true, nil
	_ = unix.Close(c.fd)
	c.mu.Unlock()
	c.partial = nil
	lp.conns[c.fd] = nil
	s.conns.Add(-1)
	s.closes.Add(1)
}

// closeAll closes every connection of the loop (Close, after run returned) and returns how many.
func (lp *loop) closeAll() int {
	lp.adopt() // handed over but never registered
	n := 0
	for _, c := range lp.conns {
		if c != nil {
			lp.close(c)
			n++
		}
	}
	return n
}
