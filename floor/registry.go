package floor

import (
	"errors"
	"sync"

	"github.com/pushwire/pushwire/core/frame"
)

// Limits shared with the gateway.
const (
	maxIDLen       = 128     // a device ID
	maxGroupLen    = 128     // a group name
	maxPushTargets = 100_000 // devices in one push or membership call
)

var errGroupLimit = errors.New("floor: group limit per connection reached")

// registry is who is where: per app, device → connection, every logged-in connection (for
// broadcast), and group → member connections. The app map is fixed at New; the rest is guarded
// by mu.
type registry struct {
	mu   sync.RWMutex
	apps map[string]*appState
}

type appState struct {
	id      string
	devices map[string]*conn
	all     *memberSet
	groups  map[string]*memberSet
}

func newAppState(id string) *appState {
	return &appState{id: id, devices: map[string]*conn{}, all: &memberSet{}, groups: map[string]*memberSet{}}
}

// memberSet is a set of connections kept as a plain slice, for fan-out; each member records its
// position in c.member, so removal is a swap with the last.
type memberSet struct {
	name string // the group's name ("" for an app's every connection)
	list []*conn
}

// membership is one set a connection is in, and where.
type membership struct {
	set *memberSet
	pos int
}

// app returns the app a LOGIN's meta names, or the only app when it names none; nil when none
// matches.
func (r *registry) app(meta frame.Meta) *appState {
	v, ok := meta.Get("app")
	if !ok || len(v) == 0 {
		if len(r.apps) == 1 {
			for _, a := range r.apps {
				return a
			}
		}
		return nil
	}
	return r.apps[string(v)]
}

// login indexes c under its device, replacing (and evicting) an older connection of the device.
func (r *registry) login(c *conn) {
	r.mu.Lock()
	old := c.app.devices[c.device]
	c.app.devices[c.device] = c
	c.app.all.add(c)
	r.mu.Unlock()
	if old != nil && old != c {
		// One connection per device, as the gateway: the older one is told and closed.
		f := frame.Frame{Header: frame.Header{Type: frame.TypeGoaway, Code: frame.CodeEvicted},
			Meta: frame.AppendMetaString(nil, "reason", "the device logged in on another connection")}
		old.send(frame.Append(nil, &f), false)
		old.finish()
	}
}

// logout removes c from every index.
func (r *registry) logout(c *conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.app.devices[c.device] == c {
		delete(c.app.devices, c.device)
	}
	for len(c.member) > 0 {
		set := c.member[len(c.member)-1].set
		set.remove(c, len(c.member)-1)
		if len(set.list) == 0 && set != c.app.all {
			delete(c.app.groups, set.name)
		}
	}
}

// join adds c to group g of its app. It reports whether c was not a member yet; past limit
// groups (limit > 0) it refuses with errGroupLimit.
func (r *registry) join(c *conn, g string, limit int) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := c.app.groups[g]
	if set != nil && c.in(set) >= 0 {
		return false, nil
	}
	if limit > 0 && len(c.member)-1 >= limit { // c.member holds the app's set too
		return false, errGroupLimit
	}
	if set == nil {
		set = &memberSet{name: g}
		c.app.groups[g] = set
	}
	set.add(c)
	return true, nil
}

// leave removes c from group g of its app and reports whether it was a member.
func (r *registry) leave(c *conn, g string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	set := c.app.groups[g]
	if set == nil {
		return false
	}
	i := c.in(set)
	if i < 0 {
		return false
	}
	set.remove(c, i)
	if len(set.list) == 0 {
		delete(c.app.groups, g)
	}
	return true
}

// in returns the index in c.member of set, or -1. registry.mu is held.
func (c *conn) in(set *memberSet) int {
	for i, m := range c.member {
		if m.set == set {
			return i
		}
	}
	return -1
}

// add appends c. registry.mu is held.
func (s *memberSet) add(c *conn) {
	c.member = append(c.member, membership{set: s, pos: len(s.list)})
	s.list = append(s.list, c)
}

// remove takes c out of s, where c.member[i] is its membership of s. registry.mu is held.
func (s *memberSet) remove(c *conn, i int) {
	pos := c.member[i].pos
	last := s.list[len(s.list)-1]
	s.list[pos] = last
	s.list[len(s.list)-1] = nil
	s.list = s.list[:len(s.list)-1]
	if last != c {
		last.member[last.in(s)].pos = pos
	}
	n := len(c.member) - 1
	c.member[i] = c.member[n]
	c.member[n] = membership{}
	c.member = c.member[:n]
	if n == 0 {
		c.member = nil
	}
}
