package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/pushwire/pushwire/control"
	"github.com/pushwire/pushwire/route"
)

// gatewayRouteFlags are the gateway's route-layer flags; each overrides the config file's
// `route:` section.
type gatewayRouteFlags struct {
	store, redis, mode *string
	advertise          *listFlag
	advertiseHTTP      *string
	ttl, remoteTimeout *time.Duration
	linger             *time.Duration
}

func addGatewayRouteFlags(fs *flag.FlagSet) *gatewayRouteFlags {
	adv := &listFlag{}
	fs.Var(adv, "advertise", "an access point clients are handed in the instance registry, protocol://host:port (repeatable, "+
		"or comma-separated; one per listener; default each listener's address, e.g. tcp://<--listen>; required for a listener "+
		"that binds every interface or port 0 with --route redis)")
	return &gatewayRouteFlags{
		advertise:     adv,
		store:         fs.String("route", "", "route store: memory (one instance, the default) or redis (a cluster); overrides route.store"),
		redis:         fs.String("redis", "", "Redis addresses, comma-separated (one: a single server; several: a cluster); overrides route.redis.addrs"),
		mode:          fs.String("route-mode", "", "cluster delivery mode: registry (look up the holding instances) or broadcast (every instance gets every push); overrides route.mode"),
		advertiseHTTP: fs.String("advertise-http", "", "this instance's push API base URL in the registry (default http://<--http>)"),
		ttl:           fs.Duration("instance-ttl", 0, "registration TTL in the instance registry; re-registered every third of it (default route.instance_ttl, 10s)"),
		remoteTimeout: fs.Duration("remote-timeout", 2*time.Second, "how long a push waits for the other instances' delivery reports"),
		linger:        fs.Duration("linger", 0, "how long a disconnected device's groups and unacknowledged pushes are kept for its next login (default --ack-ttl)"),
	}
}

// gatewayRoute is the route layer a gateway runs with.
type gatewayRoute struct {
	cfg       control.RouteConfig
	endpoints []route.Endpoint
	httpURL   string
}

// resolve merges the flags over the config file's route section and works out what the instance
// advertises: one endpoint per listener, from --advertise or else the listener's address.
// httpAddr is the push API's address.
func (f *gatewayRouteFlags) resolve(file control.RouteConfig, listeners []listenerSpec, httpAddr string) (gatewayRoute, error) {
	rc := file
	if *f.store != "" {
		rc.Store = *f.store
	}
	if *f.redis != "" {
		rc.Redis.Addrs = splitList(*f.redis)
	}
	if *f.mode != "" {
		rc.Mode = *f.mode
	}
	if *f.ttl != 0 {
		rc.InstanceTTL = *f.ttl
	}
	if err := rc.Validate(); err != nil {
		return gatewayRoute{}, fmt.Errorf("gateway: route (--route, --redis, --route-mode, --instance-ttl or the config file): %w", err)
	}
	g := gatewayRoute{cfg: rc}
	given := map[string]route.Endpoint{}
	for _, adv := range f.advertise.values {
		ep, err := parseAdvertise(adv)
		if err != nil {
			return g, fmt.Errorf("gateway: --advertise %q: %w", adv, err)
		}
		if !slices.ContainsFunc(listeners, func(l listenerSpec) bool { return l.transport == ep.Protocol }) {
			return g, fmt.Errorf("gateway: --advertise %q: no %s listener (%s)", adv, ep.Protocol, listenFlag(ep.Protocol))
		}
		if _, dup := given[ep.Protocol]; dup {
			return g, fmt.Errorf("gateway: --advertise %q: %s is advertised twice (one endpoint per listener)", adv, ep.Protocol)
		}
		given[ep.Protocol] = ep
	}
	for _, l := range listeners {
		if ep, ok := given[l.transport]; ok {
			g.endpoints = append(g.endpoints, ep)
			continue
		}
		if rc.Store == control.RouteRedis {
			if unspecified(l.addr) {
				return g, fmt.Errorf("gateway: --advertise %s://host:port is required with --route redis when %s %s binds every interface", l.transport, l.flag(), l.addr)
			}
			if _, port, _ := net.SplitHostPort(l.addr); port == "0" {
				return g, fmt.Errorf("gateway: --advertise %s://host:port is required with --route redis when %s %s has port 0", l.transport, l.flag(), l.addr)
			}
		}
		adv := l.transport + "://" + l.addr
		ep, err := parseAdvertise(adv)
		if err != nil {
			return g, fmt.Errorf("gateway: %s %s (advertised as %s unless --advertise says otherwise): %w", l.flag(), l.addr, adv, err)
		}
		g.endpoints = append(g.endpoints, ep)
	}
	g.httpURL = *f.advertiseHTTP
	if g.httpURL == "" {
		if unspecified(httpAddr) && rc.Store == control.RouteRedis {
			return g, fmt.Errorf("gateway: --advertise-http is required with --route redis when --http %s binds every interface", httpAddr)
		}
		g.httpURL = "http://" + httpAddr
	}
	if u, err := url.Parse(g.httpURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return g, fmt.Errorf("gateway: --advertise-http %q: want http://host:port", g.httpURL)
	}
	return g, nil
}

// open connects the route store and checks that it answers.
func (g gatewayRoute) open(ctx context.Context, log *slog.Logger) (route.Store, error) {
	st, err := openRouteStore(ctx, g.cfg, log)
	if err != nil {
		return nil, fmt.Errorf("gateway: route store %s: %w", g.cfg.Store, err)
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		_ = st.Close()
		return nil, fmt.Errorf("gateway: route store %s (%s) does not answer: %w", g.cfg.Store, strings.Join(g.cfg.Redis.Addrs, ","), err)
	}
	return st, nil
}

// parseAdvertise reads protocol://host:port.
func parseAdvertise(s string) (route.Endpoint, error) {
	proto, addr, ok := strings.Cut(s, "://")
	if !ok {
		return route.Endpoint{}, fmt.Errorf("want protocol://host:port")
	}
	switch proto {
	case control.ProtoTCP, control.ProtoTLS, control.ProtoWS, control.ProtoWSS, control.ProtoQUIC:
	default:
		return route.Endpoint{}, fmt.Errorf("unknown protocol %q", proto)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return route.Endpoint{}, fmt.Errorf("want protocol://host:port")
	}
	if unspecified(addr) {
		return route.Endpoint{}, fmt.Errorf("%s binds every interface: advertise an address clients can dial", addr)
	}
	return route.Endpoint{Protocol: proto, Addr: addr}, nil
}

// unspecified reports whether addr's host is empty or an any-address (0.0.0.0, ::).
func unspecified(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// listFlag collects a repeatable flag's values; each may also be a comma-separated list.
type listFlag struct{ values []string }

func (f *listFlag) String() string {
	if f == nil {
		return ""
	}
	return strings.Join(f.values, ",")
}

func (f *listFlag) Set(s string) error {
	vs := splitList(s)
	if len(vs) == 0 {
		return fmt.Errorf("empty value")
	}
	f.values = append(f.values, vs...)
	return nil
}
