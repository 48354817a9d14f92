package control

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pushwire/pushwire/control/token"
	"github.com/pushwire/pushwire/core/gateway"
)

// Defaults for zero-valued Config settings, applied in one place (Config.Validate).
const (
	DefaultTokenTTL  = 24 * time.Hour
	DefaultHeartbeat = 60 * time.Second
)

// Limits on configured identifiers.
const (
	// MaxAppIDLen is the longest app ID.
	MaxAppIDLen = 64
	// MaxConfigSize is the largest configuration file LoadConfig reads.
	MaxConfigSize = 4 << 20
)

// Transport protocols an endpoint may offer (PROTOCOL.md "Transports").
const (
	ProtoTCP  = "tcp"
	ProtoTLS  = "tls"
	ProtoWS   = "ws"
	ProtoWSS  = "wss"
	ProtoQUIC = "quic"
)

// ErrInvalidConfig is wrapped by every configuration error (see ConfigError).
var ErrInvalidConfig = errors.New("control: invalid config")

// ConfigError is one bad setting. Validate joins one ConfigError per problem (errors.Join), so
// errors.As finds the first and errors.Is(err, ErrInvalidConfig) holds.
type ConfigError struct {
	Setting string // the setting's path in the file, e.g. "apps[1].push_key"
	Problem string // what is wrong with it, e.g. "empty"
}

func (e *ConfigError) Error() string { return e.Setting + ": " + e.Problem }

// Is reports whether target is ErrInvalidConfig.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Config is the control layer's configuration, and what a gateway needs from it (the token keys
// to verify logins, the apps' push keys). It is loaded from YAML:
//
//	token:
//	  ttl: 24h
//	  keys:                      # the first key signs; all verify
//	    - {id: k1, secret: "at-least-16-bytes-secret"}
//	heartbeat: 60s
//	apps:
//	  - {id: demo, secret: demo-app-secret, push_key: demo-push-key}
//	endpoints:                   # the gateway access points, in preference order
//	  - {protocol: tcp, addr: 127.0.0.1:7000}
//	route:                       # the cluster's route layer (RouteConfig)
//	  store: redis
//	  redis: {addrs: [127.0.0.1:6379]}
//	limits:                      # connects per device and per client address (LimitsConfig)
//	  connect_per_source: {rate: 200/s, burst: 2000}
//	dispatch:                    # which transports clients get (DispatchConfig)
//	  rules: [{platform: [web], transports: [wss, ws]}, {transports: [tcp, tls, quic]}]
//	cors_origins: ["https://app.example"]  # pages that may call /v1/connect
//
// Zero-valued settings take the documented defaults when Validate runs (LoadConfig, ParseConfig
// and NewServer call it). Do not modify a Config after Validate: its lookup index is built there.
type Config struct {
	Token TokenConfig `yaml:"token"`
	// Heartbeat is the interval at which clients send PING, a whole number of seconds.
	// Default: DefaultHeartbeat (60s).
	Heartbeat time.Duration `yaml:"heartbeat"`
	// Apps are the registered applications; at least one is required.
	Apps []App `yaml:"apps"`
	// Endpoints are the gateway access points, in preference order. The file may leave them
	// empty when they come from elsewhere (WithEndpoints); a Server with none answers 503.
	Endpoints []Endpoint `yaml:"endpoints"`
	// Businesses configure upstream forwarding per business ID (the frames' biz): backend URL,
	// timeout, pool size, queue length, notify URL, whether clients may join groups, and the
	// slow-consumer policy. Read by gateways; see gateway.Business for each setting and its
	// default.
	Businesses map[uint16]gateway.Business `yaml:"businesses"`
	// EngineOptions are the gateway's I/O engine options (engines.Config.Options), key to value
	// as "pushwire gateway --engine X --help-engine" lists them. Read by gateways, which check
	// them against the chosen engine at start-up; --engine-opt flags override them.
	EngineOptions map[string]string `yaml:"engine_options"`
	// Route is the route layer shared by the control layer and the gateways: the store (memory
	// for one instance, Redis for a cluster), the delivery mode and the instances' TTL.
	Route RouteConfig `yaml:"route"`
	// Limits bound how fast clients may connect (POST /v1/connect).
	Limits LimitsConfig `yaml:"limits"`
	// Dispatch is the policy that picks the transports of each client, and the gray releases.
	// Without rules, DefaultDispatch.
	Dispatch DispatchConfig `yaml:"dispatch"`
	// CORSOrigins are the origins of the web pages that may call POST /v1/connect from a
	// browser: "*" for any page, or http(s)://host[:port] as browsers send it. Empty: none (no
	// CORS header is sent, and OPTIONS is answered 405).
	CORSOrigins []string `yaml:"cors_origins"`

	index *configIndex // built by Validate; nil before
}

// TokenConfig configures the connection tokens.
type TokenConfig struct {
	// TTL is how long an issued token stays valid, a whole number of seconds.
	// Default: DefaultTokenTTL (24h).
	TTL time.Duration `yaml:"ttl"`
	// Keys sign and verify tokens: the first key signs, every key verifies. To rotate, put the
	// new key first and keep the old one until the tokens it signed have expired (TTL).
	Keys []Key `yaml:"keys"`
}

// Key is a token signing key (see token.Key).
type Key struct {
	ID     string `yaml:"id"`     // 1..32 characters of [A-Za-z0-9_-]
	Secret string `yaml:"secret"` // at least 16 bytes
}

// App is a registered application.
type App struct {
	// ID names the app in connect requests and tokens: 1..64 characters of [A-Za-z0-9._-].
	ID string `yaml:"id"`
	// Secret is shared with the app's clients, which prove possession with Sign.
	Secret string `yaml:"secret"`
	// PushKey authenticates the app's business servers on the push API
	// (Authorization: Bearer <push_key>). Unique among apps.
	PushKey string `yaml:"push_key"`
	// Disabled apps are refused at connect (403 app_disabled).
	Disabled bool `yaml:"disabled,omitempty"`
}

// Endpoint is a gateway access point as clients see it.
type Endpoint struct {
	// Protocol is one of ProtoTCP, ProtoTLS, ProtoWS, ProtoWSS, ProtoQUIC.
	Protocol string `yaml:"protocol" json:"protocol"`
	// Addr is host:port, as reachable by clients.
	Addr string `yaml:"addr" json:"addr"`
	// Health, when set, is the gateway's HTTP base URL (e.g. http://10.0.0.5:7080): the control
	// layer polls its /v1/stats, leaves the endpoint out of connect answers while the gateway is
	// draining or does not answer, and puts the least loaded gateway first. Never sent to clients.
	Health string `yaml:"health" json:"-"`
	// Region and Group place the gateway for the dispatch policy like a registered instance's
	// (clients of its region first; gray releases by group). Optional; never sent to clients.
	Region string `yaml:"region" json:"-"`
	Group  string `yaml:"group" json:"-"`
}

type configIndex struct {
	byID      map[string]int
	byPushKey map[[sha256.Size]byte]int // keyed by SHA-256 of the push key
}

// fileConfig mirrors Config as written in YAML, with durations as text so that a bad duration
// is reported with the name of its setting.
type fileConfig struct {
	Token         fileToken                   `yaml:"token"`
	Heartbeat     string                      `yaml:"heartbeat"`
	Apps          []App                       `yaml:"apps"`
	Endpoints     []Endpoint                  `yaml:"endpoints"`
	Businesses    map[uint16]gateway.Business `yaml:"businesses"`
	EngineOptions map[string]string           `yaml:"engine_options"`
	Route         fileRoute                   `yaml:"route"`
	Limits        fileLimits                  `yaml:"limits"`
	Dispatch      fileDispatch                `yaml:"dispatch"`
	CORSOrigins   []string                    `yaml:"cors_origins"`
}

// fileDispatch mirrors DispatchConfig, with each gray release's percent a pointer so that a
// missing one is reported rather than taken as 0.
type fileDispatch struct {
	Rules []DispatchRule `yaml:"rules"`
	Gray  []fileGray     `yaml:"gray"`
}

type fileGray struct {
	Transport string   `yaml:"transport"`
	Group     string   `yaml:"group"`
	Percent   *float64 `yaml:"percent"`
}

type fileRoute struct {
	Store       string      `yaml:"store"`
	Mode        string      `yaml:"mode"`
	InstanceTTL string      `yaml:"instance_ttl"`
	Redis       RedisConfig `yaml:"redis"`
}

type fileLimits struct {
	ConnectPerDevice  fileDeviceRate `yaml:"connect_per_device"`
	ConnectPerSource  fileSourceRate `yaml:"connect_per_source"`
	TrustForwardedFor bool           `yaml:"trust_forwarded_for"`
}

// fileDeviceRate and fileSourceRate are one shape under two names, so that an unknown setting in
// either is reported under its own path (yamlParents).
type (
	fileDeviceRate struct {
		Rate  string `yaml:"rate"`
		Burst int    `yaml:"burst"`
	}
	fileSourceRate fileDeviceRate
)

type fileToken struct {
	TTL  string `yaml:"ttl"`
	Keys []Key  `yaml:"keys"`
}

// yamlParents maps the Go types yaml.v3 names in "field x not found in type T" to the setting
// path of T, so that the error names the misspelt setting as it appears in the file.
var yamlParents = map[string]string{
	"control.fileConfig":     "",
	"control.fileToken":      "token.",
	"control.Key":            "token.keys[].",
	"control.App":            "apps[].",
	"control.Endpoint":       "endpoints[].",
	"gateway.Business":       "businesses.<biz>.",
	"control.fileRoute":      "route.",
	"control.RedisConfig":    "route.redis.",
	"control.fileLimits":     "limits.",
	"control.fileDeviceRate": "limits.connect_per_device.",
	"control.fileSourceRate": "limits.connect_per_source.",
	"control.fileDispatch":   "dispatch.",
	"control.DispatchRule":   "dispatch.rules[].",
	"control.fileGray":       "dispatch.gray[].",
}

var (
	yamlLineRE    = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlUnknownRE = regexp.MustCompile(`^field (.+) not found in type (\S+)$`)
)

// yamlError turns yaml.v3's type errors into ConfigErrors naming the setting where it can.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return fmt.Errorf("%w: %w", err, ErrInvalidConfig)
	}
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		line, what := "", msg
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			line, what = m[1], m[2]
		}
		if m := yamlUnknownRE.FindStringSubmatch(what); m != nil {
			if parent, ok := yamlParents[m[2]]; ok {
				errs = append(errs, &ConfigError{parent + m[1], "unknown setting (line " + line + ")"})
				continue
			}
		}
		if line != "" {
			errs = append(errs, &ConfigError{"line " + line, what})
		} else {
			errs = append(errs, &ConfigError{"yaml", what})
		}
	}
	return errors.Join(errs...)
}

// LoadConfig reads, parses and validates the YAML configuration file at path.
func LoadConfig(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("control: load config: %w", err)
	}
	defer func() { _ = f.Close() }() // read only: the read's error is the one that counts
	data, err := io.ReadAll(io.LimitReader(f, MaxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("control: load config %s: %w", path, err)
	}
	if len(data) > MaxConfigSize {
		return nil, fmt.Errorf("control: load config %s: larger than %d bytes: %w", path, MaxConfigSize, ErrInvalidConfig)
	}
	c, err := ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("control: load config %s: %w", path, err)
	}
	return c, nil
}

// ParseConfig parses and validates a YAML configuration. Unknown settings are errors, as are
// several YAML documents. Errors wrap ErrInvalidConfig.
func ParseConfig(data []byte) (*Config, error) {
	var f fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && err != io.EOF {
		return nil, yamlError(err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		return nil, fmt.Errorf("more than one YAML document: %w", ErrInvalidConfig)
	}

	c := &Config{
		Token:      TokenConfig{Keys: f.Token.Keys},
		Apps:       f.Apps,
		Endpoints:  f.Endpoints,
		Businesses: f.Businesses,

		EngineOptions: f.EngineOptions,
		Route:         RouteConfig{Store: f.Route.Store, Mode: f.Route.Mode, Redis: f.Route.Redis},
		Limits: LimitsConfig{
			ConnectPerDevice:  RateLimit{Burst: f.Limits.ConnectPerDevice.Burst},
			ConnectPerSource:  RateLimit{Burst: f.Limits.ConnectPerSource.Burst},
			TrustForwardedFor: f.Limits.TrustForwardedFor,
		},
		Dispatch:    DispatchConfig{Rules: f.Dispatch.Rules},
		CORSOrigins: f.CORSOrigins,
	}
	var errs []error
	for i, g := range f.Dispatch.Gray {
		gr := GrayRelease{Transport: g.Transport, Group: g.Group}
		switch at := fmt.Sprintf("dispatch.gray[%d].percent", i); {
		case g.Percent == nil:
			errs = append(errs, &ConfigError{at, "missing: want 0..100"})
		case *g.Percent != math.Trunc(*g.Percent) || math.Abs(*g.Percent) > 1e6:
			errs = append(errs, &ConfigError{at, fmt.Sprintf("%v: want a whole number 0..100", *g.Percent)})
		default:
			gr.Percent = int(*g.Percent)
		}
		c.Dispatch.Gray = append(c.Dispatch.Gray, gr)
	}
	for _, r := range []struct {
		setting string
		text    string
		dst     *Rate
	}{
		{"limits.connect_per_device.rate", f.Limits.ConnectPerDevice.Rate, &c.Limits.ConnectPerDevice.Rate},
		{"limits.connect_per_source.rate", f.Limits.ConnectPerSource.Rate, &c.Limits.ConnectPerSource.Rate},
	} {
		if r.text == "" {
			continue
		}
		v, err := ParseRate(r.text)
		if err != nil {
			errs = append(errs, &ConfigError{r.setting, err.Error()})
			continue
		}
		*r.dst = v
	}
	for _, d := range []struct {
		setting string
		text    string
		dst     *time.Duration
	}{
		{"token.ttl", f.Token.TTL, &c.Token.TTL},
		{"heartbeat", f.Heartbeat, &c.Heartbeat},
		{"route.instance_ttl", f.Route.InstanceTTL, &c.Route.InstanceTTL},
	} {
		if d.text == "" {
			continue
		}
		v, err := time.ParseDuration(d.text)
		if err != nil {
			errs = append(errs, &ConfigError{d.setting, fmt.Sprintf("%q is not a duration (e.g. 90s, 24h)", d.text)})
			continue
		}
		*d.dst = v
	}
	// The settings that did not parse keep their defaults: Validate reports the other problems.
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// setDefaults gives zero-valued settings their documented defaults.
func (c *Config) setDefaults() {
	if c.Token.TTL == 0 {
		c.Token.TTL = DefaultTokenTTL
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = DefaultHeartbeat
	}
	c.Route.setDefaults()
	c.Limits.setDefaults()
}

// Validate applies the defaults to zero-valued settings, then checks every setting. It returns
// nil or one ConfigError per problem, joined (errors.Join); each names its setting, such as
// "apps[1].push_key: empty".
func (c *Config) Validate() error {
	c.setDefaults()
	c.index = nil
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, &ConfigError{setting, fmt.Sprintf(format, args...)})
	}

	checkSeconds := func(setting string, d time.Duration) {
		switch {
		case d < time.Second:
			bad(setting, "%v: must be at least 1s", d)
		case d%time.Second != 0:
			bad(setting, "%v: must be a whole number of seconds", d)
		}
	}
	checkSeconds("token.ttl", c.Token.TTL)
	checkSeconds("heartbeat", c.Heartbeat)

	if err := gateway.ValidateBusinesses(c.Businesses); err != nil {
		bad("businesses", "%s", strings.TrimPrefix(strings.TrimPrefix(err.Error(), "forward: "), "gateway: "))
	}

	if len(c.Token.Keys) == 0 {
		bad("token.keys", "empty: at least one key is needed to sign tokens")
	}
	keyAt := map[string]int{}
	for i, k := range c.Token.Keys {
		at := fmt.Sprintf("token.keys[%d]", i)
		switch {
		case k.ID == "":
			bad(at+".id", "empty")
		case len(k.ID) > token.MaxKeyIDLen || !isIdent(k.ID, false):
			bad(at+".id", "%q: want 1..%d characters of A-Z a-z 0-9 _ -", k.ID, token.MaxKeyIDLen)
		default:
			if j, dup := keyAt[k.ID]; dup {
				bad(at+".id", "duplicate %q (also token.keys[%d])", k.ID, j)
			} else {
				keyAt[k.ID] = i
			}
		}
		if len(k.Secret) < token.MinSecretLen {
			bad(at+".secret", "%d bytes, want at least %d", len(k.Secret), token.MinSecretLen)
		}
	}

	if len(c.Apps) == 0 {
		bad("apps", "empty: at least one app is needed")
	}
	idx := &configIndex{byID: map[string]int{}, byPushKey: map[[sha256.Size]byte]int{}}
	for i, a := range c.Apps {
		at := fmt.Sprintf("apps[%d]", i)
		switch {
		case a.ID == "":
			bad(at+".id", "empty")
		case len(a.ID) > MaxAppIDLen || !isIdent(a.ID, true):
			bad(at+".id", "%q: want 1..%d characters of A-Z a-z 0-9 . _ -", a.ID, MaxAppIDLen)
		default:
			if j, dup := idx.byID[a.ID]; dup {
				bad(at+".id", "duplicate %q (also apps[%d])", a.ID, j)
			} else {
				idx.byID[a.ID] = i
			}
		}
		if a.Secret == "" {
			bad(at+".secret", "empty")
		}
		if a.PushKey == "" {
			bad(at+".push_key", "empty")
		} else {
			h := sha256.Sum256([]byte(a.PushKey))
			if j, dup := idx.byPushKey[h]; dup {
				bad(at+".push_key", "same as apps[%d].push_key: push keys must be unique", j)
			} else {
				idx.byPushKey[h] = i
			}
		}
	}

	errs = append(errs, validateEndpoints("endpoints", c.Endpoints)...)
	errs = append(errs, c.Route.check()...)
	errs = append(errs, c.Limits.check()...)
	errs = append(errs, c.Dispatch.check()...)
	errs = append(errs, checkOrigins("cors_origins", c.CORSOrigins)...)

	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	c.index = idx
	return nil
}

// validateEndpoints checks a list of endpoints; name is the setting reported in errors.
func validateEndpoints(name string, eps []Endpoint) []error {
	var errs []error
	seen := map[Endpoint]int{}
	for i, e := range eps {
		at := fmt.Sprintf("%s[%d]", name, i)
		switch e.Protocol {
		case ProtoTCP, ProtoTLS, ProtoWS, ProtoWSS, ProtoQUIC:
		case "":
			errs = append(errs, &ConfigError{at + ".protocol", "empty (want tcp, tls, ws, wss or quic)"})
		default:
			errs = append(errs, &ConfigError{at + ".protocol", fmt.Sprintf("%q: want tcp, tls, ws, wss or quic", e.Protocol)})
		}
		if e.Addr == "" {
			errs = append(errs, &ConfigError{at + ".addr", "empty"})
		} else if host, port, err := net.SplitHostPort(e.Addr); err != nil || host == "" || !validPort(port) {
			errs = append(errs, &ConfigError{at + ".addr", fmt.Sprintf("%q: want host:port as clients reach it", e.Addr)})
		}
		if e.Health != "" {
			if u, err := url.Parse(e.Health); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs = append(errs, &ConfigError{at + ".health", fmt.Sprintf("%q: want the gateway's http(s)://host:port", e.Health)})
			}
		}
		e.Health, e.Region, e.Group = "", "", ""
		if j, dup := seen[e]; dup {
			errs = append(errs, &ConfigError{at, fmt.Sprintf("same as %s[%d]", name, j)})
		} else {
			seen[e] = i
		}
	}
	return errs
}

func validPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}

// isIdent reports whether s is made of A-Z a-z 0-9 _ - (and '.' when dot is set).
func isIdent(s string, dot bool) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		//nolint:staticcheck // QF1001: a character class reads better as one negated test than De Morgan's rewrite
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || dot && c == '.') {
			return false
		}
	}
	return true
}

// Verifier returns a token verifier holding every configured key, as gateways use to check
// LOGIN tokens. The error wraps token.ErrInvalidKey.
func (c *Config) Verifier() (*token.Verifier, error) {
	keys := make([]token.Key, len(c.Token.Keys))
	for i, k := range c.Token.Keys {
		keys[i] = token.Key{ID: k.ID, Secret: []byte(k.Secret)}
	}
	v, err := token.NewVerifier(keys...)
	if err != nil {
		return nil, fmt.Errorf("control: token.keys: %w", err)
	}
	return v, nil
}

// signer returns a token signer for the first configured key.
func (c *Config) signer() (*token.Signer, error) {
	if len(c.Token.Keys) == 0 {
		return nil, fmt.Errorf("control: token.keys: empty: %w", ErrInvalidConfig)
	}
	k := c.Token.Keys[0]
	s, err := token.NewSigner(token.Key{ID: k.ID, Secret: []byte(k.Secret)})
	if err != nil {
		return nil, fmt.Errorf("control: token.keys[0]: %w", err)
	}
	return s, nil
}

// App returns the app with the given ID, disabled or not.
func (c *Config) App(id string) (*App, bool) {
	if c.index != nil {
		i, ok := c.index.byID[id]
		if !ok {
			return nil, false
		}
		return &c.Apps[i], true
	}
	for i := range c.Apps {
		if c.Apps[i].ID == id {
			return &c.Apps[i], true
		}
	}
	return nil, false
}

// AppByPushKey returns the app whose push key is key, disabled or not (the caller decides what
// a disabled app may do). The lookup goes by the key's SHA-256, so its timing reveals nothing
// useful about the configured keys; an empty key never matches.
func (c *Config) AppByPushKey(key string) (*App, bool) {
	if key == "" {
		return nil, false
	}
	h := sha256.Sum256([]byte(key))
	if c.index != nil {
		i, ok := c.index.byPushKey[h]
		if !ok {
			return nil, false
		}
		return &c.Apps[i], true
	}
	// Not validated: scan every app without stopping early, comparing digests in constant time.
	found := -1
	for i := range c.Apps {
		if c.Apps[i].PushKey == "" {
			continue
		}
		hi := sha256.Sum256([]byte(c.Apps[i].PushKey))
		if subtle.ConstantTimeCompare(h[:], hi[:]) == 1 && found < 0 {
			found = i
		}
	}
	if found < 0 {
		return nil, false
	}
	return &c.Apps[found], true
}

// clone returns a copy of c that shares nothing mutable with it.
func (c *Config) clone() *Config {
	d := *c
	d.Token.Keys = slices.Clone(c.Token.Keys)
	d.Apps = slices.Clone(c.Apps)
	d.Endpoints = slices.Clone(c.Endpoints)
	d.Businesses = maps.Clone(c.Businesses)
	d.EngineOptions = maps.Clone(c.EngineOptions)
	d.Route.Redis.Addrs = slices.Clone(c.Route.Redis.Addrs)
	d.Dispatch = c.Dispatch.clone()
	d.CORSOrigins = slices.Clone(c.CORSOrigins)
	d.index = nil
	return &d
}
