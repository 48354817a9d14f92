package gateway

import (
	"hash/maphash"
	"sync"
	"time"
)

// ackStore keeps at-least-once messages per device until PUSH_ACK or expiry. A device has at most
// max pending messages; past that the oldest is dropped and counted. It is safe for concurrent
// use.
type ackStore struct {
	max    int
	seed   maphash.Seed
	shards [64]ackShard

	acked, expired, overflow func(int) // metric hooks, set by newMetrics
}

type ackShard struct {
	mu sync.Mutex
	m  map[string][]*message // app + "\x00" + device → pending, oldest first
}

func newAckStore(max int) *ackStore {
	a := &ackStore{max: max, seed: maphash.MakeSeed(), acked: func(int) {}, expired: func(int) {}, overflow: func(int) {}}
	for i := range a.shards {
		a.shards[i].m = make(map[string][]*message)
	}
	return a
}

func (a *ackStore) shard(k string) *ackShard { return &a.shards[maphash.String(a.seed, k)%64] }

// keep records msg as pending for the device (once: a resend does not add it again).
func (a *ackStore) keep(app, device string, msg *message) {
	k := key(app, device)
	sh := a.shard(k)
	sh.mu.Lock()
	list := sh.m[k]
	for _, m := range list {
		if m == msg {
			sh.mu.Unlock()
			return
		}
	}
	dropped := 0
	for len(list) >= a.max {
		list[0] = nil
		list = list[1:]
		dropped++
	}
	sh.m[k] = append(list, msg)
	sh.mu.Unlock()
	if dropped > 0 {
		a.overflow(dropped)
	}
}

// ack removes the pending message id of the device. It reports whether it was pending.
func (a *ackStore) ack(app, device string, id []byte) bool {
	k := key(app, device)
	sh := a.shard(k)
	sh.mu.Lock()
	list := sh.m[k]
	found := false
	for i, m := range list {
		if m.id == string(id) {
			list = append(list[:i:i], list[i+1:]...)
			found = true
			break
		}
	}
	if len(list) == 0 {
		delete(sh.m, k)
	} else {
		sh.m[k] = list
	}
	sh.mu.Unlock()
	if found {
		a.acked(1)
	}
	return found
}

// pendingFor returns the device's pending messages that have not expired at now.
func (a *ackStore) pendingFor(app, device string, now int64) []*message {
	k := key(app, device)
	sh := a.shard(k)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var out []*message
	for _, m := range sh.m[k] {
		if m.exp > now {
			out = append(out, m)
		}
	}
	return out
}

// sweep drops every message expired at now and returns how many it dropped.
func (a *ackStore) sweep(now int64) int {
	dropped := 0
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for k, list := range sh.m {
			kept := list[:0]
			for _, m := range list {
				if m.exp > now {
					kept = append(kept, m)
				} else {
					dropped++
				}
			}
			clear(list[len(kept):])
			if len(kept) == 0 {
				delete(sh.m, k)
			} else {
				sh.m[k] = kept
			}
		}
		sh.mu.Unlock()
	}
	if dropped > 0 {
		a.expired(dropped)
	}
	return dropped
}

// Len is the number of pending messages.
func (a *ackStore) Len() int {
	n := 0
	for i := range a.shards {
		sh := &a.shards[i]
		sh.mu.Lock()
		for _, list := range sh.m {
			n += len(list)
		}
		sh.mu.Unlock()
	}
	return n
}

// expireAcks sweeps expired at-least-once messages once a second until Stop.
func (n *Node) expireAcks() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
			n.acks.sweep(n.clock.Now().UnixNano())
		}
	}
}
