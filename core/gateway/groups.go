package gateway

import (
	"errors"
	"hash/maphash"
	"sync"

	"github.com/pushwire/pushwire/core/session"
)

// errGroupLimit is Join's refusal of a connection already in its limit of groups.
var errGroupLimit = errors.New("gateway: connection in too many groups")

// groups keeps group membership on one instance: which live clients belong to each group of an
// app. Membership is per connection: a closed connection leaves all its groups (LeaveAll). It is
// safe for concurrent use.
//
// Lock order: a group shard, then a group, then a client's group list (Client.gmu).
type groups struct {
	seed   maphash.Seed
	shards [numShards]groupShard
	// held, when set, learns that a group gained its first member (true) or lost its last
	// (false) here; it runs under the group's lock, so the calls for one group come in order.
	held func(app, name string, held bool)
}

type groupShard struct {
	mu sync.RWMutex
	m  map[string]*group // app + "\x00" + group
}

// group is one group's members: a slice for fast snapshots and an index for O(1) removal.
type group struct {
	mu      sync.RWMutex
	members []*Client
	index   map[*Client]int
}

// newGroups returns an empty membership.
func newGroups() *groups {
	g := &groups{seed: maphash.MakeSeed()}
	for i := range g.shards {
		g.shards[i].m = make(map[string]*group)
	}
	return g
}

func (g *groups) shard(k string) *groupShard {
	return &g.shards[maphash.String(g.seed, k)%numShards]
}

// Join adds s to the app's group name. It reports whether s was added (false: already a member,
// or s is closed). With limit > 0, s may be in at most limit groups: past it Join returns
// errGroupLimit.
func (g *groups) Join(s *Client, name string, limit int) (bool, error) {
	if s.state() == session.StateClosed {
		return false, nil
	}
	k := key(s.app, name)
	sh := g.shard(k)
	sh.mu.Lock()
	gr := sh.m[k]
	if gr == nil {
		gr = &group{index: make(map[*Client]int)}
		sh.m[k] = gr
	}
	gr.mu.Lock()
	sh.mu.Unlock()
	if _, ok := gr.index[s]; ok {
		gr.mu.Unlock()
		return false, nil
	}
	s.gmu.Lock()
	var refuse bool
	var err error
	switch {
	case s.groups == &leftAll:
		refuse = true // LeaveAll already ran: joining now would leave a closed client behind
	case limit > 0 && s.groups != nil && len(s.groups.names) >= limit:
		refuse, err = true, errGroupLimit
	}
	if refuse {
		s.gmu.Unlock()
		gr.mu.Unlock()
		g.dropIfEmpty(k)
		return false, err
	}
	if s.groups == nil {
		s.groups = &groupList{}
	}
	s.groups.names = append(s.groups.names, name)
	s.gmu.Unlock()
	gr.index[s] = len(gr.members)
	gr.members = append(gr.members, s)
	if len(gr.members) == 1 && g.held != nil {
		g.held(s.app, name, true)
	}
	gr.mu.Unlock()
	return true, nil
}

// key is the index key of an app's group (or device): app and name, never ambiguous since an app
// ID holds no NUL.
func key(app, name string) string { return app + "\x00" + name }

// Leave removes s from the app's group name. It reports whether s was a member.
func (g *groups) Leave(s *Client, name string) bool {
	if !g.remove(s.app, name, s) {
		return false
	}
	s.gmu.Lock()
	if gl := s.groups; gl != nil && gl != &leftAll {
		for i, n := range gl.names {
			if n == name {
				gl.names = append(gl.names[:i:i], gl.names[i+1:]...)
				break
			}
		}
	}
	s.gmu.Unlock()
	return true
}

// LeaveAll removes s from every group it joined. Call it when the session closes; later Joins of
// s are refused.
func (g *groups) LeaveAll(s *Client) int {
	s.gmu.Lock()
	var names []string
	if gl := s.groups; gl != nil && gl != &leftAll {
		names = gl.names
	}
	s.groups = &leftAll
	s.gmu.Unlock()
	for _, name := range names {
		g.remove(s.app, name, s)
	}
	return len(names)
}

// lookup returns the group keyed k, or nil.
func (g *groups) lookup(k string) *group {
	sh := g.shard(k)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.m[k]
}

func (g *groups) remove(app, name string, s *Client) bool {
	k := key(app, name)
	gr := g.lookup(k)
	if gr == nil {
		return false
	}
	gr.mu.Lock()
	i, ok := gr.index[s]
	if ok {
		last := len(gr.members) - 1
		moved := gr.members[last]
		gr.members[i] = moved
		gr.index[moved] = i
		gr.members[last] = nil
		gr.members = gr.members[:last]
		delete(gr.index, s)
	}
	empty := len(gr.members) == 0
	if ok && empty && g.held != nil {
		g.held(app, name, false)
	}
	gr.mu.Unlock()
	if empty {
		g.dropIfEmpty(k)
	}
	return ok
}

// dropIfEmpty forgets a group with no members.
func (g *groups) dropIfEmpty(k string) {
	sh := g.shard(k)
	sh.mu.Lock()
	if gr := sh.m[k]; gr != nil {
		gr.mu.RLock()
		if len(gr.members) == 0 {
			delete(sh.m, k)
		}
		gr.mu.RUnlock()
	}
	sh.mu.Unlock()
}

// Members appends the app's group name's members to dst (a snapshot: later changes are not seen).
func (g *groups) Members(dst []*Client, app, name string) []*Client {
	k := key(app, name)
	gr := g.lookup(k)
	if gr == nil {
		return dst
	}
	gr.mu.RLock()
	dst = append(dst, gr.members...)
	gr.mu.RUnlock()
	return dst
}

// Size is the number of members of the app's group name.
func (g *groups) Size(app, name string) int {
	k := key(app, name)
	gr := g.lookup(k)
	if gr == nil {
		return 0
	}
	gr.mu.RLock()
	defer gr.mu.RUnlock()
	return len(gr.members)
}

// Len is the number of groups with at least one member.
func (g *groups) Len() int {
	n := 0
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.RLock()
		n += len(sh.m)
		sh.mu.RUnlock()
	}
	return n
}

// groupsOf returns the names of the groups s belongs to.
func (s *Client) groupsOf() []string {
	s.gmu.Lock()
	defer s.gmu.Unlock()
	if s.groups == nil || s.groups == &leftAll {
		return nil
	}
	return append([]string(nil), s.groups.names...)
}
