package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/pushwire/pushwire/control"
	"github.com/pushwire/pushwire/route"
)

// gatewayRouteFlags are the gateway's route-layer flags; each overrides the config file's
// `route:` section.
type gatewayRouteFlags struct {
	store, redis, mode       *string
	advertise, advertiseHTTP *string
	ttl, remoteTimeout       *time.Duration
	linger                   *time.Duration
}

func addGatewayRouteFlags(fs *flag.FlagSet) *gatewayRouteFlags {
	return &gatewayRouteFlags{
		store: fs.String("route", "", "route store: memory (one instance, the default) or redis (a cluster); overrides route.store"),
		redis: fs.String("redis", "", "Redis addresses, comma-separated (one: a single server; several: a cluster); overrides route.redis.addrs"),
		mode:  fs.String("route-mode", "", "cluster delivery mode: registry (look up the holding instances) or broadcast (every instance gets every push); overrides route.mode"),
		advertise: fs.String("advertise", "", "the access point clients are handed in the instance registry, protocol://host:port "+
			"(default tcp://<--listen>; required when --listen binds every interface)"),
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
// advertises. listen and httpAddr are the bound addresses.
func (f *gatewayRouteFlags) resolve(file control.RouteConfig, listen, httpAddr string) (gatewayRoute, error) {
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
	adv := *f.advertise
	if adv == "" {
		if unspecified(listen) && rc.Store == control.RouteRedis {
			return g, fmt.Errorf("gateway: --advertise is required with --route redis when --listen %s binds every interface", listen)
		}
		adv = "tcp://" + listen
	}
	ep, err := parseAdvertise(adv)
	if err != nil {
		return g, fmt.Errorf("gateway: --advertise %q: %w", adv, err)
	}
	g.endpoints = []route.Endpoint{ep}
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
