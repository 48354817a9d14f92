package gateway

import (
	"testing"
	"time"
)

func TestAckStore(t *testing.T) {
	a := newAckStore(3)
	var acked, expired, overflow int
	a.acked = func(k int) { acked += k }
	a.expired = func(k int) { expired += k }
	a.overflow = func(k int) { overflow += k }
	now := time.Now().UnixNano()
	msg := func(id string, exp int64) *message { return &message{id: id, exp: exp} }
	m1, m2 := msg("m1", now+int64(time.Hour)), msg("m2", now+1)
	a.keep("app", "d", m1)
	a.keep("app", "d", m1) // kept once
	a.keep("app", "d", m2)
	a.keep("app", "other", msg("x", now+int64(time.Hour)))
	if got := a.pendingFor("app", "d", now); len(got) != 2 || got[0] != m1 || got[1] != m2 {
		t.Fatalf("pending %v", got)
	}
	if !a.ack("app", "d", []byte("m1")) || a.ack("app", "d", []byte("m1")) || acked != 1 {
		t.Fatal("ack m1 once")
	}
	if n := a.sweep(now + 2); n != 1 || expired != 1 {
		t.Fatalf("sweep dropped %d (expired %d), want m2", n, expired)
	}
	for i := range 5 {
		a.keep("app", "full", msg(string(rune('a'+i)), now+int64(time.Hour)))
	}
	if got := a.pendingFor("app", "full", now); len(got) != 3 || got[0].id != "c" || overflow != 2 {
		t.Fatalf("bounded pending %d first %q overflow %d", len(got), got[0].id, overflow)
	}
	if a.Len() != 4 {
		t.Fatalf("Len %d", a.Len())
	}
}
