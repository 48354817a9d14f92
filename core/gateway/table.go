package gateway

import (
	"hash/maphash"
	"sync"
	"sync/atomic"
)

const numShards = 64

// table indexes logged-in connections by connection ID, by device and by user, and enforces the
// per-device (one) and per-user connection limits. It is safe for concurrent use.
//
// Every session in the table has exactly one device entry (a newer login of the device evicts
// the older session), so the device index also serves Range. Keys reference the sessions' own
// strings: an index entry allocates nothing but its map slot.
//
// Lock order: a conn shard, then a device shard, then a user shard; never two of one kind.
type table struct {
	maxPerUser int
	seed       maphash.Seed
	count      atomic.Int64

	conns   [numShards]connShard
	devices [numShards]keyShard
	users   [numShards]userShard
}

type connShard struct {
	mu sync.RWMutex
	m  map[uint64]*Client
}

// idKey is an app's device or user.
type idKey struct{ app, id string }

type keyShard struct {
	mu sync.RWMutex
	m  map[idKey]*Client
}

type userShard struct {
	mu sync.RWMutex
	m  map[idKey][]*Client // oldest login first
}

// newTable returns a table that keeps at most maxPerUser connections per user (0: no limit).
// A device always has at most one.
func newTable(maxPerUser int) *table {
	t := &table{maxPerUser: maxPerUser, seed: maphash.MakeSeed()}
	for i := range numShards {
		t.conns[i].m = make(map[uint64]*Client)
		t.devices[i].m = make(map[idKey]*Client)
		t.users[i].m = make(map[idKey][]*Client)
	}
	return t
}

func (t *table) shardOf(k idKey) int {
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
func (t *table) Add(s *Client) (evicted []*Client) {
	if s.inTable.Swap(true) {
		return nil
	}
	t.count.Add(1)
	cs := &t.conns[s.id()%numShards]
	cs.mu.Lock()
	cs.m[s.id()] = s
	cs.mu.Unlock()

	dk := idKey{s.app, s.device}
	ds := &t.devices[t.shardOf(dk)]
	ds.mu.Lock()
	if old := ds.m[dk]; old != nil && old != s {
		evicted = append(evicted, old)
	}
	ds.m[dk] = s
	ds.mu.Unlock()

	if s.user != "" {
		uk := idKey{s.app, s.user}
		us := &t.users[t.shardOf(uk)]
		us.mu.Lock()
		list := append(us.m[uk], s)
		if t.maxPerUser > 0 {
			for len(list) > t.maxPerUser {
				if !containsClient(evicted, list[0]) {
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

func containsClient(list []*Client, s *Client) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Remove unregisters s from every index that still points to it. It reports whether s was in the
// table. A newer session of the same device is never touched.
func (t *table) Remove(s *Client) bool {
	if !s.inTable.CompareAndSwap(true, false) {
		return false
	}
	t.count.Add(-1)
	cs := &t.conns[s.id()%numShards]
	cs.mu.Lock()
	if cs.m[s.id()] == s {
		delete(cs.m, s.id())
	}
	cs.mu.Unlock()

	dk := idKey{s.app, s.device}
	ds := &t.devices[t.shardOf(dk)]
	ds.mu.Lock()
	if ds.m[dk] == s {
		delete(ds.m, dk)
	}
	ds.mu.Unlock()

	if s.user != "" {
		uk := idKey{s.app, s.user}
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
func (t *table) ByConn(id uint64) *Client {
	cs := &t.conns[id%numShards]
	cs.mu.RLock()
	s := cs.m[id]
	cs.mu.RUnlock()
	return s
}

// ByDevice returns the live session of a device.
func (t *table) ByDevice(app, device string) *Client {
	dk := idKey{app, device}
	ds := &t.devices[t.shardOf(dk)]
	ds.mu.RLock()
	s := ds.m[dk]
	ds.mu.RUnlock()
	return s
}

// ByUser appends the live sessions of a user to dst, oldest login first.
func (t *table) ByUser(dst []*Client, app, user string) []*Client {
	uk := idKey{app, user}
	us := &t.users[t.shardOf(uk)]
	us.mu.RLock()
	dst = append(dst, us.m[uk]...)
	us.mu.RUnlock()
	return dst
}

// Len is the number of sessions in the table.
func (t *table) Len() int { return int(t.count.Load()) }

// Range calls fn for every device's current session until fn returns false (a session evicted by
// a newer one of its device, and not yet removed, is not visited). Sessions added or removed during the
// call may or may not be seen. fn runs without the table's locks held.
func (t *table) Range(fn func(*Client) bool) {
	var batch []*Client
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
