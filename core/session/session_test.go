package session

import (
	"fmt"
	"sync"
	"testing"

	"github.com/pushwire/pushwire/core/frame"
)

// TestCheckEveryPair walks every state × frame type pair against the protocol's rules, written
// out independently of the table: only LOGIN before login; REQUEST, PING, PUSH_ACK, JOIN, LEAVE
// when active; PING and PUSH_ACK while draining; NOT_LOGGED_IN for refusals before login and
// BAD_FRAME after.
func TestCheckEveryPair(t *testing.T) {
	allowed := map[State][]frame.Type{
		StateConnected:      {frame.TypeLogin},
		StateAuthenticating: {},
		StateActive:         {frame.TypeRequest, frame.TypePing, frame.TypePushAck, frame.TypeJoin, frame.TypeLeave},
		StateDraining:       {frame.TypePing, frame.TypePushAck},
		StateClosed:         {},
	}
	refusal := map[State]frame.Code{
		StateConnected:      frame.CodeNotLoggedIn,
		StateAuthenticating: frame.CodeNotLoggedIn,
		StateActive:         frame.CodeBadFrame,
		StateDraining:       frame.CodeBadFrame,
		StateClosed:         frame.CodeBadFrame,
	}
	pairs := 0
	for s := State(0); s < NumStates; s++ {
		for ty := frame.Type(0); ty <= 0xFF; ty++ {
			want := refusal[s]
			for _, a := range allowed[s] {
				if a == ty {
					want = frame.CodeOK
				}
			}
			if ty >= frame.NumTypes {
				want = frame.CodeBadFrame
			}
			if got := Check(s, ty); got != want {
				t.Errorf("Check(%v, %v) = %v, want %v", s, ty, got, want)
			}
			pairs++
			if ty == 0xFF {
				break
			}
		}
	}
	if pairs != NumStates*256 {
		t.Fatalf("checked %d pairs", pairs)
	}
	if got := Check(State(99), frame.TypePing); got != frame.CodeBadFrame {
		t.Errorf("unknown state: %v", got)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{
		StateConnected: "CONNECTED", StateAuthenticating: "AUTHENTICATING", StateActive: "ACTIVE",
		StateDraining: "DRAINING", StateClosed: "CLOSED", State(7): "State(7)",
	} {
		if s.String() != want {
			t.Errorf("%d: %q want %q", s, s.String(), want)
		}
	}
}

func TestTransitions(t *testing.T) {
	s := New(&fakeConn{id: 1}, 0)
	if s.State() != StateConnected {
		t.Fatal(s.State())
	}
	if s.Transition(StateActive, StateDraining) {
		t.Fatal("transition from the wrong state")
	}
	if !s.Transition(StateConnected, StateAuthenticating) || !s.Transition(StateAuthenticating, StateActive) {
		t.Fatal("login transitions refused")
	}
	if !s.SetState(StateClosed) {
		t.Fatal("close refused")
	}
	if s.SetState(StateActive) || s.State() != StateClosed {
		t.Fatal("CLOSED is not terminal")
	}
	s.SetCloseCode(frame.CodeIdleTimeout)
	s.SetCloseCode(frame.CodeEvicted)
	if s.CloseCode() != frame.CodeIdleTimeout {
		t.Fatalf("close code %v: the first reason must stick", s.CloseCode())
	}
	if a, b := s.NextPushSeq(), s.NextPushSeq(); b != a+1 {
		t.Fatalf("push seq %d then %d", a, b)
	}
}

type fakeConn struct{ id uint64 }

func (c *fakeConn) ID() uint64         { return c.id }
func (c *fakeConn) Write([]byte) error { return nil }
func (c *fakeConn) Close() error       { return nil }
func (c *fakeConn) RemoteAddr() string { return "test" }

func sess(id uint64, app, device, user string) *Session {
	s := New(&fakeConn{id: id}, 0)
	s.App, s.Device, s.User = app, device, user
	return s
}

func TestTableIndexesAndEviction(t *testing.T) {
	tests := []struct {
		name       string
		maxPerUser int
		add        []*Session
		evicted    []uint64 // IDs evicted by the last Add
		len        int
	}{
		{"one", 2, []*Session{sess(1, "a", "d1", "u")}, nil, 1},
		{"same device replaces", 2, []*Session{sess(1, "a", "d1", "u"), sess(2, "a", "d1", "u")}, []uint64{1}, 2},
		{"same device other app", 2, []*Session{sess(1, "a", "d1", "u"), sess(2, "b", "d1", "u")}, nil, 2},
		{"user limit evicts oldest", 2, []*Session{sess(1, "a", "d1", "u"), sess(2, "a", "d2", "u"), sess(3, "a", "d3", "u")}, []uint64{1}, 3},
		{"no user limit", 0, []*Session{sess(1, "a", "d1", "u"), sess(2, "a", "d2", "u"), sess(3, "a", "d3", "u")}, nil, 3},
		{"no user", 1, []*Session{sess(1, "a", "d1", ""), sess(2, "a", "d2", "")}, nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := NewTable(tt.maxPerUser)
			var ev []*Session
			for _, s := range tt.add {
				ev = tab.Add(s)
			}
			var ids []uint64
			for _, s := range ev {
				ids = append(ids, s.ID())
			}
			if fmt.Sprint(ids) != fmt.Sprint(tt.evicted) {
				t.Fatalf("evicted %v, want %v", ids, tt.evicted)
			}
			if tab.Len() != tt.len {
				t.Fatalf("len %d want %d", tab.Len(), tt.len)
			}
			// The table never answers with an evicted session for the device or user.
			for _, s := range ev {
				tab.Remove(s)
			}
			last := tt.add[len(tt.add)-1]
			if got := tab.ByDevice(last.App, last.Device); got != last {
				t.Fatalf("ByDevice = %v", got)
			}
			if tab.ByConn(last.ID()) != last {
				t.Fatal("ByConn")
			}
			for _, s := range ev {
				if tab.ByConn(s.ID()) != nil {
					t.Fatal("ByConn finds an evicted, removed session")
				}
			}
			found := false
			tab.Range(func(s *Session) bool { found = found || s == last; return true })
			if !found {
				t.Fatal("Range misses the newest session")
			}
			if last.User != "" {
				users := tab.ByUser(nil, last.App, last.User)
				if tt.maxPerUser > 0 && len(users) > tt.maxPerUser {
					t.Fatalf("user has %d sessions over the limit %d", len(users), tt.maxPerUser)
				}
				if users[len(users)-1] != last {
					t.Fatal("newest session not last")
				}
			}
		})
	}
}

func TestRemoveKeepsNewerSession(t *testing.T) {
	tab := NewTable(0)
	old, cur := sess(1, "a", "d", "u"), sess(2, "a", "d", "u")
	tab.Add(old)
	tab.Add(cur)
	if !tab.Remove(old) {
		t.Fatal("old not in table")
	}
	if tab.Remove(old) {
		t.Fatal("removed twice")
	}
	if tab.ByDevice("a", "d") != cur {
		t.Fatal("a late remove of the old connection deleted the newer one")
	}
	if got := tab.ByUser(nil, "a", "u"); len(got) != 1 || got[0] != cur {
		t.Fatalf("user list %v", got)
	}
	tab.Remove(cur)
	if tab.Len() != 0 || tab.ByDevice("a", "d") != nil || len(tab.ByUser(nil, "a", "u")) != 0 {
		t.Fatal("table not empty")
	}
}

func TestTableConcurrent(t *testing.T) {
	tab := NewTable(3)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				s := sess(uint64(g*1000+i+1), "a", fmt.Sprintf("d%d", i%50), fmt.Sprintf("u%d", i%7))
				for _, old := range tab.Add(s) {
					tab.Remove(old) // as the gateway does when it closes an evicted session
				}
				if i%2 == 0 {
					tab.Remove(s)
				}
				tab.ByUser(nil, "a", "u1")
			}
		}()
	}
	wg.Wait()
	n := 0
	tab.Range(func(*Session) bool { n++; return true })
	if n != tab.Len() {
		t.Fatalf("Range saw %d, Len %d", n, tab.Len())
	}
}
