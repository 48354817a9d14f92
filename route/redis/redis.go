// Package redis is the route store on Redis, through go-redis v9's UniversalClient: one address
// is a single server, several are a cluster, and a MasterName makes it sentinel. Several gateway
// processes sharing one Redis form a cluster (DESIGN.md "The cluster").
//
// Keys. Everything about one device sits under one hash tag, so each script touches one slot
// and cluster mode works: {<prefix>:<app>/<device>} is a hash (e: the entry "gen|conn|instance",
// n: the last generation given, u: the user, s: the pending sequence), {…}:g the device's groups
// (a set) and {…}:p its pending messages (a hash id → "seq|expires-ms|data"). A user is the hash
// {<prefix>:u:<app>/<user>}, field device → entry; a group's holders the set
// {<prefix>:g:<app>/<group>}; the registry {<prefix>:reg}:i (id → JSON) and {<prefix>:reg}:x
// (a sorted set id → expiry in ms). '%', '/', '{' and '}' in names are escaped (%25, %2F, %7B,
// %7D) so that no two names share a key and no name breaks a hash tag.
//
// Round trips. Every batch method is one pipeline, whatever the batch's size (go-redis splits a
// cluster pipeline by node itself): Lookup, Users, Release, Refresh, SetMembership, SetHolding,
// AddPending, Ack, Publish, Register and Deregister are one round trip; Claim is one, plus a
// second when a claim names a user (the user's field is written with the generation the first
// assigned, under another hash tag). Claim, Release, Refresh, memberships and pending messages
// are Lua scripts run by EVALSHA; when the server lost them (a restart) they are loaded again
// and the calls that failed are repeated: a few more round trips, once.
//
// Generations are compared inside the scripts, so a late release, a slow instance's refresh or a
// dead instance's entry never removes or shadows a newer connection. A released device's hash,
// groups and pending messages linger (Release.Linger, DefaultLinger when zero) and then expire
// by Redis's own TTL; the last generation given lingers with them, so a late refresh after a
// release cannot bring the released connection back. Pending messages carry their expiry; the
// expired are skipped and removed by the next claim.
//
// Times (pending expiry, registry TTLs) are read from the clock of the process calling the
// store: the gateways and control of one cluster are expected to share a clock (one machine, or
// NTP).
//
// The bus is Redis pub/sub: an instance listens on <prefix>:bus:i:<instance> and
// <prefix>:bus:all. Publish pipelines PUBLISH and returns the receivers Redis counts. In cluster
// mode PUBLISH counts only the subscribers connected to the node that served it, so a count of 0
// there does not prove that nobody received the message; on a single server or sentinel it does.
package redis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/pushwire/pushwire/route"
)

const (
	// DefaultPrefix starts every key and channel when Config.Prefix is empty.
	DefaultPrefix = "pw"
	// DefaultLinger is how long a released device's groups and pending messages are kept when
	// the release names no linger.
	DefaultLinger = 2 * time.Minute

	minBackoff = 50 * time.Millisecond
	maxBackoff = 2 * time.Second
	// healthEvery is how long the bus subscription may be idle before it is pinged.
	healthEvery = time.Second
)

// Config selects the Redis deployment.
type Config struct {
	// Addrs are host:port addresses: one for a single server (or the sentinels with MasterName),
	// several for a cluster.
	Addrs []string
	// MasterName selects sentinel: Addrs are then the sentinels.
	MasterName string
	Username   string
	Password   string
	// DB is the database number (single server and sentinel only).
	DB int
	// Prefix starts every key and channel (default DefaultPrefix), so that several clusters may
	// share one Redis.
	Prefix string
	// PoolSize is the connections per node (0: go-redis's default, 10 per CPU).
	PoolSize int
	// DialTimeout and ReadTimeout bound connecting and each reply (0: go-redis's defaults, 5s
	// and 3s). Writes share ReadTimeout.
	DialTimeout, ReadTimeout time.Duration
}

// Validate reports the first bad setting, naming it.
func (c Config) Validate() error {
	if len(c.Addrs) == 0 {
		return errors.New("route/redis: Addrs is empty: name at least one host:port")
	}
	for _, a := range c.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("route/redis: Addrs: %q is not host:port: %w", a, err)
		}
	}
	if c.DB < 0 {
		return fmt.Errorf("route/redis: DB %d is negative", c.DB)
	}
	if c.DB != 0 && c.MasterName == "" && len(c.Addrs) > 1 {
		return fmt.Errorf("route/redis: DB %d: a cluster (several Addrs) has only database 0", c.DB)
	}
	if err := validPrefix(c.Prefix); err != nil {
		return err
	}
	if c.PoolSize < 0 {
		return fmt.Errorf("route/redis: PoolSize %d is negative", c.PoolSize)
	}
	if c.DialTimeout < 0 || c.ReadTimeout < 0 {
		return errors.New("route/redis: DialTimeout and ReadTimeout must not be negative")
	}
	return nil
}

func validPrefix(p string) error {
	if strings.ContainsAny(p, "{}") {
		return fmt.Errorf("route/redis: Prefix %q holds a brace, which would break the keys' hash tags", p)
	}
	return nil
}

// Store is the route store on Redis. Its methods are safe for concurrent use.
type Store struct {
	c      goredis.UniversalClient
	prefix string
	linger time.Duration
	now    func() time.Time

	regHash, regExp, epoch, chanAll string

	closed    atomic.Bool
	closeOnce sync.Once
	done      chan struct{}
	closeErr  error
}

var _ route.Store = (*Store)(nil)

// New connects to the Redis cfg names (lazily: the first command dials; use Ping to check).
func New(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := goredis.NewUniversalClient(&goredis.UniversalOptions{
		Addrs:        cfg.Addrs,
		MasterName:   cfg.MasterName,
		Username:     cfg.Username,
		Password:     cfg.Password,
		DB:           cfg.DB,
		PoolSize:     cfg.PoolSize,
		DialTimeout:  cfg.DialTimeout,
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.ReadTimeout,
	})
	return newStore(c, cfg.Prefix), nil
}

// NewFromClient makes a store on a client the caller built (tests add hooks to it); Close closes
// the client. An empty prefix is DefaultPrefix; one holding a brace panics.
func NewFromClient(c goredis.UniversalClient, prefix string) *Store {
	if err := validPrefix(prefix); err != nil {
		panic(err)
	}
	return newStore(c, prefix)
}

func newStore(c goredis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{
		c:       c,
		prefix:  prefix,
		linger:  DefaultLinger,
		now:     time.Now,
		regHash: "{" + prefix + ":reg}:i",
		regExp:  "{" + prefix + ":reg}:x",
		epoch:   "{" + prefix + ":reg}:e",
		chanAll: prefix + ":bus:all",
		done:    make(chan struct{}),
	}
}

// Client is the go-redis client under the store.
func (s *Store) Client() goredis.UniversalClient { return s.c }

// Prefix is the prefix of the store's keys and channels.
func (s *Store) Prefix() string { return s.prefix }

// esc keeps names from colliding or breaking a hash tag.
func esc(v string) string {
	if !strings.ContainsAny(v, "%/{}") {
		return v
	}
	r := strings.NewReplacer("%", "%25", "/", "%2F", "{", "%7B", "}", "%7D")
	return r.Replace(v)
}

// deviceKeys are the device's hash, groups set and pending hash.
func (s *Store) deviceKeys(app, dev string) []string {
	tag := "{" + s.prefix + ":" + esc(app) + "/" + esc(dev) + "}"
	return []string{tag, tag + ":g", tag + ":p"}
}

func (s *Store) deviceHash(app, dev string) string {
	return "{" + s.prefix + ":" + esc(app) + "/" + esc(dev) + "}"
}

func (s *Store) userKey(app, user string) string {
	return "{" + s.prefix + ":u:" + esc(app) + "/" + esc(user) + "}"
}

func (s *Store) groupKey(app, group string) string {
	return "{" + s.prefix + ":g:" + esc(app) + "/" + esc(group) + "}"
}

func (s *Store) channel(instance string) string { return s.prefix + ":bus:i:" + instance }

// encode is an entry as stored: "gen|conn|instance".
func encode(e route.Entry) string {
	b := make([]byte, 0, 24+len(e.Instance))
	b = strconv.AppendUint(b, e.Gen, 10)
	b = append(b, '|')
	b = strconv.AppendUint(b, e.Conn, 10)
	b = append(b, '|')
	b = append(b, e.Instance...)
	return string(b)
}

func decode(v string) (route.Entry, error) {
	g, rest, ok1 := strings.Cut(v, "|")
	c, inst, ok2 := strings.Cut(rest, "|")
	if !ok1 || !ok2 || inst == "" {
		return route.Entry{}, fmt.Errorf("malformed entry %q", v)
	}
	gen, err := strconv.ParseUint(g, 10, 64)
	if err != nil {
		return route.Entry{}, fmt.Errorf("malformed entry %q: %w", v, err)
	}
	conn, err := strconv.ParseUint(c, 10, 64)
	if err != nil {
		return route.Entry{}, fmt.Errorf("malformed entry %q: %w", v, err)
	}
	return route.Entry{Instance: inst, Conn: conn, Gen: gen}, nil
}

func (s *Store) check(ctx context.Context) error {
	if s.closed.Load() {
		return route.ErrClosed
	}
	return ctx.Err()
}

// fail wraps err with the op that failed (route.ErrClosed once the store is closed).
func (s *Store) fail(op string, err error) error {
	if s.closed.Load() {
		return fmt.Errorf("route/redis: %s: %w", op, route.ErrClosed)
	}
	return fmt.Errorf("route/redis: %s: %w", op, err)
}

// call is one script run in a batch.
type call struct {
	script *goredis.Script
	keys   []string
	args   []any
}

func isNoScript(err error) bool { return err != nil && goredis.HasErrorPrefix(err, "NOSCRIPT") }

// run runs calls in one pipeline by EVALSHA. When the server lacks a script (a restarted or new
// server) every script is loaded (SCRIPT LOAD, on every node of a cluster) and the calls that
// failed run again; a call still failing so runs by EVAL. A command's own error fails the batch;
// goredis.Nil answers stay for the caller.
func (s *Store) run(ctx context.Context, op string, calls []call) ([]*goredis.Cmd, error) {
	cmds := make([]*goredis.Cmd, len(calls))
	idx := make([]int, len(calls))
	for i := range idx {
		idx[i] = i
	}
	for attempt := 0; len(idx) > 0; attempt++ {
		pipe := s.c.Pipeline()
		for _, i := range idx {
			c := calls[i]
			if attempt < 2 {
				cmds[i] = c.script.EvalSha(ctx, pipe, c.keys, c.args...)
			} else {
				cmds[i] = c.script.Eval(ctx, pipe, c.keys, c.args...)
			}
		}
		_, _ = pipe.Exec(ctx)
		var retry []int
		for _, i := range idx {
			err := cmds[i].Err()
			switch {
			case err == nil, errors.Is(err, goredis.Nil):
			case isNoScript(err) && attempt < 2:
				retry = append(retry, i)
			default:
				return nil, s.fail(op, err)
			}
		}
		if len(retry) > 0 && attempt == 0 {
			// The server lost its scripts (or never had them): load them all, so that the
			// other ops do not each meet NOSCRIPT once.
			for _, sc := range allScripts {
				if err := sc.Load(ctx, s.c).Err(); err != nil {
					return nil, s.fail(op+": script load", err)
				}
			}
		}
		idx = retry
	}
	return cmds, nil
}

// execAll runs a pipeline and fails on any command's error but goredis.Nil.
func (s *Store) execAll(ctx context.Context, op string, pipe goredis.Pipeliner) error {
	cmds, err := pipe.Exec(ctx)
	if err == nil || errors.Is(err, goredis.Nil) {
		for _, c := range cmds {
			if e := c.Err(); e != nil && !errors.Is(e, goredis.Nil) {
				return s.fail(op, e)
			}
		}
		return nil
	}
	return s.fail(op, err)
}

func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

// Claim implements route.Directory.
func (s *Store) Claim(ctx context.Context, claims []route.Claim) ([]route.Claimed, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if len(claims) == 0 {
		return []route.Claimed{}, nil
	}
	now := ms(s.now())
	calls := make([]call, len(claims))
	for i, c := range claims {
		calls[i] = call{claimScript, s.deviceKeys(c.App, c.Device),
			[]any{strconv.FormatUint(c.Entry.Gen, 10), strconv.FormatUint(c.Entry.Conn, 10), c.Entry.Instance, c.User, now}}
	}
	cmds, err := s.run(ctx, "claim", calls)
	if err != nil {
		return nil, err
	}
	out := make([]route.Claimed, len(claims))
	var users []call
	for i, c := range claims {
		res, prevUser, err := decodeClaimed(c, cmds[i])
		if err != nil {
			return nil, s.fail("claim", err)
		}
		out[i] = res
		if !res.Previous.IsZero() && prevUser != "" && prevUser != c.User {
			users = append(users, call{userDelScript, []string{s.userKey(c.App, prevUser)}, []any{c.Device, encode(res.Previous)}})
		}
		if c.User != "" {
			e := route.Entry{Instance: c.Entry.Instance, Conn: c.Entry.Conn, Gen: res.Gen}
			users = append(users, call{userSetScript, []string{s.userKey(c.App, c.User)}, []any{c.Device, encode(e), strconv.FormatUint(res.Gen, 10)}})
		}
	}
	if len(users) > 0 {
		if _, err := s.run(ctx, "claim: users", users); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func decodeClaimed(c route.Claim, cmd *goredis.Cmd) (route.Claimed, string, error) {
	var res route.Claimed
	v, err := cmd.Slice()
	if err != nil || len(v) != 5 {
		return res, "", fmt.Errorf("unexpected answer %v: %w", cmd.Val(), err)
	}
	gs, _ := v[0].(string)
	if res.Gen, err = strconv.ParseUint(gs, 10, 64); err != nil {
		return res, "", fmt.Errorf("generation %q: %w", gs, err)
	}
	if prev, _ := v[1].(string); prev != "" {
		if res.Previous, err = decode(prev); err != nil {
			return res, "", err
		}
	}
	prevUser, _ := v[2].(string)
	if groups, _ := v[3].([]any); len(groups) > 0 {
		res.Groups = make([]string, 0, len(groups))
		for _, g := range groups {
			if g, ok := g.(string); ok {
				res.Groups = append(res.Groups, g)
			}
		}
		sort.Strings(res.Groups)
	}
	pend, _ := v[4].([]any)
	type seqd struct {
		seq uint64
		p   route.Pending
	}
	var ps []seqd
	for i := 0; i+1 < len(pend); i += 2 {
		id, _ := pend[i].(string)
		val, _ := pend[i+1].(string)
		seqs, rest, ok1 := strings.Cut(val, "|")
		exps, data, ok2 := strings.Cut(rest, "|")
		seq, err1 := strconv.ParseUint(seqs, 10, 64)
		exp, err2 := strconv.ParseInt(exps, 10, 64)
		if !ok1 || !ok2 || err1 != nil || err2 != nil {
			return res, "", fmt.Errorf("malformed pending message %q of %s/%s", id, c.App, c.Device)
		}
		ps = append(ps, seqd{seq, route.Pending{App: c.App, Device: c.Device, ID: id, Data: []byte(data), Expires: time.UnixMilli(exp)}})
	}
	slices.SortFunc(ps, func(a, b seqd) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	for _, p := range ps {
		res.Pending = append(res.Pending, p.p)
	}
	return res, prevUser, nil
}

func (s *Store) lingerMS(d time.Duration) string {
	if d <= 0 {
		d = s.linger
	}
	return strconv.FormatInt(max(d.Milliseconds(), 1), 10)
}

// Release implements route.Directory.
func (s *Store) Release(ctx context.Context, releases []route.Release) ([]bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if len(releases) == 0 {
		return []bool{}, nil
	}
	calls := make([]call, 0, 2*len(releases))
	for _, r := range releases {
		e := encode(r.Entry)
		calls = append(calls, call{releaseScript, s.deviceKeys(r.App, r.Device), []any{e, s.lingerMS(r.Linger)}})
		if r.User != "" {
			calls = append(calls, call{userDelScript, []string{s.userKey(r.App, r.User)}, []any{r.Device, e}})
		}
	}
	cmds, err := s.run(ctx, "release", calls)
	if err != nil {
		return nil, err
	}
	ok := make([]bool, len(releases))
	j := 0
	for i, r := range releases {
		n, _ := cmds[j].Int64()
		ok[i] = n == 1
		j++
		if r.User != "" {
			j++
		}
	}
	return ok, nil
}

// Refresh implements route.Directory.
func (s *Store) Refresh(ctx context.Context, claims []route.Claim) ([]bool, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if len(claims) == 0 {
		return []bool{}, nil
	}
	calls := make([]call, 0, 2*len(claims))
	for _, c := range claims {
		gen := strconv.FormatUint(c.Entry.Gen, 10)
		keys := s.deviceKeys(c.App, c.Device)
		calls = append(calls, call{refreshScript, keys[:2], []any{gen, strconv.FormatUint(c.Entry.Conn, 10), c.Entry.Instance, c.User}})
		if c.User != "" {
			calls = append(calls, call{userSetScript, []string{s.userKey(c.App, c.User)}, []any{c.Device, encode(c.Entry), gen}})
		}
	}
	cmds, err := s.run(ctx, "refresh", calls)
	if err != nil {
		return nil, err
	}
	cur := make([]bool, len(claims))
	j := 0
	for i, c := range claims {
		n, _ := cmds[j].Int64()
		cur[i] = n == 1
		j++
		if c.User != "" {
			j++
		}
	}
	// A user field written for a superseded entry is harmless (the newer claim's field has a
	// higher generation and wins), but it is not left behind either.
	var undo []call
	for i, c := range claims {
		if !cur[i] && c.User != "" {
			undo = append(undo, call{userDelScript, []string{s.userKey(c.App, c.User)}, []any{c.Device, encode(c.Entry)}})
		}
	}
	if len(undo) > 0 {
		if _, err := s.run(ctx, "refresh", undo); err != nil {
			return nil, err
		}
	}
	return cur, nil
}

// Lookup implements route.Directory: one pipeline of HGETs.
func (s *Store) Lookup(ctx context.Context, app string, devices []string) ([]route.Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out := make([]route.Entry, len(devices))
	if len(devices) == 0 {
		return out, nil
	}
	pipe := s.c.Pipeline()
	cmds := make([]*goredis.StringCmd, len(devices))
	for i, d := range devices {
		cmds[i] = pipe.HGet(ctx, s.deviceHash(app, d), "e")
	}
	if err := s.execAll(ctx, "lookup", pipe); err != nil {
		return nil, err
	}
	for i, cmd := range cmds {
		v, err := cmd.Result()
		if err != nil { // goredis.Nil: no entry
			continue
		}
		if out[i], err = decode(v); err != nil {
			return nil, s.fail("lookup", err)
		}
	}
	return out, nil
}

// Users implements route.Directory: one pipeline of HGETALLs. Each user's entries are sorted by
// device.
func (s *Store) Users(ctx context.Context, app string, users []string) ([][]route.Entry, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	out := make([][]route.Entry, len(users))
	if len(users) == 0 {
		return out, nil
	}
	pipe := s.c.Pipeline()
	cmds := make([]*goredis.MapStringStringCmd, len(users))
	for i, u := range users {
		cmds[i] = pipe.HGetAll(ctx, s.userKey(app, u))
	}
	if err := s.execAll(ctx, "users", pipe); err != nil {
		return nil, err
	}
	for i, cmd := range cmds {
		m := cmd.Val()
		devs := make([]string, 0, len(m))
		for d := range m {
			devs = append(devs, d)
		}
		sort.Strings(devs)
		for _, d := range devs {
			e, err := decode(m[d])
			if err != nil {
				return nil, s.fail("users", err)
			}
			out[i] = append(out[i], e)
		}
	}
	return out, nil
}

// SetMembership implements route.Directory.
func (s *Store) SetMembership(ctx context.Context, ops []route.Membership) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(ops) == 0 {
		return nil
	}
	calls := make([]call, len(ops))
	linger := s.lingerMS(0)
	for i, op := range ops {
		in := "0"
		if op.In {
			in = "1"
		}
		calls[i] = call{memberScript, s.deviceKeys(op.App, op.Device)[:2], []any{op.Group, in, linger}}
	}
	_, err := s.run(ctx, "membership", calls)
	return err
}

// SetHolding implements route.Directory.
func (s *Store) SetHolding(ctx context.Context, ops []route.Holding) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(ops) == 0 {
		return nil
	}
	pipe := s.c.Pipeline()
	for _, op := range ops {
		k := s.groupKey(op.App, op.Group)
		if op.Held {
			pipe.SAdd(ctx, k, op.Instance)
		} else {
			pipe.SRem(ctx, k, op.Instance)
		}
	}
	return s.execAll(ctx, "holding", pipe)
}

// Holders implements route.Directory.
func (s *Store) Holders(ctx context.Context, app, group string) ([]string, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	ids, err := s.c.SMembers(ctx, s.groupKey(app, group)).Result()
	if err != nil {
		return nil, s.fail("holders", err)
	}
	sort.Strings(ids)
	return ids, nil
}

// AddPending implements route.Directory. A message already expired is not kept.
func (s *Store) AddPending(ctx context.Context, msgs []route.Pending) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(msgs) == 0 {
		return nil
	}
	now, linger := ms(s.now()), s.lingerMS(0)
	calls := make([]call, len(msgs))
	for i, m := range msgs {
		keys := s.deviceKeys(m.App, m.Device)
		calls[i] = call{pendingScript, []string{keys[0], keys[2]}, []any{m.ID, ms(m.Expires), m.Data, now, linger}}
	}
	_, err := s.run(ctx, "add pending", calls)
	return err
}

// Ack implements route.Directory.
func (s *Store) Ack(ctx context.Context, acks []route.Ack) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if len(acks) == 0 {
		return nil
	}
	pipe := s.c.Pipeline()
	for _, a := range acks {
		pipe.HDel(ctx, s.deviceKeys(a.App, a.Device)[2], a.ID)
	}
	return s.execAll(ctx, "ack", pipe)
}

// Register implements route.Registry (one MULTI on the registry's slot). Updated and Expires are
// set from this process's clock.
func (s *Store) Register(ctx context.Context, inst route.Instance, ttl time.Duration) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if inst.ID == "" {
		return errors.New("route/redis: register: Instance.ID is empty")
	}
	now := s.now()
	inst.Updated, inst.Expires = now, now.Add(ttl)
	js, err := json.Marshal(inst)
	if err != nil {
		return s.fail("register", err)
	}
	pipe := s.c.TxPipeline()
	pipe.HSet(ctx, s.regHash, inst.ID, js)
	pipe.ZAdd(ctx, s.regExp, goredis.Z{Score: float64(inst.Expires.UnixMilli()), Member: inst.ID})
	return s.execAll(ctx, "register", pipe)
}

// Deregister implements route.Registry.
func (s *Store) Deregister(ctx context.Context, id string) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	pipe := s.c.TxPipeline()
	pipe.HDel(ctx, s.regHash, id)
	pipe.ZRem(ctx, s.regExp, id)
	return s.execAll(ctx, "deregister", pipe)
}

// Instances implements route.Registry: one script, which also drops lapsed registrations.
func (s *Store) Instances(ctx context.Context) ([]route.Instance, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	now := s.now()
	cmds, err := s.run(ctx, "instances", []call{{instancesScript, []string{s.regHash, s.regExp}, []any{ms(now)}}})
	if err != nil {
		return nil, err
	}
	vals, _ := cmds[0].Slice()
	out := make([]route.Instance, 0, len(vals))
	for _, v := range vals {
		js, ok := v.(string)
		if !ok {
			continue // removed between the two reads of the script: not possible, but harmless
		}
		var inst route.Instance
		if err := json.Unmarshal([]byte(js), &inst); err != nil {
			return nil, s.fail("instances", fmt.Errorf("registration %.60q: %w", js, err))
		}
		if !now.Before(inst.Expires) {
			continue
		}
		out = append(out, inst)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Publish implements route.Bus: one pipeline of PUBLISH.
func (s *Store) Publish(ctx context.Context, msgs []route.Message) ([]int, error) {
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	n := make([]int, len(msgs))
	if len(msgs) == 0 {
		return n, nil
	}
	pipe := s.c.Pipeline()
	cmds := make([]*goredis.IntCmd, len(msgs))
	for i, m := range msgs {
		ch := s.chanAll
		if m.To != "" {
			ch = s.channel(m.To)
		}
		cmds[i] = pipe.Publish(ctx, ch, m.Data)
	}
	if err := s.execAll(ctx, "publish", pipe); err != nil {
		return nil, err
	}
	for i, c := range cmds {
		n[i] = int(c.Val())
	}
	return n, nil
}

// Subscribe implements route.Bus on one go-redis PubSub. go-redis re-dials and re-subscribes
// after a lost connection; Subscribe reports the loss (up(false), at the first failed receive or
// health-check ping) and the return (up(true), once Redis confirms both channels), backing off
// between failed attempts. deliver runs on the receiving goroutine: it must be quick. It returns
// nil when ctx ends and route.ErrClosed when the store is closed.
func (s *Store) Subscribe(ctx context.Context, instance string, deliver func(data []byte), up func(bool)) error {
	if err := s.check(ctx); err != nil {
		if s.closed.Load() {
			return err
		}
		return nil
	}
	if up == nil {
		up = func(bool) {}
	}
	channels := []string{s.channel(instance), s.chanAll}
	// The channels are remembered even when Redis is down now: go-redis subscribes to them on
	// every connection it makes.
	var psMu sync.Mutex
	ps := s.c.Subscribe(ctx)
	_ = ps.Subscribe(ctx, channels...)
	current := func() *goredis.PubSub {
		psMu.Lock()
		defer psMu.Unlock()
		return ps
	}
	// Closing the PubSub ends a receive blocked on the network when ctx ends or the store closes.
	stop := make(chan struct{})
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		select {
		case <-ctx.Done():
		case <-s.done:
		case <-stop:
		}
		psMu.Lock()
		_ = ps.Close()
		psMu.Unlock()
	}()
	defer func() {
		close(stop)
		<-closed
	}()
	ended := func() (bool, error) {
		if s.closed.Load() {
			return true, route.ErrClosed
		}
		select {
		case <-ctx.Done():
			return true, nil // the caller ended the subscription: not an error
		default:
			return false, nil
		}
	}
	isUp, pinged := false, false
	backoff := minBackoff
	down := func() {
		pinged = false
		if isUp {
			isUp = false
			up(false)
		}
	}
	// pause waits out the back-off; false when the subscription is over.
	pause := func() bool {
		t := time.NewTimer(backoff)
		defer t.Stop()
		backoff = min(2*backoff, maxBackoff)
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
		case <-s.done:
		}
		return false
	}
	for {
		msg, err := current().ReceiveTimeout(ctx, healthEvery)
		if over, rerr := ended(); over {
			return rerr
		}
		if err != nil {
			var ne net.Error
			timeout := errors.As(err, &ne) && ne.Timeout()
			switch {
			case timeout && !pinged:
				// Idle for a period: ask the server; its answer (or its absence) tells.
				pinged = true
				if current().Ping(ctx) == nil {
					continue
				}
				down()
			case timeout:
				// A ping unanswered for a whole period: go-redis keeps a connection that only
				// timed out, so start a new PubSub (unless the subscription is ending).
				down()
				psMu.Lock()
				select {
				case <-stop:
				case <-ctx.Done():
				case <-s.done:
				default:
					_ = ps.Close()
					ps = s.c.Subscribe(ctx)
					_ = ps.Subscribe(ctx, channels...)
				}
				psMu.Unlock()
			default:
				// The connection failed (go-redis re-dials at the next receive) or Redis is down.
				down()
			}
			if !pause() {
				_, rerr := ended()
				return rerr
			}
			continue
		}
		pinged = false
		switch m := msg.(type) {
		case *goredis.Message:
			deliver([]byte(m.Payload))
		case *goredis.Subscription:
			if m.Kind == "subscribe" && m.Count >= len(channels) && !isUp {
				isUp = true
				backoff = minBackoff
				up(true)
			}
		case *goredis.Pong:
		}
	}
}

// Ping implements route.Store.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.check(ctx); err != nil {
		return err
	}
	if err := s.c.Ping(ctx).Err(); err != nil {
		return s.fail("ping", err)
	}
	return nil
}

// Close implements route.Store: it closes the client; later calls fail with route.ErrClosed and
// subscriptions end.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		close(s.done)
		s.closeErr = s.c.Close()
	})
	return s.closeErr
}

// Epoch implements route.Directory: the first caller after the data was lost marks the key with
// its clock (SET NX, milliseconds); every caller reads the mark. One round trip.
func (s *Store) Epoch(ctx context.Context) (time.Time, error) {
	if err := s.check(ctx); err != nil {
		return time.Time{}, err
	}
	pipe := s.c.Pipeline()
	pipe.SetNX(ctx, s.epoch, ms(s.now()), 0)
	get := pipe.Get(ctx, s.epoch)
	if err := s.execAll(ctx, "epoch", pipe); err != nil {
		return time.Time{}, err
	}
	v, err := get.Int64()
	if err != nil {
		return time.Time{}, s.fail("epoch", fmt.Errorf("mark %q: %w", get.Val(), err))
	}
	return time.UnixMilli(v), nil
}
