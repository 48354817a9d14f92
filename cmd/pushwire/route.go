package main

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pushwire/pushwire/control"
	"github.com/pushwire/pushwire/route"
	"github.com/pushwire/pushwire/route/memory"
	routeredis "github.com/pushwire/pushwire/route/redis"
)

// openRouteStore builds the route store a `route:` section names (validated, defaults applied):
// memory, in this process; or redis, a go-redis UniversalClient over rc.Redis (one address: a
// single server; several: a cluster; with a master name: sentinels). It does not wait for Redis
// to answer: callers Ping when they must.
func openRouteStore(_ context.Context, rc control.RouteConfig, log *slog.Logger) (route.Store, error) {
	switch rc.Store {
	case control.RouteMemory, "":
		return memory.New(), nil
	case control.RouteRedis:
		r := rc.Redis
		st, err := routeredis.New(routeredis.Config{
			Addrs:      r.Addrs,
			MasterName: r.MasterName,
			Username:   r.Username,
			Password:   r.Password,
			DB:         r.DB,
			Prefix:     r.Prefix,
		})
		if err != nil {
			return nil, fmt.Errorf("route.redis: %w", err)
		}
		kind := "single server"
		switch {
		case r.MasterName != "":
			kind = "sentinel"
		case r.Cluster():
			kind = "cluster"
		}
		log.Info("route store", "store", "redis", "kind", kind, "addrs", r.Addrs, "db", r.DB, "prefix", r.Prefix)
		return st, nil
	default:
		return nil, fmt.Errorf("route.store %q: want memory or redis", rc.Store)
	}
}
