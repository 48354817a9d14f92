package main

// The cluster, end to end: three gateway processes of the real binary, control and a real
// redis-server, with clients of the Go SDK connecting through control. Pushes of every kind sent to
// each instance must reach every target on every instance exactly once; Redis restarted under load
// and a gateway killed with SIGKILL must lose nothing silently.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/client"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/internal/redisproc"
)

// deployCluster starts three std gateways on Redis (redisAddr, or one Deploy starts), control
// dispatching from the registry, and the demo backend (groups may be joined on biz 1).
func deployCluster(t *testing.T, mode, redisAddr string, gatewayArgs ...string) *bench.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	d, err := bench.Deploy(ctx, bench.DeployConfig{
		Binary:      testBinary,
		Engine:      "std",
		Instances:   3,
		Heartbeat:   2 * time.Second,
		Backend:     true,
		Route:       bench.RouteRedis,
		Mode:        mode,
		RedisAddr:   redisAddr,
		GatewayArgs: append([]string{"--instance-ttl=2s"}, gatewayArgs...),
		LogDir:      t.TempDir(),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	// Control hands out only registered gateways: wait until all three are.
	eventually(t, 15*time.Second, "three gateways registered", func() bool {
		var out struct {
			Instances []struct {
				ID string `json:"id"`
			} `json:"instances"`
		}
		getJSON(t, d.ControlAdmin+"/v1/instances", &out)
		return len(out.Instances) == 3
	})
	return d
}

// member is an SDK client that stays connected (Run: it reconnects through control) and counts
// each push it gets by message ID.
type member struct {
	*client.Client
	device string
	mu     sync.Mutex
	got    map[string]int
}

func newMember(t *testing.T, d *bench.Deployment, device, user string) *member {
	t.Helper()
	m := &member{device: device, got: map[string]int{}}
	c, err := client.New(client.Config{
		ControlURL: d.ControlURL, App: d.App, Secret: d.Secret, Device: device, User: user,
		BackoffMin: 100 * time.Millisecond, BackoffMax: time.Second,
		OnPush: func(p client.Push) {
			m.mu.Lock()
			m.got[p.ID]++
			m.mu.Unlock()
		},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	m.Client = c
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Connect(ctx); err != nil {
		t.Fatalf("connect %s: %v", device, err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(runCtx) }()
	t.Cleanup(func() { stop(); _ = c.Close(); <-done })
	return m
}

func (m *member) count(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.got[id]
}

// pushAnswer is POST /v1/push's answer.
type pushAnswer struct {
	ID        string `json:"id"`
	Targets   int    `json:"targets"`
	Delivered int    `json:"delivered"`
	Forwarded int    `json:"forwarded"`
	Offline   int    `json:"offline"`
	Failed    int    `json:"failed"`
	Pending   int    `json:"pending"`
	Remote    *struct {
		Instances int `json:"instances"`
		Reported  int `json:"reported"`
		Delivered int `json:"delivered"`
		Offline   int `json:"offline"`
		Stale     int `json:"stale"`
		Failed    int `json:"failed"`
	} `json:"remote"`
}

// remoteDelivered is what the other instances reported delivered.
func (a pushAnswer) remoteDelivered() int {
	if a.Remote == nil {
		return 0
	}
	return a.Remote.Delivered
}

func clusterPush(t *testing.T, d *bench.Deployment, base string, body map[string]any) pushAnswer {
	t.Helper()
	status, out := pushTo(t, d, base, body)
	if status != http.StatusOK {
		t.Fatalf("push %v to %s: %d %v", body, base, status, out)
	}
	var a pushAnswer
	remarshal(t, out, &a)
	if a.Targets != a.Delivered+a.Forwarded+a.Offline+a.Failed {
		t.Fatalf("push %v to %s: targets %d ≠ delivered %d + forwarded %d + offline %d + failed %d", body, base,
			a.Targets, a.Delivered, a.Forwarded, a.Offline, a.Failed)
	}
	return a
}

func TestIntegrationCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a redis-server, control and three gateways")
	}
	for _, mode := range []string{"registry", "broadcast"} {
		t.Run(mode, func(t *testing.T) {
			d := deployCluster(t, mode, "")
			// Nine devices: control spreads them over the three gateways, least loaded first. The
			// first three, one per gateway, are one user's devices.
			var ms []*member
			for i := range 9 {
				user := fmt.Sprintf("solo-%d", i)
				if i < 3 {
					user = "shared"
				}
				ms = append(ms, newMember(t, d, fmt.Sprintf("dev-%d", i), user))
			}
			perNode := map[string]int{}
			for _, m := range ms {
				perNode[m.Node()]++
			}
			if len(perNode) != 3 || perNode["gw0"] != 3 || perNode["gw1"] != 3 || perNode["gw2"] != 3 {
				t.Fatalf("devices per gateway %v, want 3 on each of gw0, gw1, gw2", perNode)
			}
			if nodes := []string{ms[0].Node(), ms[1].Node(), ms[2].Node()}; len(slices.Compact(slices.Sorted(slices.Values(nodes)))) != 3 {
				t.Fatalf("the shared user's devices are on %v, want three gateways", nodes)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, m := range ms {
				if r, err := m.Join(ctx, bench.BizEcho, "room"); err != nil || r.Code != frame.CodeOK {
					t.Fatalf("%s joins room: %v %v", m.device, err, r)
				}
			}
			devices := make([]string, len(ms))
			for i, m := range ms {
				devices[i] = m.device
			}
			type sent struct {
				what string
				ans  pushAnswer
				to   []*member
			}
			var all []sent
			for gi, base := range d.GatewayHTTP {
				for _, c := range []struct {
					what string
					body map[string]any
					to   []*member
				}{
					{"devices", map[string]any{"devices": devices}, ms},
					{"user", map[string]any{"users": []string{"shared"}}, ms[:3]},
					{"group", map[string]any{"group": "room"}, ms},
					{"broadcast", map[string]any{"broadcast": true}, ms},
				} {
					body := c.body
					body["biz"] = bench.BizEcho
					body["payload"] = fmt.Sprintf("%s from gw%d", c.what, gi)
					a := clusterPush(t, d, base, body)
					what := fmt.Sprintf("%s push sent to gw%d", c.what, gi)
					if a.Targets != len(c.to) || a.Delivered != len(c.to)/3 || a.Offline != 0 || a.Failed != 0 {
						t.Errorf("%s: answer %+v, want %d targets, %d delivered here, none offline or failed", what, a, len(c.to), len(c.to)/3)
					}
					if a.Remote == nil || a.Remote.Reported != a.Remote.Instances || a.Remote.Delivered != a.Forwarded {
						t.Errorf("%s: remote report %+v with forwarded %d, want every instance reporting all forwarded delivered", what, a.Remote, a.Forwarded)
					}
					all = append(all, sent{what, a, c.to})
				}
			}
			// Every target gets every message exactly once; nobody else gets it.
			for _, s := range all {
				eventually(t, 10*time.Second, s.what+" delivered to every target", func() bool {
					for _, m := range s.to {
						if m.count(s.ans.ID) == 0 {
							return false
						}
					}
					return true
				})
			}
			// A last broadcast from each instance, then no duplicate of anything before it.
			var lasts []string
			for _, base := range d.GatewayHTTP {
				lasts = append(lasts, clusterPush(t, d, base, map[string]any{"biz": bench.BizEcho, "broadcast": true, "payload": "last"}).ID)
			}
			eventually(t, 10*time.Second, "the last broadcasts", func() bool {
				for _, m := range ms {
					for _, id := range lasts {
						if m.count(id) == 0 {
							return false
						}
					}
				}
				return true
			})
			for _, s := range all {
				for _, m := range ms {
					want := 0
					if slices.Contains(s.to, m) {
						want = 1
					}
					if got := m.count(s.ans.ID); got != want {
						t.Errorf("%s: %s got it %d times, want %d", s.what, m.device, got, want)
					}
				}
			}
		})
	}
}

// TestIntegrationClusterFaults restarts Redis under load and kills a gateway with SIGKILL.
func TestIntegrationClusterFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a redis-server, control and three gateways")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rp, err := redisproc.Start(ctx, redisproc.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rp.Stop() })
	// Raw connections below do not ping: a long idle timeout keeps them.
	d := deployCluster(t, "registry", rp.Addr(), "--idle-timeout=5m")
	var ms []*member
	for i := range 6 {
		ms = append(ms, newMember(t, d, fmt.Sprintf("f-%d", i), fmt.Sprintf("fu-%d", i)))
	}
	byNode := func(m *member) int { return int(m.Node()[len("gw")] - '0') }

	t.Run("redis restarted under load", func(t *testing.T) {
		// Pushes to every device through every gateway, paced, while Redis restarts.
		type result struct {
			ans   pushAnswer
			m     *member
			gi    int  // the gateway it was sent through
			local bool // sent through the gateway that holds the device
			at    time.Time
		}
		var (
			mu   sync.Mutex
			res  []result
			stop = make(chan struct{})
			done = make(chan struct{})
		)
		// One sender per (device, gateway): a slow answer to one (Redis down) holds up no other.
		nodeOf := make([]int, len(ms))
		for i, m := range ms {
			nodeOf[i] = byNode(m)
		}
		var senders sync.WaitGroup
		for i, m := range ms {
			for gi := range d.GatewayHTTP {
				senders.Go(func() {
					tick := time.NewTicker(100 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-stop:
							return
						case <-tick.C:
						}
						a := clusterPush(t, d, d.GatewayHTTP[gi], map[string]any{"biz": bench.BizEcho, "devices": []string{m.device}, "payload": "load"})
						mu.Lock()
						res = append(res, result{a, m, gi, nodeOf[i] == gi, time.Now()})
						mu.Unlock()
					}
				})
			}
		}
		go func() { senders.Wait(); close(done) }()
		count := func(local bool) int {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, r := range res {
				if r.local == local {
					n++
				}
			}
			return n
		}
		eventually(t, 10*time.Second, "pushes before the restart", func() bool { return count(false) >= 50 })
		down := time.Now()
		rp.Kill()
		before := count(true)
		// Local deliveries go on while Redis is down.
		eventually(t, 10*time.Second, "local pushes while Redis is down", func() bool { return count(true) >= before+30 })
		if err := rp.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		up := time.Now()
		// Every instance re-registers and re-asserts its devices: pushes from every gateway to
		// every device are delivered again.
		eventually(t, 20*time.Second, "every push delivered after Redis returned", func() bool {
			mu.Lock()
			defer mu.Unlock()
			seen := map[[2]int]bool{}
			for _, r := range res {
				if r.at.After(up.Add(time.Second)) && r.ans.Delivered+r.ans.remoteDelivered() == 1 {
					seen[[2]int{slices.Index(ms, r.m), r.gi}] = true
				}
			}
			return len(seen) == len(ms)*len(d.GatewayHTTP)
		})
		close(stop)
		<-done
		mu.Lock()
		defer mu.Unlock()
		var localDown, localDownDelivered, failed, offline int
		for _, r := range res {
			offline += r.ans.Offline
			if r.ans.Offline > 0 {
				t.Logf("offline: %s on gw%d, sent through gw%d, %v after Redis went down, %v after it returned: %+v",
					r.m.device, nodeOf[slices.Index(ms, r.m)], r.gi, r.at.Sub(down), r.at.Sub(up), r.ans)
			}
			failed += r.ans.Failed
			if r.local && r.at.After(down) && r.at.Before(up) {
				localDown++
				if r.ans.Delivered == 1 {
					localDownDelivered++
				}
			}
		}
		if offline != 0 {
			t.Errorf("%d online targets reported offline", offline)
		}
		if localDown == 0 || localDownDelivered != localDown {
			t.Errorf("while Redis was down %d of %d pushes to a device of the receiving gateway were delivered, want all", localDownDelivered, localDown)
		}
		// What was reported delivered arrived.
		eventually(t, 10*time.Second, "every push reported delivered arrived", func() bool {
			for _, r := range res {
				if r.ans.Delivered+r.ans.remoteDelivered() == 1 && r.m.count(r.ans.ID) == 0 {
					return false
				}
			}
			return true
		})
		t.Logf("redis restart: %d pushes, %d local while down (all delivered), %d failed (counted), 0 offline", len(res), localDown, failed)
	})

	t.Run("gateway killed", func(t *testing.T) {
		// A raw device on gw1 gets an at-least-once push through gw0 and does not acknowledge it.
		raw := loginRaw(t, d, d.GatewayAddrs[1], "raw-ack")
		// The store settled since the restart (a miss is offline, not unknown) and gw1 wrote the login.
		eventually(t, 10*time.Second, "the store settled", func() bool {
			return clusterPush(t, d, d.GatewayHTTP[0], map[string]any{"biz": bench.BizEcho, "devices": []string{"nobody"}, "payload": "probe"}).Offline == 1
		})
		eventually(t, 5*time.Second, "gw1 wrote the login", func() bool { return metric(t, d.GatewayHTTP[1], "pushwire_route_queue") == 0 })
		a := clusterPush(t, d, d.GatewayHTTP[0], map[string]any{"biz": bench.BizEcho, "devices": []string{"raw-ack"}, "payload": "keep me", "ack": true})
		if a.Forwarded != 1 || a.remoteDelivered() != 1 {
			t.Fatalf("ack push through gw0 to a device on gw1: %+v", a)
		}
		f := raw.next(5 * time.Second)
		if f.Type != frame.TypePush || f.Flags&frame.FlagAck == 0 || f.Meta.GetString("id") != a.ID {
			t.Fatalf("got %v flags %x id %q, want the ack push %s", f.Type, f.Flags, f.Meta.GetString("id"), a.ID)
		}
		// A raw device on gw1 that will not reconnect.
		_ = loginRaw(t, d, d.GatewayAddrs[1], "dead-dev")
		// The delivering instance records the pending message and the login in Redis before they
		// can be lost.
		eventually(t, 5*time.Second, "the pending message recorded", func() bool {
			return metric(t, d.GatewayHTTP[1], "pushwire_route_ops_total", `op="pending"`, `outcome="ok"`) >= 1 &&
				metric(t, d.GatewayHTTP[1], "pushwire_route_queue") == 0
		})
		var onKilled []*member
		for _, m := range ms {
			if m.Node() == "gw1" {
				onKilled = append(onKilled, m)
			}
		}
		if len(onKilled) == 0 {
			t.Fatal("no SDK device on gw1")
		}
		if err := d.Kill("gateway-1", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		// Its devices reconnect through control to the others (once gw1's registration lapsed).
		eventually(t, 30*time.Second, "gw1's devices reconnected elsewhere", func() bool {
			for _, m := range onKilled {
				if n := m.Node(); n == "gw1" || n == "" {
					return false
				}
			}
			return true
		})
		// Later pushes to them, through any live gateway, arrive.
		for _, gi := range []int{0, 2} {
			for _, m := range onKilled {
				a := clusterPush(t, d, d.GatewayHTTP[gi], map[string]any{"biz": bench.BizEcho, "devices": []string{m.device}, "payload": "after"})
				if a.Delivered+a.remoteDelivered() != 1 {
					t.Errorf("push through gw%d to %s (now on %s) after the kill: %+v", gi, m.device, m.Node(), a)
					continue
				}
				eventually(t, 5*time.Second, "push after the kill", func() bool { return m.count(a.ID) == 1 })
			}
		}
		// The raw device logs in on gw2: the unacknowledged push is delivered there.
		raw2 := loginRaw(t, d, d.GatewayAddrs[2], "raw-ack")
		f = raw2.next(5 * time.Second)
		if f.Type != frame.TypePush || f.Meta.GetString("id") != a.ID || string(f.Body) != "keep me" {
			t.Fatalf("after reconnecting to gw2: got %v id %q body %q, want the pending push %s", f.Type, f.Meta.GetString("id"), f.Body, a.ID)
		}
		// A push to a device whose entry still names the dead instance is counted failed (nobody
		// took the bus message), never offline and never lost silently.
		a = clusterPush(t, d, d.GatewayHTTP[0], map[string]any{"biz": bench.BizEcho, "devices": []string{"dead-dev"}, "payload": "x"})
		if a.Failed != 1 || a.Offline != 0 || a.Delivered+a.Forwarded != 0 {
			t.Errorf("push to a device last seen on the killed gateway: %+v, want failed 1", a)
		}
		t.Logf("gateway killed: %d SDK devices reconnected to the others, %d later pushes through gw0 and gw2 arrived, "+
			"the unacknowledged push was delivered after the raw device logged in on gw2, a push to a device last seen on gw1 was counted failed",
			len(onKilled), 2*len(onKilled))
		if !strings.Contains(d.Check().Error(), "gateway-1") {
			t.Errorf("the deployment does not report the killed gateway: %v", d.Check())
		}
	})
}

// remarshal converts a decoded JSON object into v.
func remarshal(t *testing.T, in map[string]any, v any) {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}
