// Package memory is the in-process route store: the embedded default of a single gateway (which
// then needs nothing else), and the shared store of several gateway nodes in one test process.
// It satisfies route.Store entirely in memory, with the semantics route/redis has across
// processes (the contract suite route/routetest runs against both).
//
// Devices, users and groups live in sharded maps, each shard under its own mutex. A device's
// record is its entry (instance, connection, generation), the last generation it was given, its
// user, its groups and its pending at-least-once messages; when the device is released the record
// stays for the linger (its groups and pending messages follow the next claim) and then goes.
// Nothing runs in the background: lingered records and expired pending messages are dropped
// when read, and every shard sweeps itself inline once every sweepEvery writes.
//
// The registry keeps each instance until its TTL lapses (by the store's clock, WithClock), and
// never lists one whose TTL lapsed.
//
// The bus delivers in process. Each Subscribe call is one subscriber with a bounded queue
// (WithQueue, default 4096 messages) that the Subscribe goroutine drains in order. Publish never
// blocks: a message meeting a full queue is dropped for that subscriber, not counted in the
// receivers Publish returns, and counted in Dropped — the same as a message published while an
// instance is not subscribed, which route.Bus allows (at most once).
package memory

import (
	"context"
	"hash/maphash"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/route"
)

const (
	// DefaultLinger is how long a released device's groups and pending messages are kept when
	// the release names no linger.
	DefaultLinger = 2 * time.Minute
	// DefaultQueue is the bus queue of one subscriber, in messages.
	DefaultQueue = 4096

	numShards  = 64
	sweepEvery = 1024
)

// Option configures a Store.
type Option func(*Store)

// WithClock makes the store read time from now (TTLs, linger, pending expiry); tests advance it.
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithLinger sets the linger of releases that name none (default DefaultLinger).
func WithLinger(d time.Duration) Option {
	return func(s *Store) {
		if d > 0 {
			s.linger = d
		}
	}
}

// WithQueue sets each bus subscriber's queue, in messages (default DefaultQueue).
func WithQueue(n int) Option {
	return func(s *Store) {
		if n > 0 {
			s.queue = n
		}
	}
}

// Store is the in-memory route store. The zero value is not usable: call New.
type Store struct {
	now    func() time.Time
	linger time.Duration
	queue  int
	seed   maphash.Seed

	devs  [numShards]devShard
	users [numShards]userShard

	holdMu  sync.Mutex
	holders map[key]map[string]struct{}

	regMu sync.Mutex
	reg   map[string]route.Instance

	busMu sync.RWMutex
	subs  map[string][]*subscriber // by instance; "" holds the subscribers of every instance
	all   []*subscriber

	epoch     time.Time // when New made the store: its data never outlives it
	dropped   atomic.Int64
	closed    atomic.Bool
	closeOnce sync.Once
	done      chan struct{}
}

var _ route.Store = (*Store)(nil)

// New returns an empty store.
func New(opts ...Option) *Store {
	s := &Store{
		now:     time.Now,
		linger:  DefaultLinger,
		queue:   DefaultQueue,
		seed:    maphash.MakeSeed(),
		holders: make(map[key]map[string]struct{}),
		reg:     make(map[string]route.Instance),
		subs:    make(map[string][]*subscriber),
		done:    make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	s.epoch = s.now()
	for i := range s.devs {
		s.devs[i].m = make(map[key]*device)
		s.users[i].m = make(map[key]map[string]route.Entry)
	}
	return s
}

// key names a device, a user or a group of an app.
type key struct{ app, name string }

type pending struct {
	id   string
	data []byte
	exp  time.Time
}

// device is everything the store keeps about one device.
type device struct {
	entry   route.Entry // zero: released (the record lingers until gone)
	last    uint64      // the last generation given, kept while the record lingers
	user    string      // the user of the entry (or of the last one)
	groups  []string    // sorted
	pending []pending   // oldest first
	gone    time.Time   // when released: the end of the linger
}

// expired reports whether a released device's linger is over at now.
func (d *device) expired(now time.Time) bool {
	return d.entry.IsZero() && !d.gone.IsZero() && !now.Before(d.gone)
}

// prune drops expired pending messages.
func (d *device) prune(now time.Time) {
	n := 0
	for _, p := range d.pending {
		if now.Before(p.exp) {
			d.pending[n] = p
			n++
		}
	}
	clear(d.pending[n:])
	d.pending = d.pending[:n]
}

type devShard struct {
	mu     sync.Mutex
	m      map[key]*device
	writes int
}

type userShard struct {
	mu sync.Mutex
	m  map[key]map[string]route.Entry // user → device → entry
}

func (s *Store) shard(k key) int {
	var h maphash.Hash
	h.SetSeed(s.seed)
	_, _ = h.WriteString(k.app)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(k.name)
	return int(h.Sum64() % numShards)
}

// get returns the live record of k (nil: none), dropping it when its linger is over.
func (sh *devShard) get(k key, now time.Time) *device {
	d := sh.m[k]
	if d != nil && d.expired(now) {
		delete(sh.m, k)
		return nil
	}
	return d
}

// wrote counts a write and sweeps the shard once every sweepEvery writes. sh.mu is held.
func (sh *devShard) wrote(now time.Time) {
	sh.writes++
	if sh.writes < sweepEvery {
		return
	}
	sh.writes = 0
	for k, d := range sh.m {
		if d.expired(now) {
			delete(sh.m, k)
			continue
		}
		d.prune(now)
	}
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return route.ErrClosed
	}
	return ctx.Err()
}

// Claim implements route.Directory.
func (s *Store) Claim(ctx context.Context, claims []route.Claim) ([]route.Claimed, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]route.Claimed, len(claims))
	for i, c := range claims {
		k := key{c.App, c.Device}
		sh := &s.devs[s.shard(k)]
		sh.mu.Lock()
		d := sh.get(k, now)
		if d == nil {
			d = &device{}
			sh.m[k] = d
		}
		gen := c.Entry.Gen
		if d.last >= gen {
			gen = d.last + 1
		}
		prev, prevUser := d.entry, d.user
		d.entry = route.Entry{Instance: c.Entry.Instance, Conn: c.Entry.Conn, Gen: gen}
		d.last, d.user, d.gone = gen, c.User, time.Time{}
		d.prune(now)
		res := route.Claimed{Gen: gen, Previous: prev}
		if len(d.groups) > 0 {
			res.Groups = slices.Clone(d.groups)
		}
		for _, p := range d.pending {
			res.Pending = append(res.Pending, route.Pending{App: c.App, Device: c.Device, ID: p.id, Data: slices.Clone(p.data), Expires: p.exp})
		}
		entry := d.entry
		sh.wrote(now)
		sh.mu.Unlock()
		out[i] = res

		if prevUser != "" && prevUser != c.User && !prev.IsZero() {
			s.userDel(c.App, prevUser, c.Device, prev)
		}
		if c.User != "" {
			s.userSet(c.App, c.User, c.Device, entry)
		}
	}
	return out, nil
}

// userSet records entry for the user's device unless the user's field has a newer generation.
func (s *Store) userSet(app, user, dev string, e route.Entry) {
	k := key{app, user}
	sh := &s.users[s.shard(k)]
	sh.mu.Lock()
	m := sh.m[k]
	if m == nil {
		m = make(map[string]route.Entry, 1)
		sh.m[k] = m
	}
	if cur, ok := m[dev]; !ok || cur.Gen <= e.Gen {
		m[dev] = e
	}
	sh.mu.Unlock()
}

// userDel removes the user's device field while it still is e.
func (s *Store) userDel(app, user, dev string, e route.Entry) {
	k := key{app, user}
	sh := &s.users[s.shard(k)]
	sh.mu.Lock()
	if m := sh.m[k]; m != nil && m[dev] == e {
		delete(m, dev)
		if len(m) == 0 {
			delete(sh.m, k)
		}
	}
	sh.mu.Unlock()
}

// Release implements route.Directory.
func (s *Store) Release(ctx context.Context, releases []route.Release) ([]bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	ok := make([]bool, len(releases))
	for i, r := range releases {
		linger := r.Linger
		if linger <= 0 {
			linger = s.linger
		}
		k := key{r.App, r.Device}
		sh := &s.devs[s.shard(k)]
		sh.mu.Lock()
		if d := sh.get(k, now); d != nil && !d.entry.IsZero() && d.entry == r.Entry {
			d.entry = route.Entry{}
			d.gone = now.Add(linger)
			ok[i] = true
		}
		sh.wrote(now)
		sh.mu.Unlock()
		if r.User != "" {
			s.userDel(r.App, r.User, r.Device, r.Entry)
		}
	}
	return ok, nil
}

// Refresh implements route.Directory.
func (s *Store) Refresh(ctx context.Context, claims []route.Claim) ([]bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	cur := make([]bool, len(claims))
	for i, c := range claims {
		k := key{c.App, c.Device}
		sh := &s.devs[s.shard(k)]
		sh.mu.Lock()
		d := sh.get(k, now)
		if d == nil {
			d = &device{}
			sh.m[k] = d
		}
		if d.entry.Gen > c.Entry.Gen || (d.entry.IsZero() && d.last > c.Entry.Gen) {
			sh.mu.Unlock()
			continue
		}
		d.entry = c.Entry
		d.user, d.gone = c.User, time.Time{}
		d.last = max(d.last, c.Entry.Gen)
		sh.wrote(now)
		sh.mu.Unlock()
		cur[i] = true
		if c.User != "" {
			s.userSet(c.App, c.User, c.Device, c.Entry)
		}
	}
	return cur, nil
}

// Lookup implements route.Directory.
func (s *Store) Lookup(ctx context.Context, app string, devices []string) ([]route.Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	out := make([]route.Entry, len(devices))
	for i, dev := range devices {
		k := key{app, dev}
		sh := &s.devs[s.shard(k)]
		sh.mu.Lock()
		if d := sh.m[k]; d != nil && !d.expired(now) {
			out[i] = d.entry
		}
		sh.mu.Unlock()
	}
	return out, nil
}

// Users implements route.Directory. Each user's entries are sorted by device.
func (s *Store) Users(ctx context.Context, app string, users []string) ([][]route.Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out := make([][]route.Entry, len(users))
	for i, u := range users {
		k := key{app, u}
		sh := &s.users[s.shard(k)]
		sh.mu.Lock()
		m := sh.m[k]
		devs := make([]string, 0, len(m))
		for d := range m {
			devs = append(devs, d)
		}
		sort.Strings(devs)
		for _, d := range devs {
			out[i] = append(out[i], m[d])
		}
		sh.mu.Unlock()
	}
	return out, nil
}

// SetMembership implements route.Directory. A device the store does not know yet gets a record
// that lingers (DefaultLinger or WithLinger) unless a claim comes.
func (s *Store) SetMembership(ctx context.Context, ops []route.Membership) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	now := s.now()
	for _, op := range ops {
		k := key{op.App, op.Device}
		sh := &s.devs[s.shard(k)]
		sh.mu.Lock()
		d := sh.get(k, now)
		if d == nil && op.In {
			d = &device{gone: now.Add(s.linger)}
			sh.m[k] = d
		}
		if d != nil {
			j, found := slices.BinarySearch(d.groups, op.Group)
			switch {
			case op.In && !found:
				d.groups = slices.Insert(d.groups, j, op.Group)
			case !op.In && found:
				d.groups = slices.Delete(d.groups, j, j+1)
			}
		}
		sh.wrote(now)
		sh.mu.Unlock()
	}
	return nil
}

// SetHolding implements route.Directory.
func (s *Store) SetHolding(ctx context.Context, ops []route.Holding) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	s.holdMu.Lock()
	defer s.holdMu.Unlock()
	for _, op := range ops {
		k := key{op.App, op.Group}
		m := s.holders[k]
		if op.Held {
			if m == nil {
				m = make(map[string]struct{}, 1)
				s.holders[k] = m
			}
			m[op.Instance] = struct{}{}
		} else if m != nil {
			delete(m, op.Instance)
			if len(m) == 0 {
				delete(s.holders, k)
			}
		}
	}
	return nil
}

// Holders implements route.Directory.
func (s *Store) Holders(ctx context.Context, app, group string) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	s.holdMu.Lock()
	m := s.holders[key{app, group}]
	out := make([]string, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	s.holdMu.Unlock()
	sort.Strings(out)
	return out, nil
}

// AddPending implements route.Directory. A message already expired is not kept; one with an ID
// the device already has replaces it in place.
func (s *Store) AddPending(ctx context.Context, msgs []route.Pending) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	now := s.now()
	for _, m := range msgs {
		if !now.Before(m.Expires) {
			continue
		}
		k := key{m.App, m.Device}
		sh := &s.devs[s.shard(k)]
		sh.mu.Lock()
		d := sh.get(k, now)
		if d == nil {
			d = &device{gone: now.Add(s.linger)}
			sh.m[k] = d
		}
		p := pending{id: m.ID, data: slices.Clone(m.Data), exp: m.Expires}
		if j := slices.IndexFunc(d.pending, func(q pending) bool { return q.id == m.ID }); j >= 0 {
			d.pending[j] = p
		} else {
			d.pending = append(d.pending, p)
		}
		sh.wrote(now)
		sh.mu.Unlock()
	}
	return nil
}

// Ack implements route.Directory.
func (s *Store) Ack(ctx context.Context, acks []route.Ack) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	now := s.now()
	for _, a := range acks {
		k := key{a.App, a.Device}
		sh := &s.devs[s.shard(k)]
		sh.mu.Lock()
		if d := sh.get(k, now); d != nil {
			d.pending = slices.DeleteFunc(d.pending, func(p pending) bool { return p.id == a.ID })
		}
		sh.mu.Unlock()
	}
	return nil
}

// Register implements route.Registry. Updated and Expires are set from the store's clock.
func (s *Store) Register(ctx context.Context, inst route.Instance, ttl time.Duration) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	now := s.now()
	inst.Updated, inst.Expires = now, now.Add(ttl)
	inst.Endpoints = slices.Clone(inst.Endpoints)
	s.regMu.Lock()
	s.reg[inst.ID] = inst
	s.regMu.Unlock()
	return nil
}

// Deregister implements route.Registry.
func (s *Store) Deregister(ctx context.Context, id string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	s.regMu.Lock()
	delete(s.reg, id)
	s.regMu.Unlock()
	return nil
}

// Instances implements route.Registry; lapsed registrations are dropped.
func (s *Store) Instances(ctx context.Context) ([]route.Instance, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	s.regMu.Lock()
	out := make([]route.Instance, 0, len(s.reg))
	for id, inst := range s.reg {
		if !now.Before(inst.Expires) {
			delete(s.reg, id)
			continue
		}
		inst.Endpoints = slices.Clone(inst.Endpoints)
		out = append(out, inst)
	}
	s.regMu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// subscriber is one Subscribe call's queue.
type subscriber struct{ q chan []byte }

// Publish implements route.Bus. Each receiver gets its own copy of the data.
func (s *Store) Publish(ctx context.Context, msgs []route.Message) ([]int, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	n := make([]int, len(msgs))
	s.busMu.RLock()
	defer s.busMu.RUnlock()
	for i, m := range msgs {
		targets := s.all
		if m.To != "" {
			targets = s.subs[m.To]
		}
		for _, sub := range targets {
			select {
			case sub.q <- slices.Clone(m.Data):
				n[i]++
			default:
				s.dropped.Add(1)
			}
		}
	}
	return n, nil
}

// Dropped is how many bus messages met a full subscriber queue and were dropped.
func (s *Store) Dropped() int64 { return s.dropped.Load() }

// Subscribe implements route.Bus. It calls up(true) once subscribed (the subscription of an
// in-process store is never lost) and returns nil when ctx ends, route.ErrClosed when the store
// is closed.
func (s *Store) Subscribe(ctx context.Context, instance string, deliver func(data []byte), up func(bool)) error {
	if err := s.check(ctx); err != nil {
		if s.closed.Load() {
			return err
		}
		return nil
	}
	sub := &subscriber{q: make(chan []byte, s.queue)}
	s.busMu.Lock()
	s.subs[instance] = append(s.subs[instance], sub)
	s.all = append(s.all, sub)
	s.busMu.Unlock()
	defer func() {
		s.busMu.Lock()
		s.subs[instance] = slices.DeleteFunc(s.subs[instance], func(x *subscriber) bool { return x == sub })
		if len(s.subs[instance]) == 0 {
			delete(s.subs, instance)
		}
		s.all = slices.DeleteFunc(s.all, func(x *subscriber) bool { return x == sub })
		s.busMu.Unlock()
	}()
	if up != nil {
		up(true)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.done:
			return route.ErrClosed
		case data := <-sub.q:
			deliver(data)
		}
	}
}

// Ping implements route.Store.
func (s *Store) Ping(ctx context.Context) error { return s.check(ctx) }

// Close implements route.Store: later calls fail with route.ErrClosed and subscriptions end.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
	})
	return nil
}

// Devices is how many device records the store holds (connected, and released ones within their
// linger not yet swept).
func (s *Store) Devices() int {
	n := 0
	for i := range s.devs {
		sh := &s.devs[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

// Epoch implements route.Directory: the store's data began when New made it.
func (s *Store) Epoch(ctx context.Context) (time.Time, error) {
	if err := s.check(ctx); err != nil {
		return time.Time{}, err
	}
	return s.epoch, nil
}
