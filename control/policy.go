package control

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
)

// PlatformMiniApp is the platform of mini-apps (ConnectRequest.Platform): like browsers, they
// speak WebSocket only.
const PlatformMiniApp = "miniapp"

// DispatchConfig is the `dispatch:` section: which transports a client is offered, in which
// order, and the gray releases.
//
//	dispatch:
//	  rules:                             # first match wins
//	    - platform: [web, miniapp]       # match fields (optional): platform, network, region
//	      transports: [wss, ws]
//	    - platform: [native]
//	      network: [4g, 5g]
//	      transports: [quic, tls, tcp]
//	    - transports: [tcp, tls, quic]   # no match field: every client
//	  gray:                              # each decided stably per device (GrayBucket)
//	    - {transport: quic, percent: 10} # offer quic to 10 % of devices only
//	    - {group: canary, percent: 5}    # 5 % of devices go to the canary instances first
//
// A rule matches a client when each of its match fields lists the client's value (compared
// without regard to case; a client that sent no value matches only rules without that field).
// A client no rule matches gets the default policy (DefaultDispatch), as does every client when
// the section has no rules.
type DispatchConfig struct {
	// Rules are tried in order; the first that matches gives the client's transports.
	Rules []DispatchRule `yaml:"rules"`
	// Gray are the gray releases, each decided per device independently of the others.
	Gray []GrayRelease `yaml:"gray"`
}

// DispatchRule is one rule of the dispatch policy.
type DispatchRule struct {
	// Platform, Network and Region are the client's values the rule applies to (any string);
	// empty: any value.
	Platform []string `yaml:"platform"`
	Network  []string `yaml:"network"`
	Region   []string `yaml:"region"`
	// Transports are offered in this order (ProtoTCP…ProtoQUIC): at least one, each once.
	Transports []string `yaml:"transports"`
}

// GrayRelease is one gray release: a transport offered to Percent % of devices only, or an
// instance group that Percent % of devices are sent to first (and the others last). Exactly one
// of Transport and Group is set.
type GrayRelease struct {
	Transport string `yaml:"transport"`
	Group     string `yaml:"group"`
	// Percent is the share of devices in the release, 0..100.
	Percent int `yaml:"percent"`
}

// key is the gray release's name in GrayBucket.
func (g GrayRelease) key() string {
	if g.Transport != "" {
		return "transport:" + g.Transport
	}
	return "group:" + g.Group
}

// DefaultDispatch is the policy without a `dispatch:` section, and for a client no configured
// rule matches: browsers and mini-apps get WebSocket, every other platform tcp, tls, quic, and
// then WebSocket, which native clients may fall back to.
func DefaultDispatch() []DispatchRule {
	return []DispatchRule{
		{Platform: []string{PlatformWeb, PlatformMiniApp}, Transports: []string{ProtoWS, ProtoWSS}},
		{Transports: []string{ProtoTCP, ProtoTLS, ProtoQUIC, ProtoWS, ProtoWSS}},
	}
}

// GrayBucket is a device's bucket, 0..99, for the gray release named key ("transport:quic",
// "group:canary"): the first 8 bytes of SHA-256(app "\x00" device "\x00" key) as a big-endian
// integer, mod 100. A device is in a release of p percent when its bucket is below p: the same
// device always gets the same answer while the policy stands, and different releases are
// independent.
func GrayBucket(app, device, key string) int {
	h := sha256.New()
	h.Write([]byte(app))
	h.Write([]byte{0})
	h.Write([]byte(device))
	h.Write([]byte{0})
	h.Write([]byte(key))
	var sum [sha256.Size]byte
	return int(binary.BigEndian.Uint64(h.Sum(sum[:0])[:8]) % 100)
}

func validTransport(p string) bool {
	switch p {
	case ProtoTCP, ProtoTLS, ProtoWS, ProtoWSS, ProtoQUIC:
		return true
	}
	return false
}

// check validates the section; errors name the setting ("dispatch.rules[2].transports[0]").
func (d *DispatchConfig) check() []error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, &ConfigError{setting, fmt.Sprintf(format, args...)})
	}
	for i, r := range d.Rules {
		at := fmt.Sprintf("dispatch.rules[%d]", i)
		for _, f := range []struct {
			name   string
			values []string
		}{{"platform", r.Platform}, {"network", r.Network}, {"region", r.Region}} {
			for j, v := range f.values {
				switch {
				case v == "":
					bad(fmt.Sprintf("%s.%s[%d]", at, f.name, j), "empty")
				case len(v) > MaxInfoLen:
					bad(fmt.Sprintf("%s.%s[%d]", at, f.name, j), "%d bytes, at most %d", len(v), MaxInfoLen)
				}
			}
		}
		if len(r.Transports) == 0 {
			bad(at+".transports", "empty: want at least one of tcp, tls, ws, wss, quic")
		}
		seen := map[string]int{}
		for j, p := range r.Transports {
			tat := fmt.Sprintf("%s.transports[%d]", at, j)
			if !validTransport(p) {
				bad(tat, "%q: want tcp, tls, ws, wss or quic", p)
				continue
			}
			if k, dup := seen[p]; dup {
				bad(tat, "duplicate %q (also transports[%d])", p, k)
				continue
			}
			seen[p] = j
		}
	}
	seen := map[string]int{}
	for i, g := range d.Gray {
		at := fmt.Sprintf("dispatch.gray[%d]", i)
		switch {
		case g.Transport == "" && g.Group == "":
			bad(at, "want transport or group")
		case g.Transport != "" && g.Group != "":
			bad(at, "both transport and group: want one gray release per entry")
		case g.Transport != "" && !validTransport(g.Transport):
			bad(at+".transport", "%q: want tcp, tls, ws, wss or quic", g.Transport)
		case len(g.Group) > MaxInfoLen:
			bad(at+".group", "%d bytes, at most %d", len(g.Group), MaxInfoLen)
		default:
			if j, dup := seen[g.key()]; dup {
				what, name := "transport", g.Transport
				if g.Group != "" {
					what, name = "group", g.Group
				}
				bad(at+"."+what, "duplicate %q (also dispatch.gray[%d])", name, j)
			} else {
				seen[g.key()] = i
			}
		}
		if g.Percent < 0 || g.Percent > 100 {
			bad(at+".percent", "%d: want 0..100", g.Percent)
		}
	}
	return errs
}

func (d *DispatchConfig) clone() DispatchConfig {
	c := DispatchConfig{Gray: slices.Clone(d.Gray)}
	for _, r := range d.Rules {
		c.Rules = append(c.Rules, DispatchRule{
			Platform: slices.Clone(r.Platform), Network: slices.Clone(r.Network),
			Region: slices.Clone(r.Region), Transports: slices.Clone(r.Transports),
		})
	}
	return c
}

// policy is a validated DispatchConfig ready for connects.
type policy struct {
	rules []policyRule // the configured rules, then the default ones
	nConf int          // how many of rules are configured
	gray  []GrayRelease
}

type policyRule struct {
	platform, network, region []string // lowercase
	transports                []string
	desc                      string // "rules[1] (platform native, network 4g|5g)"
}

func newPolicy(d DispatchConfig) *policy {
	p := &policy{nConf: len(d.Rules), gray: slices.Clone(d.Gray)}
	add := func(r DispatchRule, name string) {
		lower := func(vs []string) []string {
			out := make([]string, len(vs))
			for i, v := range vs {
				out[i] = strings.ToLower(v)
			}
			return out
		}
		pr := policyRule{platform: lower(r.Platform), network: lower(r.Network), region: lower(r.Region),
			transports: slices.Clone(r.Transports)}
		var conds []string
		for _, f := range []struct {
			name   string
			values []string
		}{{"platform", r.Platform}, {"network", r.Network}, {"region", r.Region}} {
			if len(f.values) > 0 {
				conds = append(conds, f.name+" "+strings.Join(f.values, "|"))
			}
		}
		pr.desc = name
		if len(conds) > 0 {
			pr.desc += " (" + strings.Join(conds, ", ") + ")"
		}
		p.rules = append(p.rules, pr)
	}
	for i, r := range d.Rules {
		add(r, fmt.Sprintf("rules[%d]", i))
	}
	for _, r := range DefaultDispatch() {
		add(r, "default policy")
	}
	return p
}

func matches(values []string, v string) bool {
	return len(values) == 0 || v != "" && slices.Contains(values, strings.ToLower(v))
}

// verdict is the policy's answer for one client, before looking at the live endpoints.
type verdict struct {
	transports []string // offered, in order (gray-released transports the device is out of removed)
	groups     []groupVerdict
	region     string
	reason     []string // the parts of the reason so far
}

type groupVerdict struct {
	group string
	in    bool
}

// decide applies the rules and the gray releases to one client.
func (p *policy) decide(app, device, platform, network, region string) verdict {
	at := len(p.rules) - 1 // the last default rule matches every client
	for i := range p.rules {
		c := &p.rules[i]
		if matches(c.platform, platform) && matches(c.network, network) && matches(c.region, region) {
			at = i
			break
		}
	}
	r := &p.rules[at]
	v := verdict{region: region}
	head := r.desc + ": " + strings.Join(r.transports, ", ")
	if p.nConf > 0 && at >= p.nConf {
		head = "no rule matches, " + head
	}
	v.reason = append(v.reason, head)
	var out []string // gray-released transports the device is out of
	for _, g := range p.gray {
		if g.Transport != "" && !slices.Contains(r.transports, g.Transport) {
			continue // not offered to this client anyway
		}
		b := GrayBucket(app, device, g.key())
		in := b < g.Percent
		word := "out"
		if in {
			word = "in"
		}
		name := g.Transport
		if g.Group != "" {
			name = "group " + g.Group
			v.groups = append(v.groups, groupVerdict{g.Group, in})
		} else if !in {
			out = append(out, g.Transport)
		}
		v.reason = append(v.reason, "gray "+name+" "+strconv.Itoa(g.Percent)+"%: "+word+" (bucket "+strconv.Itoa(b)+")")
	}
	v.transports = make([]string, 0, len(r.transports))
	for _, t := range r.transports {
		if !slices.Contains(out, t) {
			v.transports = append(v.transports, t)
		}
	}
	return v
}

// groupTier orders instances by the device's group gray releases: 0 for a group it is in, 2 for
// a group it is out of, 1 for any other instance.
func (v *verdict) groupTier(group string) int {
	if group == "" {
		return 1
	}
	for _, g := range v.groups {
		if g.group == group {
			if g.in {
				return 0
			}
			return 2
		}
	}
	return 1
}

// unit is one place endpoints are handed out for: a registered instance, or a configured
// endpoint.
type unit struct {
	load          int64 // -1: not known (after the others, in their given order)
	region, group string
	eps           []Endpoint
	handed        *atomic.Int64 // counts the answers that put this unit first
}

// arrange orders the units' endpoints for a client: the offered transports only; instances in
// the client's region first, then by the device's group gray releases (its groups first, the
// groups it is out of last); then by the rule's transport order; within a transport least loaded
// first (ties and unknown loads in the units' order). It counts the first endpoint's unit as
// handed out, and appends what it saw to the reason.
func (v *verdict) arrange(units []unit) []Endpoint {
	// item is one endpoint to hand out, by its place in units; no pointer, so sorting moves
	// plain words.
	type item struct {
		load               int64
		unit, ep           int32
		region, group, tpt int8
	}
	items := make([]item, 0, 2*len(units))
	inRegion := 0
	var served uint32 // bit t: v.transports[t] is served
	for k := range units {
		u := &units[k]
		var rt int8 = 1
		if v.region != "" && strings.EqualFold(u.region, v.region) {
			rt = 0
		}
		gt := int8(v.groupTier(u.group))
		any := false
		for j, e := range u.eps {
			if t := slices.Index(v.transports, e.Protocol); t >= 0 {
				items = append(items, item{u.load, int32(k), int32(j), rt, gt, int8(t)})
				served |= 1 << t
				any = true
			}
		}
		if any && rt == 0 {
			inRegion++
		}
	}
	slices.SortStableFunc(items, func(a, b item) int {
		if c := cmp.Compare(a.region, b.region); c != 0 {
			return c
		}
		if c := cmp.Compare(a.group, b.group); c != 0 {
			return c
		}
		if c := cmp.Compare(a.tpt, b.tpt); c != 0 {
			return c
		}
		switch la, lb := a.load, b.load; {
		case la < 0 && lb < 0:
			return 0
		case la < 0:
			return 1
		case lb < 0:
			return -1
		default:
			return cmp.Compare(la, lb)
		}
	})
	if len(items) == 0 {
		if len(v.transports) == 0 {
			v.reason = append(v.reason, "no transport left to offer")
		} else {
			v.reason = append(v.reason, "no live endpoint serves "+strings.Join(v.transports, ", "))
		}
		return nil
	}
	eps := make([]Endpoint, len(items))
	for i, it := range items {
		eps[i] = units[it.unit].eps[it.ep]
	}
	var names []string
	for t, name := range v.transports {
		if served&(1<<t) != 0 {
			names = append(names, name)
		}
	}
	v.reason = append(v.reason, "served: "+strings.Join(names, ", "))
	if v.region != "" {
		if inRegion > 0 {
			v.reason = append(v.reason, "region "+v.region+" first")
		} else {
			v.reason = append(v.reason, "region "+v.region+": none there")
		}
	}
	if h := units[items[0].unit].handed; h != nil {
		h.Add(1)
	}
	return eps
}

func (v *verdict) String() string { return strings.Join(v.reason, "; ") }
