package floor

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/core/frame"
)

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no listen", Config{Apps: []App{{ID: "a", PushKey: "k"}}}, "Listen"},
		{"no apps", Config{Listen: "127.0.0.1:0"}, "Apps"},
		{"empty key", Config{Listen: "127.0.0.1:0", Apps: []App{{ID: "a"}}}, "Apps[0] (a): push key"},
		{"shared key", Config{Listen: "127.0.0.1:0", Apps: []App{{ID: "a", PushKey: "k"}, {ID: "b", PushKey: "k"}}}, "Apps[1] (b)"},
		{"max body", Config{Listen: "127.0.0.1:0", Apps: []App{{ID: "a", PushKey: "k"}}, MaxBody: frame.MaxBodyLimit + 1}, "MaxBody"},
		{"loops", Config{Listen: "127.0.0.1:0", Apps: []App{{ID: "a", PushKey: "k"}}, Loops: -1}, "Loops"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
	s, err := New(Config{Listen: "127.0.0.1:notaport", Apps: []App{{ID: "a", PushKey: "k"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err == nil || !strings.Contains(err.Error(), "Listen") {
		t.Fatalf("Start with a bad address: %v", err)
	}
}

func TestLoginPingRequest(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Heartbeat = 25 * time.Second })
	c := dial(t, ts.addr)
	ack := c.login("dev-a")
	if got := ack.Meta.GetString("hb"); got != "25" {
		t.Errorf("hb %q, want 25", got)
	}
	if got := ack.Meta.GetString("node"); got != "fl1" {
		t.Errorf("node %q, want fl1", got)
	}
	if _, err := strconv.ParseUint(ack.Meta.GetString("conn"), 10, 64); err != nil {
		t.Errorf("conn %q: %v", ack.Meta.GetString("conn"), err)
	}
	c.send(frame.Header{Type: frame.TypePing, Seq: 7}, nil)
	if f := c.next(); f.Type != frame.TypePong || f.Seq != 7 {
		t.Fatalf("got %s seq %d, want PONG seq 7", f.Type, f.Seq)
	}
	c.send(frame.Header{Type: frame.TypeRequest, Biz: 1, Seq: 9}, nil)
	f := c.next()
	if f.Type != frame.TypeResponse || f.Code != frame.CodeUnknownBiz || f.Seq != 9 || f.Biz != 1 {
		t.Fatalf("REQUEST: got %s code %s seq %d biz %d", f.Type, f.Code, f.Seq, f.Biz)
	}
	// Several frames in one write are answered in order, in one write.
	var b []byte
	for i := range 3 {
		b = frame.Append(b, &frame.Frame{Header: frame.Header{Type: frame.TypePing, Seq: uint32(100 + i)}})
	}
	c.write(b)
	for i := range 3 {
		if f := c.next(); f.Type != frame.TypePong || f.Seq != uint32(100+i) {
			t.Fatalf("got %s seq %d, want PONG %d", f.Type, f.Seq, 100+i)
		}
	}
	waitFor(t, "one session", func() bool { return ts.s.Stats(false).Sessions == 1 })
}

func TestLoginRefused(t *testing.T) {
	ts := startServer(t, nil)
	for _, tc := range []struct {
		name string
		meta frame.Meta
		want string
	}{
		{"no token", frame.AppendMetaString(nil, "device", "d"), "token"},
		{"no device", frame.AppendMetaString(nil, "token", "t"), "device"},
		{"unknown app", frame.AppendMetaString(frame.AppendMetaString(frame.AppendMetaString(nil, "token", "t"), "device", "d"), "app", "nope"), "app"},
		// Two apps are configured: a LOGIN must name one.
		{"no app", frame.AppendMetaString(frame.AppendMetaString(nil, "token", "t"), "device", "d"), "app"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, ts.addr)
			c.send(frame.Header{Type: frame.TypeLogin, Seq: 1}, tc.meta)
			f := c.next()
			if f.Type != frame.TypeLoginAck || f.Code != frame.CodeAuthFailed || !strings.Contains(f.Meta.GetString("msg"), tc.want) {
				t.Fatalf("got %s code %s msg %q", f.Type, f.Code, f.Meta.GetString("msg"))
			}
			c.expectEOF()
		})
	}
}

func TestProtocolErrors(t *testing.T) {
	ts := startServer(t, nil)
	t.Run("before login", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.send(frame.Header{Type: frame.TypePing}, nil)
		if f := c.next(); f.Type != frame.TypeError || f.Code != frame.CodeNotLoggedIn {
			t.Fatalf("got %s code %s", f.Type, f.Code)
		}
		c.expectEOF()
	})
	t.Run("bad magic", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.login("bm")
		c.write([]byte("GET / HTTP/1.1\r\n\r\n"))
		if f := c.next(); f.Type != frame.TypeError || f.Code != frame.CodeBadFrame {
			t.Fatalf("got %s code %s", f.Type, f.Code)
		}
		c.expectEOF()
	})
	t.Run("unknown type", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.login("ut")
		b := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePing}})
		b[3] = 0x3F
		c.write(b)
		if f := c.next(); f.Type != frame.TypeError || f.Code != frame.CodeBadFrame {
			t.Fatalf("got %s code %s", f.Type, f.Code)
		}
		c.expectEOF()
	})
	t.Run("server type from a client", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.login("st")
		c.send(frame.Header{Type: frame.TypePush, Biz: 1}, nil)
		if f := c.next(); f.Type != frame.TypeError || f.Code != frame.CodeBadFrame {
			t.Fatalf("got %s code %s", f.Type, f.Code)
		}
		c.expectEOF()
	})
	t.Run("too large", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.login("tl")
		h := frame.AppendHeader(nil, frame.Header{Type: frame.TypeRequest, Biz: 1, BodyLen: 1 << 30})
		c.write(h)
		if f := c.next(); f.Type != frame.TypeError || f.Code != frame.CodeFrameTooLarge {
			t.Fatalf("got %s code %s", f.Type, f.Code)
		}
		c.expectEOF()
	})
	t.Run("join without a group", func(t *testing.T) {
		c := dial(t, ts.addr)
		c.login("jg")
		c.send(frame.Header{Type: frame.TypeJoin, Biz: 4, Seq: 3}, nil)
		if f := c.next(); f.Type != frame.TypeResponse || f.Code != frame.CodeBadFrame || f.Seq != 3 {
			t.Fatalf("got %s code %s seq %d", f.Type, f.Code, f.Seq)
		}
		// The connection stays: a bad JOIN is answered, as the gateway does.
		c.send(frame.Header{Type: frame.TypePing, Seq: 4}, nil)
		if f := c.next(); f.Type != frame.TypePong {
			t.Fatalf("got %s", f.Type)
		}
	})
	waitFor(t, "the protocol errors counted", func() bool { return ts.s.Stats(false).ProtocolErrors == 5 })
}

func TestJoinGroupPush(t *testing.T) {
	ts := startServer(t, nil)
	a, b, other := dial(t, ts.addr), dial(t, ts.addr), dial(t, ts.addr)
	a.login("ga")
	b.login("gb")
	other.login("gc")
	for _, c := range []*client{a, b} {
		c.send(frame.Header{Type: frame.TypeJoin, Biz: 4, Seq: 2}, frame.AppendMetaString(nil, "group", "g1"))
		if f := c.next(); f.Type != frame.TypeResponse || f.Code != frame.CodeOK || f.Seq != 2 {
			t.Fatalf("JOIN: got %s code %s seq %d", f.Type, f.Code, f.Seq)
		}
	}
	res := ts.push(t, map[string]any{"biz": 4, "group": "g1", "payload": "hello"})
	if res.Targets != 2 || res.Delivered != 2 {
		t.Fatalf("group push: %+v", res)
	}
	for _, c := range []*client{a, b} {
		f := c.next()
		if f.Type != frame.TypePush || f.Biz != 4 || string(f.Body) != "hello" || f.Meta.GetString("group") != "g1" ||
			f.Meta.GetString("id") != res.ID || f.Seq != 1 {
			t.Fatalf("got %s biz %d body %q meta %q seq %d", f.Type, f.Biz, f.Body, f.Meta, f.Seq)
		}
	}
	// LEAVE, then the group has one member.
	a.send(frame.Header{Type: frame.TypeLeave, Biz: 4, Seq: 3}, frame.AppendMetaString(nil, "group", "g1"))
	if f := a.next(); f.Type != frame.TypeResponse || f.Code != frame.CodeOK {
		t.Fatalf("LEAVE: %s %s", f.Type, f.Code)
	}
	if res := ts.push(t, map[string]any{"biz": 4, "group": "g1", "payload": "two"}); res.Targets != 1 || res.Delivered != 1 {
		t.Fatalf("after LEAVE: %+v", res)
	}
	if f := b.next(); string(f.Body) != "two" || f.Seq != 2 {
		t.Fatalf("got %q seq %d", f.Body, f.Seq)
	}
	// The membership API, and a group nobody is in (0 targets, as the gateway).
	var mr MembersResult
	if st := call(t, http.MethodPut, ts.api+"/v1/groups/g2/members", testKey, map[string]any{"devices": []string{"gc", "ga", "nobody"}}, &mr); st != 200 ||
		mr.Changed != 2 || mr.Offline != 1 || mr.Size != 2 {
		t.Fatalf("PUT members: %d %+v", st, mr)
	}
	if res := ts.push(t, map[string]any{"biz": 4, "group": "g2", "payload": "three"}); res.Delivered != 2 {
		t.Fatalf("g2: %+v", res)
	}
	if f := other.next(); string(f.Body) != "three" {
		t.Fatalf("got %q", f.Body)
	}
	if st := call(t, http.MethodDelete, ts.api+"/v1/groups/g2/members", testKey, map[string]any{"devices": []string{"gc"}}, &mr); st != 200 ||
		mr.Changed != 1 || mr.Size != 1 {
		t.Fatalf("DELETE members: %d %+v", st, mr)
	}
	if res := ts.push(t, map[string]any{"biz": 4, "group": "empty", "payload": "x"}); res.Targets != 0 {
		t.Fatalf("empty group: %+v", res)
	}
}

func TestUnicastPush(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.login("u1")
	res := ts.push(t, map[string]any{"biz": 3, "devices": []string{"u1", "nobody", "u1"}, "payload_b64": "AAEC"})
	if res.Targets != 3 || res.Delivered != 2 || res.Offline != 1 || res.Forwarded != 0 {
		t.Fatalf("%+v", res)
	}
	for seq := uint32(1); seq <= 2; seq++ {
		f := c.next()
		if f.Type != frame.TypePush || f.Seq != seq || !bytes.Equal(f.Body, []byte{0, 1, 2}) || f.Meta.GetString("group") != "" {
			t.Fatalf("got %s seq %d body %v", f.Type, f.Seq, f.Body)
		}
	}
	// Another app's devices are not this app's.
	var other PushResult
	if st := call(t, http.MethodPost, ts.api+"/v1/push", "key-app2", map[string]any{"biz": 3, "devices": []string{"u1"}}, &other); st != 200 || other.Offline != 1 {
		t.Fatalf("app2: %d %+v", st, other)
	}
	// The peer goes away: it is no longer a target, and the close is counted.
	_ = c.nc.Close()
	waitFor(t, "the close", func() bool { st := ts.s.Stats(false); return st.Conns == 0 && st.Sessions == 0 && st.Closed == 1 })
	if res := ts.push(t, map[string]any{"biz": 3, "devices": []string{"u1"}}); res.Offline != 1 {
		t.Fatalf("after close: %+v", res)
	}
	if res := ts.push(t, map[string]any{"biz": 3, "broadcast": true}); res.Targets != 0 {
		t.Fatalf("broadcast after close: %+v", res)
	}
}

func TestEvictOlder(t *testing.T) {
	ts := startServer(t, nil)
	old := dial(t, ts.addr)
	old.login("same")
	fresh := dial(t, ts.addr)
	fresh.login("same")
	if f := old.next(); f.Type != frame.TypeGoaway || f.Code != frame.CodeEvicted {
		t.Fatalf("got %s %s", f.Type, f.Code)
	}
	old.expectEOF()
	if res := ts.push(t, map[string]any{"biz": 1, "devices": []string{"same"}, "payload": "p"}); res.Delivered != 1 {
		t.Fatalf("%+v", res)
	}
	if f := fresh.next(); string(f.Body) != "p" {
		t.Fatalf("got %q", f.Body)
	}
}

func TestBroadcast2000(t *testing.T) {
	const n = 2000
	ts := startServer(t, nil)
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = dial(t, ts.addr)
		clients[i].write(loginFrame(device(i)))
	}
	for i, c := range clients {
		if ack := c.next(); ack.Type != frame.TypeLoginAck || ack.Code != frame.CodeOK {
			t.Fatalf("client %d: %s %s", i, ack.Type, ack.Code)
		}
	}
	for round := range 2 {
		want := "all-" + strconv.Itoa(round)
		res := ts.push(t, map[string]any{"biz": 2, "broadcast": true, "payload": want})
		if res.Targets != n || res.Delivered != n {
			t.Fatalf("broadcast: %+v", res)
		}
		var wg sync.WaitGroup
		errs := make(chan string, n)
		for i, c := range clients {
			wg.Go(func() {
				f, err := c.nextErr()
				switch {
				case err != nil:
					errs <- "client " + strconv.Itoa(i) + ": " + err.Error()
				case f.Type != frame.TypePush || string(f.Body) != want || f.Seq != uint32(round+1):
					errs <- "client " + strconv.Itoa(i) + ": got " + f.Type.String() + " " + string(f.Body)
				}
			})
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Error(e)
		}
	}
}

// TestPartialFrameAcrossReads drives one loop's read by hand over a socket pair, so the frame is
// known to arrive in pieces: the connection keeps just the partial bytes between reads.
func TestPartialFrameAcrossReads(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Loops = 1 })
	lp, c, peer := pairConn(t, ts.s)
	login := loginFrame("pp")
	ping := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePing, Seq: 5}})
	stream := append(append([]byte(nil), login...), ping...)
	// Cut in the header, in the meta, and in the second frame.
	writeAll(t, peer, stream[:5])
	lp.read(c)
	if len(c.partial) != 5 || c.loggedIn {
		t.Fatalf("after 5 bytes: partial %d, logged in %v", len(c.partial), c.loggedIn)
	}
	writeAll(t, peer, stream[5:frame.HeaderLen+3])
	lp.read(c)
	if len(c.partial) != frame.HeaderLen+3 {
		t.Fatalf("partial %d, want %d", len(c.partial), frame.HeaderLen+3)
	}
	writeAll(t, peer, stream[frame.HeaderLen+3:len(login)+2])
	lp.read(c)
	if !c.loggedIn || len(c.partial) != 2 {
		t.Fatalf("logged in %v, partial %d (want the 2 bytes of the PING)", c.loggedIn, len(c.partial))
	}
	writeAll(t, peer, stream[len(login)+2:])
	lp.read(c)
	if c.partial != nil {
		t.Fatalf("partial %d after the whole stream", len(c.partial))
	}
	r := frame.NewReader(fdReader(peer), frame.Limits{})
	if f, err := r.Next(); err != nil || f.Type != frame.TypeLoginAck {
		t.Fatalf("%v %v", f.Type, err)
	}
	if f, err := r.Next(); err != nil || f.Type != frame.TypePong || f.Seq != 5 {
		t.Fatalf("%v seq %d %v", f.Type, f.Seq, err)
	}
}

// TestBurstHitsEAGAIN pushes to a client that does not read until the socket refuses bytes, then
// reads: every push arrives, in order.
func TestBurstHitsEAGAIN(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.WriteQueue = 64 << 20 })
	d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	nc, err := d.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	c := &client{t: t, nc: nc, r: frame.NewReader(nc, frame.Limits{})}
	c.login("slow")
	payload := strings.Repeat("x", 16<<10)
	sent := 0
	for ts.s.Stats(false).Queued == 0 {
		if sent > 4000 {
			t.Fatalf("%d pushes of 16 KiB and the socket never refused a byte", sent)
		}
		ts.push(t, map[string]any{"biz": 1, "devices": []string{"slow"}, "payload": strconv.Itoa(sent) + ":" + payload})
		sent++
	}
	for range 50 { // more behind the queue: appended to it
		ts.push(t, map[string]any{"biz": 1, "devices": []string{"slow"}, "payload": strconv.Itoa(sent) + ":" + payload})
		sent++
	}
	for i := range sent {
		f := c.next()
		prefix, _, _ := strings.Cut(string(f.Body), ":")
		if f.Type != frame.TypePush || f.Seq != uint32(i+1) || prefix != strconv.Itoa(i) {
			t.Fatalf("push %d: got %s seq %d prefix %q", i, f.Type, f.Seq, prefix)
		}
	}
	// Everything went out: the queue is released and EPOLLOUT disarmed.
	ts.s.reg.mu.RLock()
	sc := ts.s.reg.apps[testApp].devices["slow"]
	ts.s.reg.mu.RUnlock()
	waitFor(t, "the queue flushed", func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.pending == nil && !sc.armed
	})
}

func TestSlowConsumerClosed(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.WriteQueue = 32 << 10 })
	c := dial(t, ts.addr)
	c.login("never-reads")
	payload := strings.Repeat("y", 16<<10)
	for i := 0; ts.s.Stats(false).SlowConsumers == 0; i++ {
		if i > 10000 {
			t.Fatal("never closed as a slow consumer")
		}
		ts.push(t, map[string]any{"biz": 1, "devices": []string{"never-reads"}, "payload": payload})
	}
	waitFor(t, "the slow consumer closed", func() bool { return ts.s.Stats(false).Conns == 0 })
}

func TestPushAPIErrors(t *testing.T) {
	ts := startServer(t, nil)
	push := ts.api + "/v1/push"
	for _, tc := range []struct {
		name, method, url, key string
		body                   any
		status                 int
		code                   string
	}{
		{"no key", "POST", push, "", map[string]any{"biz": 1, "broadcast": true}, 401, "unauthorized"},
		{"bad key", "POST", push, "wrong", map[string]any{"biz": 1, "broadcast": true}, 401, "unauthorized"},
		{"bad json", "POST", push, testKey, `{"biz": 1,`, 400, "bad_json"},
		{"unknown field", "POST", push, testKey, `{"biz": 1, "broadcast": true, "nope": 1}`, 400, "bad_json"},
		{"trailing", "POST", push, testKey, `{"biz": 1, "broadcast": true} {}`, 400, "bad_json"},
		{"method", "GET", push, testKey, nil, 405, "method_not_allowed"},
		{"biz", "POST", push, testKey, map[string]any{"biz": 0, "broadcast": true}, 400, "bad_request"},
		{"two kinds", "POST", push, testKey, map[string]any{"biz": 1, "broadcast": true, "group": "g"}, 400, "bad_request"},
		{"users", "POST", push, testKey, map[string]any{"biz": 1, "users": []string{"u"}}, 400, "bad_request"},
		{"ack", "POST", push, testKey, map[string]any{"biz": 1, "broadcast": true, "ack": true}, 400, "bad_request"},
		{"other app", "POST", push, testKey, map[string]any{"app": "app2", "biz": 1, "broadcast": true}, 403, "forbidden"},
		{"too large", "POST", push, testKey, map[string]any{"biz": 1, "broadcast": true, "payload": strings.Repeat("z", 65<<10)}, 413, "too_large"},
		{"bad b64", "POST", push, testKey, map[string]any{"biz": 1, "broadcast": true, "payload_b64": "!!"}, 400, "bad_request"},
		{"long id", "POST", push, testKey, map[string]any{"biz": 1, "devices": []string{strings.Repeat("d", 129)}}, 400, "bad_request"},
		{"members bad key", "PUT", ts.api + "/v1/groups/g/members", "wrong", map[string]any{"devices": []string{"a"}}, 401, "unauthorized"},
		{"members bad json", "PUT", ts.api + "/v1/groups/g/members", testKey, `[`, 400, "bad_json"},
		{"members none", "PUT", ts.api + "/v1/groups/g/members", testKey, map[string]any{"devices": []string{}}, 400, "bad_request"},
		{"members method", "POST", ts.api + "/v1/groups/g/members", testKey, map[string]any{"devices": []string{"a"}}, 405, "method_not_allowed"},
		{"stats gc public", "GET", ts.api + "/v1/stats?gc=1", "", nil, 403, "forbidden"},
		{"stats gc bad", "GET", ts.admin + "/v1/stats?gc=2", "", nil, 400, "bad_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e apiError
			st := call(t, tc.method, tc.url, tc.key, tc.body, &e)
			if st != tc.status || e.Error != tc.code || e.Message == "" {
				t.Fatalf("got %d %+v, want %d %s", st, e, tc.status, tc.code)
			}
		})
	}
}

func TestStatsFields(t *testing.T) {
	ts := startServer(t, nil)
	c := dial(t, ts.addr)
	c.login("s1")
	for _, u := range []string{ts.api + "/v1/stats", ts.admin + "/v1/stats?gc=1"} {
		var m map[string]json.RawMessage
		if st := call(t, http.MethodGet, u, "", nil, &m); st != 200 {
			t.Fatalf("%s: %d", u, st)
		}
		for _, k := range []string{"node", "engine", "transport", "state", "uptime_s", "conns", "sessions", "rss_bytes",
			"heap_object_bytes", "heap_live_bytes", "stack_bytes", "go_mem_bytes", "goroutines", "gc_cycles",
			"gc_cpu_seconds", "cpu_seconds", "gc_pauses", "alloc_objects", "alloc_bytes"} {
			if _, ok := m[k]; !ok {
				t.Errorf("%s: no field %q", u, k)
			}
		}
		var st Stats
		raw, _ := json.Marshal(m)
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		if st.Engine != "floor" || st.Transport != "tcp" || st.State != "serving" || st.Node != "fl1" ||
			st.Conns != 1 || st.Sessions != 1 || st.RSSBytes == 0 || len(st.GCPauses.Bounds) == 0 || st.AllocObjects == 0 {
			t.Errorf("%s: %+v", u, st)
		}
	}
	resp, err := http.Get(ts.api + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
}

func TestCloseEndsEverything(t *testing.T) {
	s, err := New(Config{Listen: "127.0.0.1:0", Apps: []App{{ID: testApp, PushKey: testKey}}, Loops: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	cs := []*client{dial(t, s.Addr().String()), dial(t, s.Addr().String()), dial(t, s.Addr().String())}
	cs[0].login("c0")
	waitFor(t, "3 connections", func() bool { return s.Stats(false).Conns == 3 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		c.expectEOF()
	}
	if _, err := net.DialTimeout("tcp", s.Addr().String(), time.Second); err == nil {
		t.Fatal("the listener still accepts after Close")
	}
	if err := s.Start(); err != ErrClosed {
		t.Fatalf("Start after Close: %v", err)
	}
}

// pairConn makes one end of a socket pair a connection of the server's loop 0, without the loop
// reading it (the test calls lp.read), and returns the other end.
func pairConn(t *testing.T, s *Server) (*loop, *conn, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Close(fds[1]) })
	lp, err := newLoop(s, 99)
	if err != nil {
		t.Fatal(err)
	}
	lp.add(fds[0])
	c := lp.conns[fds[0]]
	t.Cleanup(func() {
		if lp.conns[fds[0]] == c {
			lp.close(c)
		}
		lp.closeFds()
	})
	return lp, c, fds[1]
}

func writeAll(t testing.TB, fd int, b []byte) {
	t.Helper()
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
}

// fdReader reads a non-blocking descriptor, waiting for data with poll.
type fdReader int

func (fd fdReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(int(fd), b)
		if err == unix.EAGAIN {
			pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(pfd, 10_000); err != nil && err != unix.EINTR {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, err
		}
		return n, nil
	}
}
