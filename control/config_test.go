package control

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/control/token"
)

// briefYAML is the example of the control layer's design brief.
const briefYAML = `
token:
  ttl: 24h
  keys:                      # first key signs; all verify
    - {id: k1, secret: "at-least-16-bytes-secret"}
heartbeat: 60s
apps:
  - id: demo
    secret: demo-app-secret        # the device proves possession (see sign below)
    push_key: demo-push-key        # businesses push with Authorization: Bearer <push_key>
endpoints:                          # the gateway access points, in preference order
  - {protocol: tcp, addr: 127.0.0.1:7000}
`

func TestParseConfig(t *testing.T) {
	c, err := ParseConfig([]byte(briefYAML))
	if err != nil {
		t.Fatal(err)
	}
	if c.Token.TTL != 24*time.Hour || c.Heartbeat != 60*time.Second {
		t.Errorf("durations: ttl %v, heartbeat %v", c.Token.TTL, c.Heartbeat)
	}
	if len(c.Token.Keys) != 1 || c.Token.Keys[0] != (Key{"k1", "at-least-16-bytes-secret"}) {
		t.Errorf("keys: %+v", c.Token.Keys)
	}
	if len(c.Apps) != 1 || c.Apps[0] != (App{ID: "demo", Secret: "demo-app-secret", PushKey: "demo-push-key"}) {
		t.Errorf("apps: %+v", c.Apps)
	}
	if len(c.Endpoints) != 1 || c.Endpoints[0] != (Endpoint{Protocol: ProtoTCP, Addr: "127.0.0.1:7000"}) {
		t.Errorf("endpoints: %+v", c.Endpoints)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`
token: {keys: [{id: k1, secret: "0123456789abcdef"}]}
apps: [{id: a, secret: s, push_key: p}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Token.TTL != DefaultTokenTTL || c.Heartbeat != DefaultHeartbeat {
		t.Errorf("defaults not applied: ttl %v, heartbeat %v", c.Token.TTL, c.Heartbeat)
	}
	if len(c.Endpoints) != 0 {
		t.Errorf("endpoints: %+v", c.Endpoints)
	}
}

func TestExampleConfig(t *testing.T) {
	path := filepath.Join("..", "deploy", "pushwire.example.yaml")
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Apps) == 0 || len(c.Endpoints) == 0 || len(c.Token.Keys) < 2 {
		t.Fatalf("example config is thin: %+v", c)
	}
	if _, err := NewServer(c); err != nil {
		t.Fatalf("NewServer(example): %v", err)
	}
	if _, err := c.Verifier(); err != nil {
		t.Fatalf("Verifier(example): %v", err)
	}
	if b := c.Businesses[1]; b.Timeout != 5*time.Second || !b.AllowJoin || b.PoolSize != 16 || c.Businesses[2].SlowConsumer != "drop" {
		t.Fatalf("example businesses: %+v", c.Businesses)
	}
	if c.Endpoints[0].Health == "" {
		t.Fatal("example endpoints lack a health URL")
	}
}

func TestBusinessErrorsNameTheSetting(t *testing.T) {
	base := "token:\n  keys: [{id: k1, secret: \"0123456789abcdef0123\"}]\napps: [{id: a, secret: s, push_key: p}]\n"
	cases := []struct{ yaml, want string }{
		{"businesses:\n  3:\n    backend_url: \"not a url\"\n", "biz 3"},
		{"businesses:\n  3:\n    backend_url: \"http://x/\"\n    slow_consumer: maybe\n", "slow_consumer"},
		{"businesses:\n  3:\n    backend_url: \"http://x/\"\n    pool_sise: 3\n", "pool_sise"},
	}
	for _, tc := range cases {
		_, err := ParseConfig([]byte(base + tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error naming %q", tc.yaml, err, tc.want)
		}
	}
}

func TestLoadConfigErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadConfig(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(strings.Replace(briefYAML, "push_key:", "pushkey:", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadConfig(bad)
	if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), bad) ||
		!strings.Contains(err.Error(), "apps[].pushkey: unknown setting") {
		t.Errorf("bad file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, make([]byte, MaxConfigSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(big); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("big file: %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	const keys = "token: {keys: [{id: k1, secret: \"0123456789abcdef\"}]}\n"
	const apps = "apps: [{id: a, secret: s, push_key: p}]\n"
	tests := []struct {
		name string
		yaml string
		want []string // substrings of the error, each naming a setting
	}{
		{"misspelt top-level", keys + apps + "heartbeet: 60s\n", []string{"heartbeet: unknown setting (line 3)"}},
		{"misspelt token", "token: {ttl: 1h, key: []}\n" + apps, []string{"token.key: unknown setting"}},
		{"misspelt key", "token: {keys: [{id: k1, secrit: x}]}\n" + apps, []string{"token.keys[].secrit: unknown setting"}},
		{"misspelt app", keys + "apps: [{id: a, secret: s, push_key: p, disable: true}]\n", []string{"apps[].disable: unknown setting"}},
		{"misspelt endpoint", keys + apps + "endpoints: [{proto: tcp, addr: h:1}]\n", []string{"endpoints[].proto: unknown setting"}},
		{"wrong type", keys + "apps: {id: a}\n", []string{"line 2: cannot unmarshal"}},
		{"syntax", keys + apps + "heartbeat: [\n", []string{"yaml:"}},
		{"two documents", keys + apps + "---\n" + keys, []string{"more than one YAML document"}},
		{"bad duration", keys + apps + "heartbeat: 6os\n", []string{`heartbeat: "6os" is not a duration`}},
		{"duration without unit", keys + apps + "heartbeat: 60\n", []string{`heartbeat: "60" is not a duration`}},
		{"bad ttl", "token: {ttl: soon, keys: [{id: k1, secret: \"0123456789abcdef\"}]}\n" + apps, []string{`token.ttl: "soon" is not a duration`}},
		{"negative ttl", "token: {ttl: -1h, keys: [{id: k1, secret: \"0123456789abcdef\"}]}\n" + apps, []string{"token.ttl: -1h0m0s: must be at least 1s"}},
		{"fractional heartbeat", keys + apps + "heartbeat: 1500ms\n", []string{"heartbeat: 1.5s: must be a whole number of seconds"}},
		{"tiny heartbeat", keys + apps + "heartbeat: 10ms\n", []string{"heartbeat: 10ms: must be at least 1s"}},
		{"no keys", apps, []string{"token.keys: empty"}},
		{"short secret", "token: {keys: [{id: k1, secret: short}]}\n" + apps, []string{"token.keys[0].secret: 5 bytes, want at least 16"}},
		{"empty key id", "token: {keys: [{secret: \"0123456789abcdef\"}]}\n" + apps, []string{"token.keys[0].id: empty"}},
		{"bad key id", "token: {keys: [{id: k.1, secret: \"0123456789abcdef\"}]}\n" + apps, []string{`token.keys[0].id: "k.1"`}},
		{"duplicate key id", "token: {keys: [{id: k1, secret: \"0123456789abcdef\"}, {id: k1, secret: \"0123456789abcdefg\"}]}\n" + apps,
			[]string{`token.keys[1].id: duplicate "k1" (also token.keys[0])`}},
		{"no apps", keys, []string{"apps: empty"}},
		{"empty push key", keys + "apps: [{id: a, secret: s, push_key: p}, {id: b, secret: s}]\n", []string{"apps[1].push_key: empty"}},
		{"empty app secret", keys + "apps: [{id: a, push_key: p}]\n", []string{"apps[0].secret: empty"}},
		{"empty app id", keys + "apps: [{secret: s, push_key: p}]\n", []string{"apps[0].id: empty"}},
		{"bad app id", keys + "apps: [{id: 'a b', secret: s, push_key: p}]\n", []string{`apps[0].id: "a b"`}},
		{"long app id", keys + "apps: [{id: " + strings.Repeat("a", 65) + ", secret: s, push_key: p}]\n", []string{"apps[0].id:"}},
		{"duplicate app id", keys + "apps: [{id: a, secret: s, push_key: p}, {id: a, secret: s, push_key: q}]\n",
			[]string{`apps[1].id: duplicate "a" (also apps[0])`}},
		{"duplicate push key", keys + "apps: [{id: a, secret: s, push_key: p}, {id: b, secret: s, push_key: p}]\n",
			[]string{"apps[1].push_key: same as apps[0].push_key"}},
		{"bad protocol", keys + apps + "endpoints: [{protocol: http, addr: 'h:1'}]\n", []string{`endpoints[0].protocol: "http"`}},
		{"empty protocol", keys + apps + "endpoints: [{addr: 'h:1'}]\n", []string{"endpoints[0].protocol: empty"}},
		{"empty addr", keys + apps + "endpoints: [{protocol: tcp}]\n", []string{"endpoints[0].addr: empty"}},
		{"addr without port", keys + apps + "endpoints: [{protocol: tcp, addr: host}]\n", []string{`endpoints[0].addr: "host"`}},
		{"addr without host", keys + apps + "endpoints: [{protocol: tcp, addr: ':7000'}]\n", []string{`endpoints[0].addr: ":7000"`}},
		{"addr bad port", keys + apps + "endpoints: [{protocol: tcp, addr: 'h:70000'}]\n", []string{`endpoints[0].addr: "h:70000"`}},
		{"duplicate endpoint", keys + apps + "endpoints: [{protocol: tcp, addr: 'h:1'}, {protocol: tcp, addr: 'h:1'}]\n",
			[]string{"endpoints[1]: same as endpoints[0]"}},
		{"every problem at once", "heartbeat: -1s\napps: [{id: a}]\nendpoints: [{protocol: udp, addr: x}]\n",
			[]string{"heartbeat:", "token.keys: empty", "apps[0].secret: empty", "apps[0].push_key: empty",
				"endpoints[0].protocol:", "endpoints[0].addr:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ParseConfig([]byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error; config %+v", c)
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

func TestConfigErrorAs(t *testing.T) {
	_, err := ParseConfig([]byte("token: {keys: [{id: k1, secret: \"0123456789abcdef\"}]}\napps: [{id: a, secret: s}]\n"))
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Setting != "apps[0].push_key" || ce.Problem != "empty" {
		t.Fatalf("errors.As: %v, %+v", err, ce)
	}
}

func TestZeroConfig(t *testing.T) {
	var c Config
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "token.keys: empty") || !strings.Contains(err.Error(), "apps: empty") {
		t.Fatalf("Validate(zero): %v", err)
	}
	if c.Token.TTL != DefaultTokenTTL || c.Heartbeat != DefaultHeartbeat {
		t.Fatalf("defaults not applied: %+v", c)
	}
	if _, err := NewServer(nil); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("NewServer(nil): %v", err)
	}
	if _, ok := c.App("x"); ok {
		t.Fatal("App on zero config")
	}
	if _, ok := c.AppByPushKey("x"); ok {
		t.Fatal("AppByPushKey on zero config")
	}

	// The smallest working Config, built in Go: everything else defaults.
	min := Config{
		Token: TokenConfig{Keys: []Key{{ID: "k1", Secret: "0123456789abcdef"}}},
		Apps:  []App{{ID: "a", Secret: "s", PushKey: "p"}},
	}
	if err := min.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestAppLookup(t *testing.T) {
	apps := []App{
		{ID: "a", Secret: "sa", PushKey: "push-a"},
		{ID: "b", Secret: "sb", PushKey: "push-b", Disabled: true},
	}
	validated := &Config{Token: TokenConfig{Keys: []Key{{ID: "k1", Secret: "0123456789abcdef"}}}, Apps: apps}
	if err := validated.Validate(); err != nil {
		t.Fatal(err)
	}
	unvalidated := &Config{Apps: apps} // hand-built and never validated: lookups still work
	for name, c := range map[string]*Config{"validated": validated, "unvalidated": unvalidated} {
		t.Run(name, func(t *testing.T) {
			for _, tt := range []struct {
				key, want string
			}{
				{"push-a", "a"}, {"push-b", "b"}, {"push-c", ""}, {"", ""}, {"push-", ""}, {"push-aa", ""}, {"sa", ""},
			} {
				a, ok := c.AppByPushKey(tt.key)
				if ok != (tt.want != "") || ok && a.ID != tt.want {
					t.Errorf("AppByPushKey(%q) = %+v, %v; want %q", tt.key, a, ok, tt.want)
				}
			}
			for _, tt := range []struct {
				id   string
				want bool
			}{{"a", true}, {"b", true}, {"c", false}, {"", false}} {
				a, ok := c.App(tt.id)
				if ok != tt.want || ok && a.ID != tt.id {
					t.Errorf("App(%q) = %+v, %v", tt.id, a, ok)
				}
			}
			if a, _ := c.App("b"); !a.Disabled {
				t.Errorf("App(b) lost Disabled")
			}
		})
	}
}

func TestConfigVerifier(t *testing.T) {
	c, err := ParseConfig([]byte(`
token:
  keys:
    - {id: new, secret: "new-secret-0123456789"}
    - {id: old, secret: "old-secret-0123456789"}
apps: [{id: a, secret: s, push_key: p}]
`))
	if err != nil {
		t.Fatal(err)
	}
	v, err := c.Verifier()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1767225600, 0)
	for _, k := range []token.Key{{ID: "new", Secret: []byte("new-secret-0123456789")}, {ID: "old", Secret: []byte("old-secret-0123456789")}} {
		s, _ := token.NewSigner(k)
		tok, _ := s.Sign(token.Claims{App: "a", Device: "d", IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
		if _, err := v.Verify(tok, now); err != nil {
			t.Errorf("key %s: %v", k.ID, err)
		}
	}
	s, err := c.signer()
	if err != nil || s.KeyID() != "new" {
		t.Fatalf("signer: %v, %v; want the first key", s, err)
	}
}

// TestSign pins the connect proof; the values were computed with
// printf 'demo\ndev-1\nalice\n1767225600' | openssl dgst -sha256 -hmac demo-app-secret.
func TestSign(t *testing.T) {
	for _, tt := range []struct{ user, want string }{
		{"alice", "aa7de3f2fa5d938a5278aea283961ae52dd1250913b1e0eb60c4e39d431ce3d5"},
		{"", "dc54ebe9ba0da36557b1535a6c13cb3a7beac128eea13d02e412648fd1af4f11"},
	} {
		if got := Sign("demo-app-secret", "demo", "dev-1", tt.user, 1767225600); got != tt.want {
			t.Errorf("Sign(user %q) = %s, want %s", tt.user, got, tt.want)
		}
	}
}
