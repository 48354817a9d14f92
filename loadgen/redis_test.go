package loadgen

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pushwire/pushwire/internal/redisproc"
)

// INFO against a real redis-server: the version, memory, and a command count that grows by what
// was sent between two reads (plus the INFO that read the first).
func TestRedisInfo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rp, err := redisproc.Start(ctx, redisproc.Options{})
	if errors.Is(err, redisproc.ErrNotFound) {
		t.Skip(err) // make tools installs it; CI runs make tools first
	}
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rp.Stop() }()
	info, err := redisInfo(ctx, rp.Addr(), "server")
	if err != nil || info["redis_version"] == "" {
		t.Fatalf("INFO server: %v %v", info["redis_version"], err)
	}
	mem, err := redisInfo(ctx, rp.Addr(), "memory")
	if err != nil || parseUint(mem["used_memory"]) == 0 {
		t.Fatalf("INFO memory: %q %v", mem["used_memory"], err)
	}
	c := &coord{cfg: Config{RedisAddr: rp.Addr()}}
	before, err := c.redisCommands(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", rp.Addr())
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	for range 5 {
		if _, err := conn.Write([]byte("PING\r\n")); err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	}
	_ = conn.Close()
	after, err := c.redisCommands(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := after - before - 1; got != 5 {
		t.Errorf("commands between the reads: %d, want 5", got)
	}
	none := &coord{}
	if n, err := none.redisCommands(ctx); n != -1 || err != nil {
		t.Errorf("without Redis: %d %v", n, err)
	}
	_ = rp.Stop()
	if _, err := redisInfo(ctx, rp.Addr(), "stats"); err == nil || !strings.Contains(err.Error(), rp.Addr()) {
		t.Errorf("stopped server: %v", err)
	}
}
