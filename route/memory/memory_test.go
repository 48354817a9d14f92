package memory_test

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/route"
	"github.com/pushwire/pushwire/route/memory"
	"github.com/pushwire/pushwire/route/routetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clocked is a store on a fake clock the contract suite advances.
type clocked struct {
	*memory.Store
	mu  sync.Mutex
	now time.Time
}

func (c *clocked) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clocked) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func TestContract(t *testing.T) {
	routetest.Run(t, func(t *testing.T) route.Store {
		c := &clocked{now: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)}
		c.Store = memory.New(memory.WithClock(c.Now))
		return c
	})
}

// The suite on the real clock too: the store's default.
func TestContractRealClock(t *testing.T) {
	routetest.Run(t, func(t *testing.T) route.Store { return memory.New() })
}

// Released devices past their linger are swept inline by later writes: nothing accumulates.
func TestSweep(t *testing.T) {
	c := &clocked{now: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	s := memory.New(memory.WithClock(c.Now), memory.WithLinger(time.Minute))
	defer func() { _ = s.Close() }()
	ctx := t.Context()
	batch := func(prefix string, n int) []route.Claim {
		cl := make([]route.Claim, n)
		for i := range cl {
			cl[i] = route.Claim{App: "a", Device: prefix + strconv.Itoa(i), Entry: route.Entry{Instance: "A", Conn: uint64(i), Gen: 1}}
		}
		return cl
	}
	gone := batch("gone-", 1000)
	res, err := s.Claim(ctx, gone)
	if err != nil {
		t.Fatal(err)
	}
	rel := make([]route.Release, len(gone))
	for i, cl := range gone {
		rel[i] = route.Release{App: "a", Device: cl.Device, Entry: route.Entry{Instance: "A", Conn: cl.Entry.Conn, Gen: res[i].Gen}}
	}
	if _, err := s.Release(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if got := s.Devices(); got != 1000 {
		t.Fatalf("Devices %d within the linger, want 1000", got)
	}
	c.Advance(time.Minute)
	// 10,000 devices over 64 shards: each shard holds ~156 of them, and 20 rounds give every
	// shard well over sweepEvery (1024) writes.
	live := batch("live-", 10000)
	for range 20 {
		if _, err := s.Claim(ctx, live); err != nil {
			t.Fatal(err)
		}
	}
	if got := s.Devices(); got != 10000 {
		t.Fatalf("Devices %d after the linger and the sweeps, want the 10000 live ones", got)
	}
}

// A subscriber whose queue is full loses the overflow, counted, and Publish does not block.
func TestBusOverflow(t *testing.T) {
	s := memory.New(memory.WithQueue(2))
	defer func() { _ = s.Close() }()
	ctx, cancel := context.WithCancel(t.Context())
	release := make(chan struct{})
	upc := make(chan bool, 1)
	done := make(chan error, 1)
	got := make(chan string, 16)
	go func() {
		done <- s.Subscribe(ctx, "A", func(b []byte) {
			<-release
			got <- string(b)
		}, func(up bool) { upc <- up })
	}()
	if !<-upc {
		t.Fatal("up(false)")
	}
	// The first message is taken by the blocked deliver, two wait in the queue; once the
	// first is out of the queue the rest can only overflow.
	n, err := s.Publish(ctx, []route.Message{{To: "A", Data: []byte("0")}})
	if err != nil || n[0] != 1 {
		t.Fatal(n, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		// The queue drains the first message into deliver, which blocks: fill the two slots.
		n, err := s.Publish(ctx, []route.Message{{To: "A", Data: []byte("x")}})
		if err != nil {
			t.Fatal(err)
		}
		if n[0] == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the queue never filled")
		}
	}
	if s.Dropped() < 1 {
		t.Fatalf("Dropped %d", s.Dropped())
	}
	close(release)
	if first := <-got; first != "0" {
		t.Fatalf("first delivered %q", first)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
