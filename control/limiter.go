package control

import (
	"hash/maphash"
	"math"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// DefaultLimiterKeys is how many keys (devices, or source addresses) one connect limiter
// remembers at most. At about 40 bytes a key, a limiter holds at most ~20 MB whatever arrives.
const DefaultLimiterKeys = 1 << 19

const (
	limiterShards = 64
	// evictSample is how many entries a full shard looks at to make room for a new key.
	evictSample = 8
)

// limiter is a GCRA rate limiter per key (the generic cell rate algorithm: one theoretical
// arrival time per key, no token refills to run). Keys are hashed with a per-limiter random seed
// (so nobody can aim collisions) into sharded maps holding at most maxKeys entries in all.
//
// An entry whose theoretical arrival time has passed is idle: forgetting it changes nothing, so
// those are dropped first. When a shard is full of keys that are all still limited, a new key
// evicts the sampled entry closest to idle: that key may then get its burst again a little early.
// So a flood of distinct keys never grows memory past the cap and never limits anyone it should
// not; at worst it loosens the limit of the keys it pushes out.
type limiter struct {
	base      time.Time // the limiter's times are nanoseconds since base
	interval  int64     // ns between events at the sustained rate
	tolerance int64     // interval × burst: how far ahead of now a key's arrival time may run
	seed      maphash.Seed
	perShard  int
	shards    [limiterShards]limiterShard
}

type limiterShard struct {
	mu     sync.Mutex
	tat    map[uint64]int64 // key hash → theoretical arrival time, ns since the limiter's base
	latest int64            // the latest event time the shard counted
	_      [32]byte         // keep shards' locks on separate cache lines
}

// newLimiter returns a limiter for l, or nil when l is off (a nil limiter allows everything).
func newLimiter(l RateLimit, maxKeys int) *limiter {
	if l.Off() || l.Rate.Events <= 0 {
		return nil
	}
	iv := int64(l.Rate.interval())
	lim := &limiter{
		base:      time.Now(),
		interval:  iv,
		tolerance: iv * int64(max(l.Burst, 1)),
		seed:      maphash.MakeSeed(),
		perShard:  max(maxKeys/limiterShards, 1),
	}
	for i := range lim.shards {
		lim.shards[i].tat = make(map[uint64]int64)
		lim.shards[i].latest = math.MinInt64
	}
	return lim
}

// allow reports whether one more event of key at now is within the limit, and records it if so.
// A refused event records nothing (the next allowed one goes through); retry is how long until
// one would be allowed.
func (l *limiter) allow(key string, now time.Time) (ok bool, retry time.Duration) {
	if l == nil {
		return true, 0
	}
	h := maphash.String(l.seed, key)
	sh := &l.shards[h%limiterShards]
	// Time since the limiter began, on the monotonic clock when now has one: a step of the wall
	// clock (a VM's clock being corrected) must neither refuse nor let through a burst.
	t := int64(now.Sub(l.base))
	sh.mu.Lock()
	defer sh.mu.Unlock()
	// A caller descheduled between reading the clock and taking the lock brings a time older than
	// the events already counted: an event is never earlier than the latest one the shard saw.
	// Otherwise a busy process would refuse its stalled callers as if they came a second early.
	if t < sh.latest {
		t = sh.latest
	}
	sh.latest = t
	tat, known := sh.tat[h]
	if !known || tat < t {
		tat = t
	}
	next := tat + l.interval
	if next-t > l.tolerance {
		return false, time.Duration(next - t - l.tolerance)
	}
	if !known && len(sh.tat) >= l.perShard {
		sh.evict(t)
	}
	sh.tat[h] = next
	return true, 0
}

// evict makes room for one key: it drops every idle entry among a few (the map's iteration starts
// at a random place), or else the one closest to idle.
func (sh *limiterShard) evict(now int64) {
	var oldest uint64
	oldestTAT, n, dropped := int64(0), 0, false
	for k, tat := range sh.tat {
		if tat <= now {
			delete(sh.tat, k)
			dropped = true
		} else if n == 0 || tat < oldestTAT {
			oldest, oldestTAT = k, tat
		}
		if n++; n >= evictSample {
			break
		}
	}
	if !dropped {
		delete(sh.tat, oldest)
	}
}

// len is how many keys the limiter holds.
func (l *limiter) len() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.tat)
		sh.mu.Unlock()
	}
	return n
}

// sourceKey is the client address a connect is counted against: the peer's IP, or with
// trustForwarded the last address of X-Forwarded-For (the one the proxy appended). An IPv6
// client is counted by its /64, the block one host gets. "" when no address can be read.
func sourceKey(r *http.Request, trustForwarded bool) string {
	var addr netip.Addr
	if trustForwarded {
		if vs := r.Header.Values("X-Forwarded-For"); len(vs) > 0 {
			last := vs[len(vs)-1]
			if i := strings.LastIndexByte(last, ','); i >= 0 {
				last = last[i+1:]
			}
			addr, _ = netip.ParseAddr(strings.TrimSpace(last))
		}
	}
	if !addr.IsValid() {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			addr = ap.Addr()
		} else {
			addr, _ = netip.ParseAddr(r.RemoteAddr)
		}
	}
	if !addr.IsValid() {
		return ""
	}
	addr = addr.Unmap().WithZone("")
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}
