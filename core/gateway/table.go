package session

import (
	"github.com/pushwire/pushwire/core/frame"
	"hash/maphash"
	"sync"
	"sync/atomic"
)

// Conn is what a session needs of its connection.
type Conn interface {
	ID() uint64
	Write(b []byte) error
	Close() error
	RemoteAddr() string
}

// Session is one connection's protocol state. Identity fields are set once at login, before the
// session is added to a Table, and never change after.
type Session struct {
	Conn Conn

	App, Device, User string
	Gen               uint64 // per-device connection generation, increasing at every login
	OpenedAt          int64  // unix nanoseconds
	LoginAt           int64  // unix nanoseconds; 0 before login

	state    atomic.Uint32
	lastSeen atomic.Int64  // unix nanoseconds of the last frame received (coarse)
	pushSeq  atomic.Uint32 // seq of the last PUSH sent
	closeBy  atomic.Uint32 // frame.Code of the first close reason; 0: none yet

	// RateTAT is the inbound rate limiter's theoretical arrival time (GCRA, unix nanoseconds).
	// Only the connection's OnData touches it; calls for one connection are never concurrent.
	RateTAT int64

	inTable atomic.Bool // added to a Table and not yet removed

	gmu    sync.Mutex // guards groups
	groups *groupList // the groups joined; nil before the first Join; &leftAll after LeaveAll
}

// groupList is a session's groups, allocated at its first Join: most connections never join one,
// and an idle connection should not pay for it.
type groupList struct{ names []string }

// leftAll marks a session whose LeaveAll ran: no more joins.
var leftAll groupList

// New returns a session in state CONNECTED.
func New(c Conn, now int64) *Session {
	s := &Session{Conn: c, OpenedAt: now}
	s.lastSeen.Store(now)
	return s
}

// ID is the connection ID.
func (s *Session) ID() uint64 { return s.Conn.ID() }

// State is the current state.
func (s *Session) State() State { return State(s.state.Load()) }

// SetState moves to st unless the session is already CLOSED. It reports whether it moved.
func (s *Session) SetState(st State) bool {
	for {
		cur := s.state.Load()
		if State(cur) == StateClosed {
			return false
		}
		if s.state.CompareAndSwap(cur, uint32(st)) {
			return true
		}
	}
}

// Transition moves from one state to another atomically; it reports whether the session was in
// from.
func (s *Session) Transition(from, to State) bool {
	return s.state.CompareAndSwap(uint32(from), uint32(to))
}

// SetCloseCode records why the session is closing; only the first reason sticks.
func (s *Session) SetCloseCode(c frame.Code) { s.closeBy.CompareAndSwap(0, uint32(c)) }

// CloseCode is the recorded close reason, frame.CodeOK when none was recorded (the transport
// closed).
func (s *Session) CloseCode() frame.Code { return frame.Code(s.closeBy.Load()) }

// Touch records activity at now (unix nanoseconds).
func (s *Session) Touch(now int64) { s.lastSeen.Store(now) }

// LastSeen is the time of the last recorded activity (unix nanoseconds).
func (s *Session) LastSeen() int64 { return s.lastSeen.Load() }

// NextPushSeq returns the seq for the next PUSH to this session: increasing per connection.
func (s *Session) NextPushSeq() uint32 { return s.pushSeq.Add(1) }

const numShards = 64

// Table indexes logged-in sessions by connection ID, by device and by user, and enforces the
// per-device (one) and per-user connection limits. It is safe for concurrent use.
//
// Every session in the table has exactly one device entry (a newer login of the device evicts
// the older session), so the device index also serves Range. Keys reference the sessions' own
// strings: an index entry allocates nothing but its map slot.
//
// Lock order: a conn shard, then a device shard, then a user shard; never two of one kind.
type Table struct {
	maxPerUser int
	seed       maphash.Seed
	count      atomic.Int64

	conns   [numShards]connShard
	devices [numShards]keyShard
	users   [numShards]userShard
}

type connShard struct {
	mu sync.RWMutex
	m  map[uint64]*Session
}

// idKey is an app's device or user.
type idKey struct{ app, id string }

type keyShard struct {
	mu sync.RWMutex
	m  map[idKey]*Session
}

type userShard struct {
	mu sync.RWMutex
	m  map[idKey][]*Session // oldest login first
}

// NewTable returns a table that keeps at most maxPerUser connections per user (0: no limit).
// A device always has at most one.
func NewTable(maxPerUser int) *Table {
	t := &Table{maxPerUser: maxPerUser, seed: maphash.MakeSeed()}
	for i := range numShards {
		t.conns[i].m = make(map[uint64]*Session)
		t.devices[i].m = make(map[idKey]*Session)
		t.users[i].m = make(map[idKey][]*Session)
	}
	return t
}

func key(app, id string) string { return app + "\x00" + id }

func (t *Table) shardOf(k idKey) int {
	var h maphash.Hash
	h.SetSeed(t.seed)
	h.WriteString(k.app)
	h.WriteByte(0)
	h.WriteString(k.id)
	return int(h.Sum64() % numShards)
}

// Add registers a logged-in session. It returns the sessions it displaced, which the caller
// closes (with GOAWAY EVICTED): the previous connection of the same device, and the oldest
// connections of the same user past the per-user limit.
func (t *Table) Add(s *Session) (evicted []*Session) {
	if s.inTable.Swap(true) {
		return nil
	}
	t.count.Add(1)
	cs := &t.conns[s.ID()%numShards]
	cs.mu.Lock()
	cs.m[s.ID()] = s
	cs.mu.Unlock()

	dk := idKey{s.App, s.Device}
	ds := &t.devices[t.shardOf(dk)]
	ds.mu.Lock()
	if old := ds.m[dk]; old != nil && old != s {
		evicted = append(evicted, old)
	}
	ds.m[dk] = s
	ds.mu.Unlock()

	if s.User != "" {
		uk := idKey{s.App, s.User}
		us := &t.users[t.shardOf(uk)]
		us.mu.Lock()
		list := append(us.m[uk], s)
		if t.maxPerUser > 0 {
			for len(list) > t.maxPerUser {
				if !containsSession(evicted, list[0]) {
					evicted = append(evicted, list[0])
				}
				list = list[1:]
			}
		}
		us.m[uk] = list
		us.mu.Unlock()
	}
	return evicted
}

func containsSession(list []*Session, s *Session) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Remove unregisters s from every index that still points to it. It reports whether s was in the
// table. A newer session of the same device is never touched.
func (t *Table) Remove(s *Session) bool {
	if !s.inTable.CompareAndSwap(true, false) {
		return false
	}
	t.count.Add(-1)
	cs := &t.conns[s.ID()%numShards]
	cs.mu.Lock()
	if cs.m[s.ID()] == s {
		delete(cs.m, s.ID())
	}
	cs.mu.Unlock()

	dk := idKey{s.App, s.Device}
	ds := &t.devices[t.shardOf(dk)]
	ds.mu.Lock()
	if ds.m[dk] == s {
		delete(ds.m, dk)
	}
	ds.mu.Unlock()

	if s.User != "" {
		uk := idKey{s.App, s.User}
		us := &t.users[t.shardOf(uk)]
		us.mu.Lock()
		list := us.m[uk]
		for i, x := range list {
			if x == s {
				list = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(us.m, uk)
		} else {
			us.m[uk] = list
		}
		us.mu.Unlock()
	}
	return true
}

// ByConn returns the session of a connection ID (as LOGIN_ACK's conn and the backend's
// Pushwire-Conn header name it).
func (t *Table) ByConn(id uint64) *Session {
	cs := &t.conns[id%numShards]
	cs.mu.RLock()
	s := cs.m[id]
	cs.mu.RUnlock()
	return s
}

// ByDevice returns the live session of a device.
func (t *Table) ByDevice(app, device string) *Session {
	dk := idKey{app, device}
	ds := &t.devices[t.shardOf(dk)]
	ds.mu.RLock()
	s := ds.m[dk]
	ds.mu.RUnlock()
	return s
}

// ByUser appends the live sessions of a user to dst, oldest login first.
func (t *Table) ByUser(dst []*Session, app, user string) []*Session {
	uk := idKey{app, user}
	us := &t.users[t.shardOf(uk)]
	us.mu.RLock()
	dst = append(dst, us.m[uk]...)
	us.mu.RUnlock()
	return dst
}

// Len is the number of sessions in the table.
func (t *Table) Len() int { return int(t.count.Load()) }

// Range calls fn for every device's current session until fn returns false (a session evicted by
// a newer one of its device, and not yet removed, is not visited). Sessions added or removed during the
// call may or may not be seen. fn runs without the table's locks held.
func (t *Table) Range(fn func(*Session) bool) {
	var batch []*Session
	for i := range numShards {
		ds := &t.devices[i]
		ds.mu.RLock()
		batch = batch[:0]
		for _, s := range ds.m {
			batch = append(batch, s)
		}
		ds.mu.RUnlock()
		for _, s := range batch {
			if !fn(s) {
				return
			}
		}
	}
}
