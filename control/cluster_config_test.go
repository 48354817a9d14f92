package control

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/route"
)

const minimalYAML = "token: {keys: [{id: k1, secret: \"0123456789abcdef\"}]}\napps: [{id: a, secret: s, push_key: p}]\n"

func TestRouteAndLimitsDefaults(t *testing.T) {
	t.Setenv(EnvRedisPassword, "")
	c, err := ParseConfig([]byte(minimalYAML))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Route
	if r.Store != RouteMemory || r.Mode != route.ModeRegistry || r.InstanceTTL != DefaultInstanceTTL ||
		len(r.Redis.Addrs) != 1 || r.Redis.Addrs[0] != DefaultRedisAddr || r.Redis.Prefix != DefaultRedisPrefix ||
		r.Redis.DB != 0 || r.Redis.Password != "" {
		t.Errorf("route defaults: %+v", r)
	}
	if c.Limits.ConnectPerDevice != DefaultConnectPerDevice || c.Limits.ConnectPerSource != DefaultConnectPerSource ||
		c.Limits.TrustForwardedFor {
		t.Errorf("limits defaults: %+v", c.Limits)
	}
}

func TestRouteAndLimitsParsed(t *testing.T) {
	t.Setenv(EnvRedisPassword, "from-env")
	c, err := ParseConfig([]byte(minimalYAML + `
route:
  store: redis
  mode: broadcast
  instance_ttl: 3s
  redis:
    addrs: [127.0.0.1:7001, 127.0.0.1:7002]
    username: gw
    prefix: "pw:test"
limits:
  connect_per_device: {rate: 1/s, burst: 5}
  connect_per_source: {rate: 600/m}
  trust_forwarded_for: true
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Route
	if r.Store != RouteRedis || r.Mode != route.ModeBroadcast || r.InstanceTTL != 3*time.Second ||
		strings.Join(r.Redis.Addrs, ",") != "127.0.0.1:7001,127.0.0.1:7002" || !r.Redis.Cluster() ||
		r.Redis.Username != "gw" || r.Redis.Password != "from-env" || r.Redis.Prefix != "pw:test" {
		t.Errorf("route: %+v", r)
	}
	l := c.Limits
	if l.ConnectPerDevice != (RateLimit{Rate{1, time.Second}, 5}) || l.ConnectPerDevice.Off() {
		t.Errorf("per device: %+v", l.ConnectPerDevice)
	}
	// A rate without a burst allows one period's worth at once.
	if l.ConnectPerSource != (RateLimit{Rate{600, time.Minute}, 600}) || !l.TrustForwardedFor {
		t.Errorf("per source: %+v", l.ConnectPerSource)
	}

	// A password in the file wins over the environment; 0 turns a limit off.
	c, err = ParseConfig([]byte(minimalYAML + "route: {redis: {password: file}}\nlimits: {connect_per_source: {rate: 0}, connect_per_device: {rate: 0/m}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Route.Redis.Password != "file" || !c.Limits.ConnectPerSource.Off() || !c.Limits.ConnectPerDevice.Off() {
		t.Errorf("password %q, limits %+v", c.Route.Redis.Password, c.Limits)
	}
}

func TestRouteAndLimitsErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"bad store", "route: {store: etcd}\n", []string{`route.store: "etcd": want memory or redis`}},
		{"bad mode", "route: {mode: gossip}\n", []string{`route.mode: "gossip": want registry or broadcast`}},
		{"ttl too short", "route: {instance_ttl: 500ms}\n", []string{"route.instance_ttl: 500ms: want 1s..5m0s"}},
		{"ttl too long", "route: {instance_ttl: 1h}\n", []string{"route.instance_ttl: 1h0m0s: want 1s..5m0s"}},
		{"ttl not a duration", "route: {instance_ttl: ten}\n", []string{`route.instance_ttl: "ten" is not a duration`}},
		{"misspelt route", "route: {stor: redis}\n", []string{"route.stor: unknown setting"}},
		{"misspelt redis", "route: {redis: {addr: [h:1]}}\n", []string{"route.redis.addr: unknown setting"}},
		{"addr without port", "route: {redis: {addrs: [localhost]}}\n", []string{`route.redis.addrs[0]: "localhost": want host:port`}},
		{"addr bad port", "route: {redis: {addrs: ['h:1', 'h:99999']}}\n", []string{`route.redis.addrs[1]: "h:99999"`}},
		{"addr empty", "route: {redis: {addrs: ['']}}\n", []string{"route.redis.addrs[0]: empty"}},
		{"addr duplicate", "route: {redis: {addrs: ['h:1', 'h:1']}}\n", []string{`route.redis.addrs[1]: "h:1": same as route.redis.addrs[0]`}},
		{"negative db", "route: {redis: {db: -1}}\n", []string{"route.redis.db: -1"}},
		{"db in a cluster", "route: {redis: {addrs: ['h:1', 'h:2'], db: 2}}\n", []string{"route.redis.db: 2: a Redis Cluster"}},
		{"bad prefix", "route: {redis: {prefix: 'pw{x}'}}\n", []string{`route.redis.prefix: "pw{x}"`}},
		{"long prefix", "route: {redis: {prefix: " + strings.Repeat("p", 33) + "}}\n", []string{"route.redis.prefix:"}},
		{"bad rate syntax", "limits: {connect_per_device: {rate: 5 per second}}\n", []string{`limits.connect_per_device.rate: "5 per second": want N/s or N/m`}},
		{"rate per hour", "limits: {connect_per_source: {rate: 5/h}}\n", []string{`limits.connect_per_source.rate: "5/h"`}},
		{"negative rate", "limits: {connect_per_source: {rate: -5/s}}\n", []string{`limits.connect_per_source.rate: "-5/s"`}},
		{"fractional rate", "limits: {connect_per_device: {rate: 0.5/s}}\n", []string{`limits.connect_per_device.rate: "0.5/s"`}},
		{"negative burst", "limits: {connect_per_device: {burst: -1}}\n", []string{"limits.connect_per_device.burst: -1"}},
		{"huge burst", "limits: {connect_per_source: {burst: 2000000}}\n", []string{"limits.connect_per_source.burst: 2000000"}},
		{"misspelt limit", "limits: {connect_per_device: {rat: 1/s}}\n", []string{"limits.connect_per_device.rat: unknown setting"}},
		{"misspelt limits", "limits: {connect_per_ip: {rate: 1/s}}\n", []string{"limits.connect_per_ip: unknown setting"}},
		{"every problem at once", "route: {store: x, mode: y, instance_ttl: 0s, redis: {addrs: [z]}}\nlimits: {connect_per_device: {rate: fast}, connect_per_source: {burst: -2}}\n",
			[]string{"route.store:", "route.mode:", "route.redis.addrs[0]:", "limits.connect_per_source.burst:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(minimalYAML + tt.yaml))
			if err == nil {
				t.Fatalf("no error; route %+v, limits %+v", c.Route, c.Limits)
			}
			if !errors.Is(err, ErrInvalidConfig) {
				t.Errorf("error does not wrap ErrInvalidConfig: %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\ndoes not contain %q", err, w)
				}
			}
		})
	}
}

// A gateway or control binary merges its flags over the file's section and validates it again.
func TestRouteConfigValidate(t *testing.T) {
	rc := RouteConfig{Store: RouteRedis, Redis: RedisConfig{Addrs: []string{"127.0.0.1:6380"}}}
	if err := rc.Validate(); err != nil {
		t.Fatal(err)
	}
	if rc.Mode != route.ModeRegistry || rc.InstanceTTL != DefaultInstanceTTL || rc.Redis.Prefix != DefaultRedisPrefix {
		t.Fatalf("defaults: %+v", rc)
	}
	rc.Store = "redis-cluster"
	err := rc.Validate()
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Setting != "route.store" || !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("Validate: %v", err)
	}
}

func TestParseRate(t *testing.T) {
	for in, want := range map[string]Rate{
		"2/s": {2, time.Second}, "100/m": {100, time.Minute}, " 7 / s ": {7, time.Second},
		"0": {0, time.Second}, "0/s": {0, time.Second},
	} {
		got, err := ParseRate(in)
		if err != nil || got != want {
			t.Errorf("ParseRate(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "2", "2/", "/s", "2/h", "x/s", "1e3/s", "2/S", "3000000000/s"} {
		if r, err := ParseRate(in); err == nil {
			t.Errorf("ParseRate(%q) = %+v, want an error", in, r)
		}
	}
	for _, r := range []Rate{{2, time.Second}, {30, time.Minute}, {0, time.Second}} {
		back, err := ParseRate(r.String())
		if err != nil || back != r {
			t.Errorf("%+v → %q → %+v, %v", r, r.String(), back, err)
		}
	}
}

// The example config documents the route and limits sections with their defaults.
func TestExampleConfigRouteAndLimits(t *testing.T) {
	t.Setenv(EnvRedisPassword, "")
	c, err := LoadConfig("../deploy/pushwire.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Route.Store != RouteMemory || c.Route.Mode != route.ModeRegistry || c.Route.InstanceTTL != DefaultInstanceTTL ||
		strings.Join(c.Route.Redis.Addrs, ",") != DefaultRedisAddr || c.Route.Redis.Prefix != DefaultRedisPrefix {
		t.Errorf("example route: %+v", c.Route)
	}
	if c.Limits.ConnectPerDevice != DefaultConnectPerDevice || c.Limits.ConnectPerSource != DefaultConnectPerSource {
		t.Errorf("example limits: %+v", c.Limits)
	}
}
