package gateway

import (
	"fmt"
	"sync"
	"testing"
)

func TestTableIndexesAndEviction(t *testing.T) {
	tests := []struct {
		name       string
		maxPerUser int
		add        []*Client
		evicted    []uint64 // IDs evicted by the last Add
		len        int
	}{
		{"one", 2, []*Client{bare(1, "a", "d1", "u")}, nil, 1},
		{"same device replaces", 2, []*Client{bare(1, "a", "d1", "u"), bare(2, "a", "d1", "u")}, []uint64{1}, 2},
		{"same device other app", 2, []*Client{bare(1, "a", "d1", "u"), bare(2, "b", "d1", "u")}, nil, 2},
		{"user limit evicts oldest", 2, []*Client{bare(1, "a", "d1", "u"), bare(2, "a", "d2", "u"), bare(3, "a", "d3", "u")}, []uint64{1}, 3},
		{"no user limit", 0, []*Client{bare(1, "a", "d1", "u"), bare(2, "a", "d2", "u"), bare(3, "a", "d3", "u")}, nil, 3},
		{"no user", 1, []*Client{bare(1, "a", "d1", ""), bare(2, "a", "d2", "")}, nil, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab := newTable(tt.maxPerUser)
			var ev []*Client
			for _, s := range tt.add {
				ev = tab.Add(s)
			}
			var ids []uint64
			for _, s := range ev {
				ids = append(ids, s.id())
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
			if got := tab.ByDevice(last.app, last.device); got != last {
				t.Fatalf("ByDevice = %v", got)
			}
			if tab.ByConn(last.id()) != last {
				t.Fatal("ByConn")
			}
			for _, s := range ev {
				if tab.ByConn(s.id()) != nil {
					t.Fatal("ByConn finds an evicted, removed session")
				}
			}
			found := false
			tab.Range(func(s *Client) bool { found = found || s == last; return true })
			if !found {
				t.Fatal("Range misses the newest session")
			}
			if last.user != "" {
				users := tab.ByUser(nil, last.app, last.user)
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
	tab := newTable(0)
	old, cur := bare(1, "a", "d", "u"), bare(2, "a", "d", "u")
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
	tab := newTable(3)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				s := bare(uint64(g*1000+i+1), "a", fmt.Sprintf("d%d", i%50), fmt.Sprintf("u%d", i%7))
				for _, old := range tab.Add(s) {
					tab.Remove(old) // as the gateway does when it closes an evicted session
				}
				if i%2 == 0 {
					tab.Remove(s)
				}
				tab.ByUser(nil, "a", "u1")
			}
		})
	}
	wg.Wait()
	n := 0
	tab.Range(func(*Client) bool { n++; return true })
	if n != tab.Len() {
		t.Fatalf("Range saw %d, Len %d", n, tab.Len())
	}
}
