package gateway

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/pushwire/pushwire/internal/redisproc"
	"github.com/pushwire/pushwire/route"
	"github.com/pushwire/pushwire/route/redis"
)

// TestClusterPushRedis runs the push matrix of TestClusterPush on a real redis-server (`make
// tools` installs it).
func TestClusterPushRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("short: no redis-server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	proc, err := redisproc.Start(ctx, redisproc.Options{})
	if err != nil { // redisproc.ErrNotFound says how to install it
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proc.Stop() })
	for _, mode := range []string{route.ModeRegistry, route.ModeBroadcast} {
		t.Run(mode, func(t *testing.T) {
			st, err := redis.New(redis.Config{Addrs: []string{proc.Addr()}, Prefix: fmt.Sprintf("t%d", time.Now().UnixNano())})
			if err != nil {
				t.Fatal(err)
			}
			clusterPush(t, newClusterOn(t, 3, mode, st, nil))
		})
	}
}
