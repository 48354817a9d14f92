package main

// Integration tests of the access layer: the demo backend, control and gateways run as real
// processes (bench.Deploy with Backend), clients are the Go SDK or hand-made frames over real
// sockets. Every engine registered is exercised by TestIntegrationAccessEngines.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/client"
	"github.com/pushwire/pushwire/control/token"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
	_ "github.com/pushwire/pushwire/engines/all"
)

func deployAccess(t *testing.T, engine string, instances int, gatewayArgs ...string) *bench.Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := bench.Deploy(ctx, bench.DeployConfig{
		Binary:      testBinary,
		Engine:      engine,
		Instances:   instances,
		Heartbeat:   2 * time.Second,
		Backend:     true,
		GatewayArgs: gatewayArgs,
		LogDir:      t.TempDir(),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	t.Cleanup(func() { _ = d.Stop() })
	return d
}

// getJSON GETs url into v.
func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", url, err)
	}
}

// metric returns the sum of the samples of a metric family whose labels contain every given
// label (name="value") on the gateway's /metrics.
func metric(t *testing.T, base, name string, labels ...string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum += v
		}
	}
	return sum
}

// pushTo calls POST /v1/push on the gateway at base.
func pushTo(t *testing.T, d *bench.Deployment, base string, body any) (int, map[string]any) {
	t.Helper()
	return apiCall(t, http.MethodPost, base+"/v1/push", d.PushKey, body)
}

func apiCall(t *testing.T, method, url, key string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, url, strings.NewReader(string(b)))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s answer: %v", method, url, err)
	}
	return resp.StatusCode, out
}

// loginRaw logs a hand-driven connection in as device with a token minted by the deployment's key.
func loginRaw(t *testing.T, d *bench.Deployment, addr, device string) *rawConn {
	t.Helper()
	c := dialRaw(t, addr)
	tok, err := signer(t, d).Sign(token.Claims{App: d.App, Device: device, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if ack := c.login(tok, device); ack.Type != frame.TypeLoginAck || ack.Code != frame.CodeOK {
		t.Fatalf("login %s: %v %v %q", device, ack.Type, ack.Code, ack.Meta.GetString("msg"))
	}
	return c
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestIntegrationAccess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	d := deployAccess(t, "std", 1, "--write-queue=65536", "--write-timeout=20s")
	gw := d.GatewayHTTP[0]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("requests go to their business", func(t *testing.T) {
		c := newSDKClient(t, d, "req-1")
		r, err := c.Request(ctx, bench.BizEcho, frame.AppendMetaString(nil, "k", "v"), []byte("ping-body"))
		if err != nil || r.Code != frame.CodeOK || string(r.Body) != "ping-body" {
			t.Fatalf("echo: %+v %v", r, err)
		}
		r, err = c.Request(ctx, 99, nil, []byte("x"))
		if err != nil || r.Code != frame.CodeUnknownBiz {
			t.Fatalf("unknown biz: %+v %v", r, err)
		}
		r, err = c.Request(ctx, bench.BizEcho, frame.AppendMetaString(nil, "fail", "1"), []byte("x"))
		if err != nil || r.Code != frame.CodeBackendError {
			t.Fatalf("failing backend: %+v %v", r, err)
		}
	})

	t.Run("a slow business does not delay another", func(t *testing.T) {
		c := newSDKClient(t, d, "req-2")
		// biz 2 answers after 2s with 2 workers and a queue of 2: six requests saturate it.
		slowBiz := `biz="` + strconv.Itoa(bench.BizSlow) + `"`
		arrived := func() float64 {
			return metric(t, gw, "pushwire_forward_submitted_total", slowBiz) + metric(t, gw, "pushwire_forward_busy_total", slowBiz)
		}
		before := arrived()
		codes := make(chan frame.Code, 6)
		for range 6 {
			go func() {
				r, err := c.Request(ctx, bench.BizSlow, nil, []byte("slow"))
				if err != nil {
					codes <- frame.CodeBackendError
					return
				}
				codes <- r.Code
			}()
		}
		// The six are at the gateway: taken into biz 2's queue or refused BUSY.
		eventually(t, 10*time.Second, "six slow requests at the gateway", func() bool { return arrived()-before >= 6 })
		start := time.Now()
		for range 5 {
			r, err := c.Request(ctx, bench.BizEcho, nil, []byte("fast"))
			if err != nil || r.Code != frame.CodeOK {
				t.Fatalf("echo while biz 2 is saturated: %+v %v", r, err)
			}
		}
		if el := time.Since(start); el > time.Second {
			t.Fatalf("5 requests of biz 1 took %v while biz 2 was saturated", el)
		}
		got := map[frame.Code]int{}
		for range 6 {
			got[<-codes]++
		}
		if got[frame.CodeOK] != 4 || got[frame.CodeBusy] != 2 {
			t.Fatalf("biz 2 answers %v, want 4 OK (2 running, 2 queued) and 2 BUSY", got)
		}
	})

	t.Run("notifications carry connect, disconnect and generation", func(t *testing.T) {
		var before struct {
			Notifications struct{ Connect, Disconnect int }
		}
		getJSON(t, d.BackendURL+"/stats", &before)
		c := newSDKClient(t, d, "notify-1")
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "connect and disconnect notified", func() bool {
			var st struct {
				Notifications struct{ Connect, Disconnect int }
				OutOfOrder    int `json:"out_of_order"`
			}
			getJSON(t, d.BackendURL+"/stats", &st)
			return st.Notifications.Connect > before.Notifications.Connect &&
				st.Notifications.Disconnect > before.Notifications.Disconnect && st.OutOfOrder == 0
		})
	})

	t.Run("push modes", func(t *testing.T) {
		a := newSDKClient(t, d, "pm-a")
		b := newSDKClient(t, d, "pm-b")
		// Batch unicast: 10,000 device IDs in one call, two of them online.
		ids := make([]string, 10_000)
		for i := range ids {
			ids[i] = fmt.Sprintf("absent-%d", i)
		}
		ids[17], ids[9_999] = "pm-a", "pm-b"
		status, ans := pushTo(t, d, gw, map[string]any{"biz": bench.BizEcho, "devices": ids, "payload": "batch"})
		if status != 200 || ans["targets"] != 10000.0 || ans["delivered"] != 2.0 || ans["offline"] != 9998.0 {
			t.Fatalf("batch: %d %v", status, ans)
		}
		if p := a.waitPush(t, 5*time.Second); string(p.Payload) != "batch" {
			t.Fatalf("a got %q", p.Payload)
		}
		b.waitPush(t, 5*time.Second)

		// Users: every connection of the user (the SDK client's user is "u-<device>").
		status, ans = pushTo(t, d, gw, map[string]any{"biz": bench.BizEcho, "users": []string{"u-pm-a", "u-nobody"}, "payload": "user"})
		if status != 200 || ans["delivered"] != 1.0 || ans["offline"] != 1.0 {
			t.Fatalf("users: %d %v", status, ans)
		}
		a.waitPush(t, 5*time.Second)

		// Groups: a joins itself; b is added through the API.
		if r, err := a.Join(ctx, bench.BizEcho, "room-1"); err != nil || r.Code != frame.CodeOK {
			t.Fatalf("join: %+v %v", r, err)
		}
		if r, err := a.Join(ctx, bench.BizSlow, "room-1"); err != nil || r.Code != frame.CodeForbidden {
			t.Fatalf("join where the biz forbids it: %+v %v", r, err)
		}
		status, ans = apiCall(t, http.MethodPut, gw+"/v1/groups/room-1/members", d.PushKey, map[string]any{"devices": []string{"pm-b", "ghost"}})
		if status != 200 || ans["changed"] != 1.0 || ans["offline"] != 1.0 || ans["size"] != 2.0 {
			t.Fatalf("PUT members: %d %v", status, ans)
		}
		status, ans = pushTo(t, d, gw, map[string]any{"biz": bench.BizEcho, "group": "room-1", "payload": "room"})
		if status != 200 || ans["targets"] != 2.0 || ans["delivered"] != 2.0 {
			t.Fatalf("group: %d %v", status, ans)
		}
		if p := a.waitPush(t, 5*time.Second); p.Group != "room-1" || string(p.Payload) != "room" {
			t.Fatalf("group push %+v", p)
		}
		b.waitPush(t, 5*time.Second)
		if r, err := a.Leave(ctx, bench.BizEcho, "room-1"); err != nil || r.Code != frame.CodeOK {
			t.Fatalf("leave: %+v %v", r, err)
		}
		if err := b.Close(); err != nil { // a closed connection leaves all its groups
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "group empties", func() bool {
			_, ans := pushTo(t, d, gw, map[string]any{"biz": bench.BizEcho, "group": "room-1", "payload": "none"})
			return ans["targets"] == 0.0
		})

		// Broadcast: every connection of the app.
		status, ans = pushTo(t, d, gw, map[string]any{"biz": bench.BizEcho, "broadcast": true, "payload": "all"})
		if status != 200 || ans["delivered"].(float64) < 1 || ans["targets"] != ans["delivered"] {
			t.Fatalf("broadcast: %d %v", status, ans)
		}
		if p := a.waitPush(t, 5*time.Second); string(p.Payload) != "all" {
			t.Fatalf("broadcast got %q", p.Payload)
		}
	})

	t.Run("at-least-once resends to the next connection", func(t *testing.T) {
		c := loginRaw(t, d, d.GatewayAddrs[0], "ack-1")
		status, ans := pushTo(t, d, gw, map[string]any{"biz": bench.BizEcho, "devices": []string{"ack-1"}, "payload": "important", "ack": true, "ttl_ms": 30000})
		if status != 200 || ans["delivered"] != 1.0 || ans["pending"] != 1.0 {
			t.Fatalf("ack push: %d %v", status, ans)
		}
		f := c.next(5 * time.Second)
		if f.Type != frame.TypePush || f.Flags&frame.FlagAck == 0 || f.Meta.GetString("id") != ans["id"] {
			t.Fatalf("got %v flags %x id %q", f.Type, f.Flags, f.Meta.GetString("id"))
		}
		if err := c.nc.Close(); err != nil { // gone without PUSH_ACK
			t.Fatal(err)
		}
		c2 := loginRaw(t, d, d.GatewayAddrs[0], "ack-1")
		f = c2.next(5 * time.Second)
		if f.Type != frame.TypePush || f.Meta.GetString("id") != ans["id"] || string(f.Body) != "important" {
			t.Fatalf("resend: %v id %q body %q", f.Type, f.Meta.GetString("id"), f.Body)
		}
		c2.send(frame.TypePushAck, f.Biz, 0, frame.AppendMetaString(nil, "id", ans["id"].(string)))
		eventually(t, 5*time.Second, "acked", func() bool { return metric(t, gw, "pushwire_push_pending") == 0 })
		if err := c2.nc.Close(); err != nil {
			t.Fatal(err)
		}
		c3 := loginRaw(t, d, d.GatewayAddrs[0], "ack-1")
		c3.send(frame.TypePing, 0, 9, nil)
		if f := c3.next(5 * time.Second); f.Type != frame.TypePong {
			t.Fatalf("after the ack got %v, want only PONG (no resend)", f.Type)
		}

		// The SDK acks and drops duplicates by message ID.
		s := newSDKClient(t, d, "ack-sdk")
		_, ans = pushTo(t, d, gw, map[string]any{"biz": bench.BizEcho, "devices": []string{"ack-sdk"}, "payload": "once", "ack": true})
		if p := s.waitPush(t, 5*time.Second); p.ID != ans["id"] {
			t.Fatalf("sdk push %+v", p)
		}
		eventually(t, 5*time.Second, "sdk acked", func() bool { return metric(t, gw, "pushwire_push_pending") == 0 })
	})

	t.Run("slow consumer is closed, or its pushes dropped", func(t *testing.T) {
		// One call names the device 100 times: 100 pushes of 60 KB, 6 MB for a peer that reads
		// nothing.
		payload := strings.Repeat("x", 60<<10)
		fill := func(device string, biz int) (failed float64) {
			devices := make([]string, 100)
			for i := range devices {
				devices[i] = device
			}
			for i := 0; i < 50 && failed == 0; i++ {
				_, ans := pushTo(t, d, gw, map[string]any{"biz": biz, "devices": devices, "payload": payload})
				failed = ans["failed"].(float64) + ans["offline"].(float64)
			}
			return failed
		}
		// close policy (biz 1): the connection is closed with SLOW_CONSUMER.
		slow := loginRaw(t, d, d.GatewayAddrs[0], "slow-1")
		_ = slow.nc.(*net.TCPConn).SetReadBuffer(4096)
		before := metric(t, gw, "pushwire_closes_total", `reason="SLOW_CONSUMER"`)
		if fill("slow-1", bench.BizEcho) == 0 {
			t.Fatal("a reader that never reads took every push")
		}
		eventually(t, 5*time.Second, "closed as slow consumer", func() bool {
			return metric(t, gw, "pushwire_closes_total", `reason="SLOW_CONSUMER"`) > before
		})

		// drop policy (biz 3): pushes are dropped and counted; the connection stays.
		drop := loginRaw(t, d, d.GatewayAddrs[0], "slow-2")
		_ = drop.nc.(*net.TCPConn).SetReadBuffer(4096)
		dropped := metric(t, gw, "pushwire_pushes_total", `outcome="dropped"`)
		if fill("slow-2", bench.BizDrop) == 0 {
			t.Fatal("a reader that never reads took every push")
		}
		if metric(t, gw, "pushwire_pushes_total", `outcome="dropped"`) <= dropped {
			t.Fatal("no dropped push counted")
		}
		// It reads again (with room to read fast): everything queued arrives, then a PONG: still
		// connected.
		// The PING goes once the first queued push has arrived: the queue is draining, so the
		// PONG finds room in it.
		_ = drop.nc.(*net.TCPConn).SetReadBuffer(4 << 20)
		pinged := false
		for {
			f := drop.next(10 * time.Second)
			if f.Type == frame.TypePong {
				break
			}
			if f.Type != frame.TypePush {
				t.Fatalf("got %v", f.Type)
			}
			if !pinged {
				drop.send(frame.TypePing, 0, 77, nil)
				pinged = true
			}
		}
		if !pinged {
			t.Fatal("a PONG before any queued push")
		}
	})

	t.Run("rate limit answers RATE_LIMITED", func(t *testing.T) {
		c := loginRaw(t, d, d.GatewayAddrs[0], "flood-1")
		var buf []byte
		for i := range 300 {
			f := frame.Frame{Header: frame.Header{Type: frame.TypeRequest, Biz: bench.BizEcho, Seq: uint32(i + 1)}, Body: []byte("f")}
			buf = frame.Append(buf, &f)
		}
		c.write(buf)
		limited := 0
		for range 300 {
			f := c.next(10 * time.Second)
			if f.Type == frame.TypeResponse && f.Code == frame.CodeRateLimited {
				limited++
			}
		}
		if limited == 0 || limited == 300 {
			t.Fatalf("%d of 300 requests rate limited; want the burst through and the rest limited", limited)
		}
	})
}

// TestIntegrationDrain drains one of two gateways: its clients are told GOAWAY, reconnect through
// control to the other, an in-flight request is still answered, and the drained gateway exits.
func TestIntegrationDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	d := deployAccess(t, "std", 2, "--goaway-retry-ms=5000")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const n = 20
	var goaways atomic.Int64
	clients := make([]*client.Client, n)
	var wg sync.WaitGroup
	for i := range clients {
		c, err := client.New(client.Config{
			ControlURL: d.ControlURL, App: d.App, Secret: d.Secret, Device: fmt.Sprintf("drain-%d", i),
			BackoffMin: 50 * time.Millisecond, BackoffMax: time.Second,
			OnState: func(s client.State, err error) {
				if err != nil && strings.Contains(err.Error(), "shutting down") {
					goaways.Add(1)
				}
			},
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			t.Fatal(err)
		}
		clients[i] = c
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}
	t.Cleanup(func() {
		for _, c := range clients {
			_ = c.Close() // a drained client may have closed already; Run's end is what is waited for
		}
		wg.Wait()
	})
	onNode := func(node string) int {
		k := 0
		for _, c := range clients {
			if c.Node() == node {
				k++
			}
		}
		return k
	}
	eventually(t, 10*time.Second, "all connected", func() bool { return onNode("gw0")+onNode("gw1") == n })
	// Control lists gw0 first, so the clients start there.
	if onNode("gw0") == 0 {
		t.Fatal("no client on gw0")
	}
	// An in-flight request on gw0 (biz 2 answers after 2s) must still be answered.
	var inflight *client.Client
	for _, c := range clients {
		if c.Node() == "gw0" {
			inflight = c
			break
		}
	}
	answered := make(chan *client.Response, 1)
	go func() {
		r, err := inflight.Request(ctx, bench.BizSlow, nil, []byte("during drain"))
		if err != nil {
			t.Errorf("in-flight request: %v", err)
		}
		answered <- r
	}()
	// The drain starts once the request is at gw0's backend.
	eventually(t, 10*time.Second, "the request in flight on gw0", func() bool {
		return metric(t, d.GatewayHTTP[0], "pushwire_forward_in_flight", `biz="`+strconv.Itoa(bench.BizSlow)+`"`) >= 1
	})
	done := make(chan error, 1)
	go func() { done <- d.Terminate("gateway-0", 30*time.Second) }()
	select {
	case r := <-answered:
		if r == nil || r.Code != frame.CodeOK || string(r.Body) != "during drain" {
			t.Fatalf("in-flight request answered %+v", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("in-flight request not answered during the drain")
	}
	if err := <-done; err != nil {
		t.Fatalf("gateway-0 exit: %v", err)
	}
	eventually(t, 15*time.Second, "every client on gw1", func() bool { return onNode("gw1") == n })
	if goaways.Load() == 0 {
		t.Fatal("no client saw GOAWAY SHUTTING_DOWN")
	}
}

// TestIntegrationAccessEngines runs the push modes and upstream requests on every engine.
func TestIntegrationAccessEngines(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	for _, engine := range engines.Names() {
		if !engines.Carries(engine, engines.TransportTCP) {
			continue // quic carries its own transport: it is not a --engine
		}
		t.Run(engine, func(t *testing.T) {
			d := deployAccess(t, engine, 1)
			gw := d.GatewayHTTP[0]
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			a := newSDKClient(t, d, "e-a")
			b := newSDKClient(t, d, "e-b")
			if r, err := a.Request(ctx, bench.BizEcho, nil, []byte("hi")); err != nil || r.Code != frame.CodeOK || string(r.Body) != "hi" {
				t.Fatalf("request: %+v %v", r, err)
			}
			if r, err := b.Join(ctx, bench.BizEcho, "g"); err != nil || r.Code != frame.CodeOK {
				t.Fatalf("join: %+v %v", r, err)
			}
			for _, body := range []map[string]any{
				{"biz": bench.BizEcho, "devices": []string{"e-a"}, "payload": "unicast"},
				{"biz": bench.BizEcho, "group": "g", "payload": "group"},
				{"biz": bench.BizEcho, "broadcast": true, "payload": "broadcast"},
			} {
				status, ans := pushTo(t, d, gw, body)
				if status != 200 || ans["delivered"] != ans["targets"] {
					t.Fatalf("%v: %d %v", body, status, ans)
				}
			}
			if p := a.waitPush(t, 5*time.Second); string(p.Payload) != "unicast" {
				t.Fatalf("a: %q", p.Payload)
			}
			if p := b.waitPush(t, 5*time.Second); string(p.Payload) != "group" {
				t.Fatalf("b: %q", p.Payload)
			}
			a.waitPush(t, 5*time.Second)
			b.waitPush(t, 5*time.Second)
		})
	}
}
