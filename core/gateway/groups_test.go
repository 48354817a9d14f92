package session

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

func member(app, device string) *Session {
	s := New(&fakeConn{id: uint64(len(device))}, 0)
	s.App, s.Device = app, device
	s.SetState(StateActive)
	return s
}

func TestGroupsJoinLeave(t *testing.T) {
	g := NewGroups()
	a, b := member("app", "a"), member("app", "b")
	other := member("other", "a")
	if !g.Join(a, "room") || g.Join(a, "room") {
		t.Fatal("a joins once")
	}
	g.Join(b, "room")
	g.Join(other, "room") // another app's group of the same name
	if got := g.Size("app", "room"); got != 2 {
		t.Fatalf("size %d", got)
	}
	if got := g.Members(nil, "other", "room"); len(got) != 1 || got[0] != other {
		t.Fatalf("other app's members %v", got)
	}
	g.Join(a, "lobby")
	if got := a.GroupsOf(); !slices.Equal(got, []string{"room", "lobby"}) {
		t.Fatalf("a's groups %v", got)
	}
	if !g.Leave(a, "room") || g.Leave(a, "room") {
		t.Fatal("a leaves once")
	}
	if got := g.Members(nil, "app", "room"); len(got) != 1 || got[0] != b {
		t.Fatalf("members after leave %v", got)
	}
	// A closing connection leaves every group; an empty group is forgotten.
	b.SetState(StateClosed)
	if n := g.LeaveAll(b); n != 1 {
		t.Fatalf("LeaveAll left %d groups", n)
	}
	if g.Size("app", "room") != 0 || g.Join(b, "room") {
		t.Fatal("a closed session stays out")
	}
	g.LeaveAll(a)
	g.LeaveAll(other)
	if g.Len() != 0 {
		t.Fatalf("%d groups left", g.Len())
	}
}

// Join, Leave, LeaveAll and Members from many goroutines: every session that did not leave is a
// member exactly once, and nothing of a closed session stays.
func TestGroupsConcurrent(t *testing.T) {
	g := NewGroups()
	var wg sync.WaitGroup
	sessions := make([]*Session, 400)
	for i := range sessions {
		sessions[i] = member("app", fmt.Sprint("d", i))
	}
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(sessions); i += 8 {
				s := sessions[i]
				g.Join(s, "big")
				g.Join(s, fmt.Sprint("small", i%10))
				g.Members(nil, "app", "big")
				if i%4 == 0 {
					s.SetState(StateClosed)
					g.LeaveAll(s)
				}
			}
		}()
	}
	wg.Wait()
	got := g.Members(nil, "app", "big")
	seen := map[*Session]bool{}
	for _, s := range got {
		if seen[s] {
			t.Fatal("a member twice")
		}
		seen[s] = true
	}
	if len(got) != 300 {
		t.Fatalf("%d members, want 300", len(got))
	}
	for i, s := range sessions {
		if (i%4 == 0) == seen[s] {
			t.Fatalf("session %d: member=%v", i, seen[s])
		}
	}
}
