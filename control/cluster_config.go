package control

import (
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pushwire/pushwire/route"
)

// Route stores (RouteConfig.Store).
const (
	// RouteMemory keeps routes in the process: one instance, nothing else to run (the default).
	RouteMemory = "memory"
	// RouteRedis keeps routes, the instance registry and the bus in Redis: a cluster.
	RouteRedis = "redis"
)

// Route defaults and bounds.
const (
	DefaultInstanceTTL = 10 * time.Second
	MinInstanceTTL     = time.Second
	MaxInstanceTTL     = 5 * time.Minute
	DefaultRedisAddr   = "127.0.0.1:6379"
	DefaultRedisPrefix = "pw"
	// MaxRedisPrefixLen is the longest route.redis.prefix.
	MaxRedisPrefixLen = 32
	// EnvRedisPassword is read when route.redis.password is empty.
	EnvRedisPassword = "PUSHWIRE_REDIS_PASSWORD"
)

// RouteConfig is the `route:` section, shared by the control layer and the gateways:
//
//	route:
//	  store: memory            # memory (default: one instance) | redis
//	  mode: registry           # registry (default) | broadcast — read by gateways
//	  instance_ttl: 10s        # gateways' registration TTL (default 10s, 1s..5m)
//	  redis:
//	    addrs: [127.0.0.1:6379] # one: a single server; several: a cluster; with master_name: sentinels
//	    master_name: ""
//	    username: ""
//	    password: ""            # or env PUSHWIRE_REDIS_PASSWORD
//	    db: 0
//	    prefix: pw
//
// Zero values take the defaults (Validate). The control layer dispatches from the instance
// registry when Store is RouteRedis; with RouteMemory it hands out the configured endpoints (a
// memory registry lives in one process and cannot see the gateways).
type RouteConfig struct {
	// Store is RouteMemory (default) or RouteRedis.
	Store string `yaml:"store"`
	// Mode is the gateways' delivery mode: route.ModeRegistry (default) or route.ModeBroadcast.
	Mode string `yaml:"mode"`
	// InstanceTTL is how long a gateway's registration lives without a refresh; gateways
	// re-register well within it, and the control layer never hands out an instance whose TTL
	// lapsed. Default DefaultInstanceTTL; MinInstanceTTL..MaxInstanceTTL.
	InstanceTTL time.Duration `yaml:"instance_ttl"`
	// Redis is the Redis deployment (read when Store is RouteRedis).
	Redis RedisConfig `yaml:"redis"`
}

// RedisConfig locates Redis for the route layer.
type RedisConfig struct {
	// Addrs are host:port: one for a single server, several for a cluster's seed nodes, or the
	// sentinels when MasterName is set. Default [DefaultRedisAddr].
	Addrs []string `yaml:"addrs"`
	// MasterName, when set, makes Addrs the sentinels that know this master.
	MasterName string `yaml:"master_name"`
	Username   string `yaml:"username"`
	// Password, when empty, is taken from the environment variable EnvRedisPassword.
	Password string `yaml:"password"`
	// DB is the database number (only 0 in a cluster).
	DB int `yaml:"db"`
	// Prefix starts every key and channel, so several deployments can share one Redis. Default
	// DefaultRedisPrefix; 1..MaxRedisPrefixLen characters of A-Z a-z 0-9 . _ - :
	Prefix string `yaml:"prefix"`
}

// Cluster reports whether the addresses name a Redis Cluster (several, without a master name).
func (r *RedisConfig) Cluster() bool { return len(r.Addrs) > 1 && r.MasterName == "" }

func (rc *RouteConfig) setDefaults() {
	if rc.Store == "" {
		rc.Store = RouteMemory
	}
	if rc.Mode == "" {
		rc.Mode = route.ModeRegistry
	}
	if rc.InstanceTTL == 0 {
		rc.InstanceTTL = DefaultInstanceTTL
	}
	if len(rc.Redis.Addrs) == 0 {
		rc.Redis.Addrs = []string{DefaultRedisAddr}
	}
	if rc.Redis.Prefix == "" {
		rc.Redis.Prefix = DefaultRedisPrefix
	}
	if rc.Redis.Password == "" {
		rc.Redis.Password = os.Getenv(EnvRedisPassword)
	}
}

// Validate applies the defaults to rc's zero-valued settings and checks them (after flags
// changed a section the config file's Validate already checked). It returns nil or one
// ConfigError per problem, joined, each naming its setting ("route.redis.addrs[1]: …").
func (rc *RouteConfig) Validate() error {
	rc.setDefaults()
	return errors.Join(rc.check()...)
}

// check validates a RouteConfig whose defaults are applied.
func (rc *RouteConfig) check() []error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, &ConfigError{setting, fmt.Sprintf(format, args...)})
	}
	switch rc.Store {
	case RouteMemory, RouteRedis:
	default:
		bad("route.store", "%q: want memory or redis", rc.Store)
	}
	switch rc.Mode {
	case route.ModeRegistry, route.ModeBroadcast:
	default:
		bad("route.mode", "%q: want registry or broadcast", rc.Mode)
	}
	if rc.InstanceTTL < MinInstanceTTL || rc.InstanceTTL > MaxInstanceTTL {
		bad("route.instance_ttl", "%v: want %v..%v", rc.InstanceTTL, MinInstanceTTL, MaxInstanceTTL)
	}
	r := &rc.Redis
	seen := map[string]int{}
	for i, a := range r.Addrs {
		at := fmt.Sprintf("route.redis.addrs[%d]", i)
		host, port, err := net.SplitHostPort(a)
		switch {
		case a == "":
			bad(at, "empty")
		case err != nil || host == "" || !validPort(port):
			bad(at, "%q: want host:port", a)
		default:
			if j, dup := seen[a]; dup {
				bad(at, "%q: same as route.redis.addrs[%d]", a, j)
			} else {
				seen[a] = i
			}
		}
	}
	if r.DB < 0 {
		bad("route.redis.db", "%d: want 0 or more", r.DB)
	} else if r.DB != 0 && r.Cluster() {
		bad("route.redis.db", "%d: a Redis Cluster (several addrs without master_name) has only db 0", r.DB)
	}
	if len(r.Prefix) > MaxRedisPrefixLen || !isPrefix(r.Prefix) {
		bad("route.redis.prefix", "%q: want 1..%d characters of A-Z a-z 0-9 . _ - :", r.Prefix, MaxRedisPrefixLen)
	}
	if r.MasterName != "" && !printable(r.MasterName) {
		bad("route.redis.master_name", "contains control characters")
	}
	return errs
}

func isPrefix(s string) bool {
	return s != "" && isIdent(strings.ReplaceAll(s, ":", "_"), true)
}

// Connect limit defaults (LimitsConfig).
var (
	DefaultConnectPerDevice = RateLimit{Rate: Rate{Events: 2, Per: time.Second}, Burst: 10}
	DefaultConnectPerSource = RateLimit{Rate: Rate{Events: 100, Per: time.Second}, Burst: 1000}
)

// MaxBurst is the largest burst a limit accepts.
const MaxBurst = 1_000_000

// LimitsConfig is the `limits:` section: how fast clients may connect.
//
//	limits:
//	  connect_per_device: {rate: 1/s, burst: 5}      # default 2/s burst 10; rate 0 = off
//	  connect_per_source: {rate: 200/s, burst: 2000} # per client IP; default 100/s burst 1000
//	  trust_forwarded_for: false                     # client IP from X-Forwarded-For
//
// Each control process applies the limits to the requests it receives: behind a load balancer
// spreading connects over n control processes, a client may connect up to n times as fast.
type LimitsConfig struct {
	// ConnectPerDevice limits POST /v1/connect per app and device, counted once the request's
	// sign is verified (a forger cannot use up a real device's allowance).
	ConnectPerDevice RateLimit `yaml:"connect_per_device"`
	// ConnectPerSource limits POST /v1/connect per client IP address (per /64 for IPv6),
	// counted before the body is read.
	ConnectPerSource RateLimit `yaml:"connect_per_source"`
	// TrustForwardedFor takes the client IP from the last address of X-Forwarded-For (the one
	// the proxy in front of the control layer appended) instead of the connection's peer. Set
	// it only behind such a proxy: otherwise any client can name any address.
	TrustForwardedFor bool `yaml:"trust_forwarded_for"`
}

// RateLimit allows Rate sustained with bursts of up to Burst at once.
type RateLimit struct {
	// Rate is the sustained rate. The zero Rate takes the default; a Rate of 0 events (per
	// anything) turns the limit off.
	Rate Rate `yaml:"rate"`
	// Burst is how many may come at once after a quiet spell. 0: the default with the default
	// rate, else one period's worth of Rate (at least 1).
	Burst int `yaml:"burst"`
}

// Off reports whether the limit lets everything through.
func (l RateLimit) Off() bool { return l.Rate.Per != 0 && l.Rate.Events == 0 }

// Rate is Events per Per, written N/s or N/m ("0" for off).
type Rate struct {
	Events int64
	Per    time.Duration // 0: not set
}

// String writes r as it is configured: "2/s", "30/m", "0" (off) or "" (not set).
func (r Rate) String() string {
	switch {
	case r.Per == 0:
		return ""
	case r.Events == 0:
		return "0"
	case r.Per == time.Second:
		return strconv.FormatInt(r.Events, 10) + "/s"
	case r.Per == time.Minute:
		return strconv.FormatInt(r.Events, 10) + "/m"
	}
	return strconv.FormatInt(r.Events, 10) + "/" + r.Per.String()
}

// interval is the time between two events at the sustained rate.
func (r Rate) interval() time.Duration {
	return time.Duration(math.Ceil(float64(r.Per) / float64(r.Events)))
}

// MaxRateEvents is the largest N of a rate N/s or N/m.
const MaxRateEvents = 1_000_000_000

// ParseRate reads a rate: N/s or N/m with N a whole number (0: off), or "0".
func ParseRate(s string) (Rate, error) {
	t := strings.TrimSpace(s)
	if t == "0" {
		return Rate{Events: 0, Per: time.Second}, nil
	}
	n, unit, ok := strings.Cut(t, "/")
	var per time.Duration
	switch strings.TrimSpace(unit) {
	case "s":
		per = time.Second
	case "m":
		per = time.Minute
	default:
		ok = false
	}
	v, err := strconv.ParseInt(strings.TrimSpace(n), 10, 64)
	if !ok || err != nil || v < 0 || v > MaxRateEvents {
		return Rate{}, fmt.Errorf("%q: want N/s or N/m with N in 0..%d (e.g. 2/s, 30/m; 0 for off)", s, MaxRateEvents)
	}
	return Rate{Events: v, Per: per}, nil
}

func (l *LimitsConfig) setDefaults() {
	setLimit(&l.ConnectPerDevice, DefaultConnectPerDevice)
	setLimit(&l.ConnectPerSource, DefaultConnectPerSource)
}

func setLimit(l *RateLimit, def RateLimit) {
	if l.Rate.Per == 0 {
		l.Rate = def.Rate
		if l.Burst == 0 {
			l.Burst = def.Burst
		}
	}
	if l.Burst == 0 && l.Rate.Events > 0 {
		l.Burst = int(min(l.Rate.Events, MaxBurst))
	}
}

func (l *LimitsConfig) check() []error {
	var errs []error
	for _, x := range []struct {
		name string
		l    RateLimit
	}{
		{"limits.connect_per_device", l.ConnectPerDevice},
		{"limits.connect_per_source", l.ConnectPerSource},
	} {
		if x.l.Rate.Events < 0 || x.l.Rate.Events > MaxRateEvents || x.l.Rate.Per < 0 {
			errs = append(errs, &ConfigError{x.name + ".rate", fmt.Sprintf("%d per %v: want 0..%d per a positive period", x.l.Rate.Events, x.l.Rate.Per, MaxRateEvents)})
		} else if x.l.Rate.Events > 0 && x.l.Rate.interval() <= 0 {
			errs = append(errs, &ConfigError{x.name + ".rate", fmt.Sprintf("%s: faster than one per nanosecond", x.l.Rate)})
		}
		if x.l.Burst < 0 || x.l.Burst > MaxBurst {
			errs = append(errs, &ConfigError{x.name + ".burst", fmt.Sprintf("%d: want 1..%d (0: the default)", x.l.Burst, MaxBurst)})
		}
	}
	return errs
}
