package gateway

import (
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
)

// bare is a client outside any node, for the index tests: what the indexes need is its identity,
// its state and its bookkeeping fields.
func bare(id uint64, app, device, user string) *Client {
	c := &Client{conn: &pipe{id: id}, cid: id, app: app, device: device, user: user}
	_, _ = c.transition(session.EventLogin, 0)
	_, _ = c.transition(session.EventTokenOK, 0)
	return c
}

func member(app, device string) *Client { return bare(uint64(len(device)), app, device, "") }

func TestGroupsJoinLeave(t *testing.T) {
	g := newGroups()
	a, b := member("app", "a"), member("app", "b")
	other := member("other", "a")
	if ok, _ := g.Join(a, "room", 0); !ok {
		t.Fatal("a joins")
	}
	if ok, _ := g.Join(a, "room", 0); ok {
		t.Fatal("a joins twice")
	}
	_, _ = g.Join(b, "room", 0)
	_, _ = g.Join(other, "room", 0) // another app's group of the same name
	if got := g.Size("app", "room"); got != 2 {
		t.Fatalf("size %d", got)
	}
	if got := g.Members(nil, "other", "room"); len(got) != 1 || got[0] != other {
		t.Fatalf("other app's members %v", got)
	}
	_, _ = g.Join(a, "lobby", 0)
	if got := a.groupsOf(); !slices.Equal(got, []string{"room", "lobby"}) {
		t.Fatalf("a's groups %v", got)
	}
	if ok, err := g.Join(a, "third", 2); ok || err != errGroupLimit || g.Size("app", "third") != 0 || g.Len() != 3 {
		t.Fatalf("join past the limit: %v %v, size %d, %d groups", ok, err, g.Size("app", "third"), g.Len())
	}
	if !g.Leave(a, "room") || g.Leave(a, "room") {
		t.Fatal("a leaves once")
	}
	if got := g.Members(nil, "app", "room"); len(got) != 1 || got[0] != b {
		t.Fatalf("members after leave %v", got)
	}
	// A closing connection leaves every group; an empty group is forgotten.
	b.close(frame.CodeOK)
	if n := g.LeaveAll(b); n != 1 {
		t.Fatalf("LeaveAll left %d groups", n)
	}
	if ok, _ := g.Join(b, "room", 0); ok || g.Size("app", "room") != 0 {
		t.Fatal("a closed client stays out")
	}
	if b.groupsOf() != nil {
		t.Fatal("a closed client lists groups")
	}
	// A join racing with LeaveAll: LeaveAll ran first, the join is refused.
	c := member("app", "c")
	g.LeaveAll(c)
	if ok, _ := g.Join(c, "room", 0); ok || g.Size("app", "room") != 0 {
		t.Fatal("joined after LeaveAll")
	}
	g.LeaveAll(a)
	g.LeaveAll(other)
	if g.Len() != 0 {
		t.Fatalf("%d groups left", g.Len())
	}
}

// Join, Leave, LeaveAll and Members from many goroutines: every client that did not leave is a
// member exactly once, and nothing of a closed client stays.
func TestGroupsConcurrent(t *testing.T) {
	g := newGroups()
	var wg sync.WaitGroup
	clients := make([]*Client, 400)
	for i := range clients {
		clients[i] = member("app", fmt.Sprint("d", i))
	}
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < len(clients); i += 8 {
				s := clients[i]
				_, _ = g.Join(s, "big", 0)
				_, _ = g.Join(s, fmt.Sprint("small", i%10), 0)
				g.Members(nil, "app", "big")
				if i%4 == 0 {
					s.close(frame.CodeOK)
					g.LeaveAll(s)
				}
			}
		})
	}
	wg.Wait()
	got := g.Members(nil, "app", "big")
	seen := map[*Client]bool{}
	for _, s := range got {
		if seen[s] {
			t.Fatal("a member twice")
		}
		seen[s] = true
	}
	if len(got) != 300 {
		t.Fatalf("%d members, want 300", len(got))
	}
	for i, s := range clients {
		if (i%4 == 0) == seen[s] {
			t.Fatalf("client %d: member=%v", i, seen[s])
		}
	}
}
