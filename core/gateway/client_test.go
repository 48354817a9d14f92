package gateway

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
)

func bizAt(url string) forward.Biz { return forward.Biz{BackendURL: url} }

func forwardBiz(url, notify string) forward.Biz {
	return forward.Biz{BackendURL: url, NotifyURL: notify}
}

// Businesses of the tests.
const (
	bizEcho  = 1 // echoes the body; clients may join groups
	bizBusy  = 2 // one worker, a queue of one, a backend that answers when the test says
	bizDrop  = 3 // echo; pushes that overflow a write queue are dropped
	bizFail  = 4 // the backend answers 500
	bizNoJoy = 5 // echo; clients may not join groups
)

// backends starts the tests' business backends: a real HTTP server.
type backends struct {
	srv     *httptest.Server
	release chan struct{} // closed to let the busy backend answer
	entered chan struct{} // one send per busy request that reached the backend
}

func newBackends(t testing.TB) *backends {
	b := &backends{release: make(chan struct{}), entered: make(chan struct{}, 16)}
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(w, r.Body)
	})
	mux.HandleFunc("/busy", func(w http.ResponseWriter, r *http.Request) {
		b.entered <- struct{}{}
		<-b.release
		_, _ = io.WriteString(w, "late")
	})
	mux.HandleFunc("/fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusInternalServerError)
	})
	b.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
		b.srv.Close()
	})
	return b
}

func (b *backends) businesses() map[uint16]Business {
	u := b.srv.URL
	return map[uint16]Business{
		bizEcho:  {Biz: bizAt(u + "/echo"), AllowJoin: true},
		bizBusy:  {Biz: forward.Biz{BackendURL: u + "/busy", PoolSize: 1, QueueLen: 1}},
		bizDrop:  {Biz: bizAt(u + "/echo"), SlowConsumer: SlowConsumerDrop},
		bizFail:  {Biz: bizAt(u + "/fail")},
		bizNoJoy: {Biz: bizAt(u + "/echo")},
	}
}

// nodeWithBackends is a node serving the test businesses.
func nodeWithBackends(t *testing.T, cfg Config) (*testNode, *backends) {
	b := newBackends(t)
	cfg.Businesses = b.businesses()
	return newNode(t, cfg), b
}

// inState returns a connection whose client is in state st.
func inState(t *testing.T, n *testNode, st session.State, device string) *pipe {
	t.Helper()
	switch st {
	case session.StateConnected:
		return n.dial(0)
	case session.StateAuthenticating:
		p := n.dial(0)
		if _, err := p.client().transition(session.EventLogin, 0); err != nil {
			t.Fatal(err)
		}
		return p
	case session.StateActive:
		return n.connect(t, device, "u-"+device)
	case session.StateDraining:
		p := n.connect(t, device, "u-"+device)
		p.client().goaway(1000)
		p.expect(t, frame.TypeGoaway, frame.CodeShuttingDown)
		return p
	default: // CLOSED
		p := n.connect(t, device, "u-"+device)
		p.client().close(frame.CodeOK)
		return p
	}
}

// TestStateFrameMatrix sends every frame type in every state: a frame the state accepts gets its
// answer (LOGIN_ACK, PONG, RESPONSE, nothing for PUSH_ACK), any other is a protocol error (ERROR
// NOT_LOGGED_IN before login, BAD_FRAME after) that closes the connection; a CLOSED connection
// ignores everything.
func TestStateFrameMatrix(t *testing.T) {
	n, _ := nodeWithBackends(t, Config{})
	answer := map[frame.Type]frame.Type{
		frame.TypeLogin: frame.TypeLoginAck, frame.TypePing: frame.TypePong, frame.TypeRequest: frame.TypeResponse,
		frame.TypeJoin: frame.TypeResponse, frame.TypeLeave: frame.TypeResponse,
	}
	dev := 0
	for st := session.State(0); st < session.NumStates; st++ {
		for typ := frame.TypeLogin; typ < frame.NumTypes; typ++ {
			t.Run(st.String()+"/"+typ.String(), func(t *testing.T) {
				dev++
				device := "m" + strconv.Itoa(dev)
				p := inState(t, n, st, device)
				var meta frame.Meta
				var biz uint16
				switch typ {
				case frame.TypeLogin:
					meta = frame.AppendMetaString(nil, "token", n.token(device+"-new", "u"))
				case frame.TypeJoin, frame.TypeLeave:
					meta, biz = frame.AppendMetaString(nil, "group", "g"), bizEcho
				case frame.TypeRequest, frame.TypePush, frame.TypeResponse:
					biz = bizEcho
				case frame.TypePushAck:
					meta = frame.AppendMetaString(nil, "id", "none")
				case frame.TypeLoginAck, frame.TypePing, frame.TypePong, frame.TypeGoaway, frame.TypeError:
					// no meta, biz 0
				}
				p.send(frame.Header{Type: typ, Biz: biz, Seq: 7}, meta, []byte("x"))
				want := session.Check(st, typ)
				switch {
				case st == session.StateClosed:
					p.silent(t)
				case want != frame.CodeOK:
					f := p.expect(t, frame.TypeError, want)
					if !strings.Contains(f.Meta.GetString("msg"), st.String()) {
						t.Fatalf("msg %q does not name the state", f.Meta.GetString("msg"))
					}
					if !p.isClosed() || p.state() != session.StateClosed || p.client().closeCode() != want {
						t.Fatalf("not closed after a protocol error: %v %v", p.state(), p.client().closeCode())
					}
				case answer[typ] != 0:
					f := p.expect(t, answer[typ], frame.CodeOK)
					if f.Seq != 7 && typ != frame.TypeLogin || typ == frame.TypeLogin && f.Seq != 7 {
						t.Fatalf("answer seq %d, want the frame's 7", f.Seq)
					}
					if typ == frame.TypeRequest && string(f.Body) != "x" {
						t.Fatalf("echo %q", f.Body)
					}
				default: // PUSH_ACK
					p.silent(t)
				}
			})
		}
	}
}

// TestLogin: a good token logs in; a missing, forged, expired, other-device or other-app token is
// answered LOGIN_ACK AUTH_FAILED and the connection closes.
func TestLogin(t *testing.T) {
	n := newNode(t, Config{})
	now := n.clock.Now()
	forged := hmacVerifier{key: []byte("another key, also 16 bytes long")}.mint("app", "d", "u", now.Add(time.Hour))
	cases := []struct {
		name   string
		meta   frame.Meta
		code   frame.Code
		result string // pushwire_logins_total{result}
	}{
		{"good", frame.AppendMetaString(frame.AppendMetaString(nil, "token", n.token("d", "u")), "device", "d"), frame.CodeOK, "ok"},
		{"good without device meta", frame.AppendMetaString(nil, "token", n.token("d2", "u")), frame.CodeOK, "ok"},
		{"missing", frame.AppendMetaString(nil, "device", "d"), frame.CodeAuthFailed, "missing"},
		{"empty", frame.AppendMetaString(nil, "token", ""), frame.CodeAuthFailed, "missing"},
		{"forged", frame.AppendMetaString(nil, "token", forged), frame.CodeAuthFailed, "invalid"},
		{"garbage", frame.AppendMetaString(nil, "token", "not-a-token"), frame.CodeAuthFailed, "invalid"},
		{"expired", frame.AppendMetaString(nil, "token", testKey.mint("app", "d", "u", now.Add(-time.Second))), frame.CodeAuthFailed, "invalid"},
		{"other device", frame.AppendMetaString(frame.AppendMetaString(nil, "token", n.token("d", "u")), "device", "e"), frame.CodeAuthFailed, "mismatch"},
		{"other app", frame.AppendMetaString(frame.AppendMetaString(nil, "token", n.token("d", "u")), "app", "other"), frame.CodeAuthFailed, "mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := counterValue(t, n.m.logins.WithLabelValues(tc.result))
			p := n.dial(0)
			p.send(frame.Header{Type: frame.TypeLogin, Seq: 3}, tc.meta, nil)
			ack := p.expect(t, frame.TypeLoginAck, tc.code)
			if ack.Seq != 3 {
				t.Fatalf("LOGIN_ACK seq %d", ack.Seq)
			}
			if got := counterValue(t, n.m.logins.WithLabelValues(tc.result)); got != before+1 {
				t.Fatalf("logins{%s} %v -> %v", tc.result, before, got)
			}
			if tc.code == frame.CodeOK {
				if p.state() != session.StateActive || ack.Meta.GetString("node") != "t" || ack.Meta.GetString("hb") != "60" {
					t.Fatalf("state %v, ack meta %q", p.state(), ack.Meta)
				}
				return
			}
			if ack.Meta.GetString("msg") == "" || !p.isClosed() || p.client().closeCode() != frame.CodeAuthFailed {
				t.Fatalf("msg %q, closed %v, code %v", ack.Meta.GetString("msg"), p.isClosed(), p.client().closeCode())
			}
		})
	}
}

// TestTokenExpiry: a token is a ticket to log in. A connection logged in stays when its token
// expires (heartbeats keep it); a reconnect with the expired token is refused.
func TestTokenExpiry(t *testing.T) {
	n := newNode(t, Config{Heartbeat: 30 * time.Second, IdleTimeout: 90 * time.Second})
	tok := testKey.mint("app", "d", "u", n.clock.Now().Add(time.Minute))
	p := n.dial(0)
	p.login(tok, "d")
	p.expect(t, frame.TypeLoginAck, frame.CodeOK)
	for range 10 { // five minutes of heartbeats: the token expired after the first
		n.advance(30 * time.Second)
		p.send(frame.Header{Type: frame.TypePing, Seq: 1}, nil, nil)
		p.expect(t, frame.TypePong, frame.CodeOK)
	}
	if p.state() != session.StateActive {
		t.Fatalf("logged-in connection %v after its token expired", p.state())
	}
	q := n.dial(0)
	q.login(tok, "d")
	if f := q.expect(t, frame.TypeLoginAck, frame.CodeAuthFailed); !strings.Contains(f.Meta.GetString("msg"), "expired") {
		t.Fatalf("msg %q", f.Meta.GetString("msg"))
	}
	if p.state() != session.StateActive {
		t.Fatal("the refused reconnect evicted the live connection")
	}
}

// TestTimeouts: the login and idle timeouts on the node's clock, through the timing wheel.
func TestTimeouts(t *testing.T) {
	n := newNode(t, Config{Heartbeat: 10 * time.Second, IdleTimeout: 30 * time.Second, LoginTimeout: 5 * time.Second})
	t.Run("login", func(t *testing.T) {
		p := n.dial(0)
		n.advance(4 * time.Second)
		p.silent(t)
		n.advance(2 * time.Second)
		p.expect(t, frame.TypeError, frame.CodeLoginTimeout)
		if !p.isClosed() || p.client().closeCode() != frame.CodeLoginTimeout {
			t.Fatal("not closed LOGIN_TIMEOUT")
		}
	})
	t.Run("idle", func(t *testing.T) {
		p := n.connect(t, "idle", "u")
		quiet := n.connect(t, "quiet", "u")
		for range 4 { // 40s of pings every 10s keep p; quiet sends nothing
			n.advance(10 * time.Second)
			p.send(frame.Header{Type: frame.TypePing}, nil, nil)
			p.expect(t, frame.TypePong, frame.CodeOK)
		}
		quiet.expect(t, frame.TypeError, frame.CodeIdleTimeout)
		if !quiet.isClosed() || p.state() != session.StateActive {
			t.Fatalf("quiet closed %v, pinging %v", quiet.isClosed(), p.state())
		}
		n.advance(31 * time.Second)
		p.expect(t, frame.TypeError, frame.CodeIdleTimeout)
		if got := counterValue(t, n.m.timeouts.WithLabelValues("idle")); got != 2 {
			t.Fatalf("idle timeouts %v", got)
		}
	})
}

// TestRequests: a known business answers through its backend; an unknown one is UNKNOWN_BIZ; a
// business whose queue is full is BUSY at once; a backend error is BACKEND_ERROR.
func TestRequests(t *testing.T) {
	n, b := nodeWithBackends(t, Config{})
	p := n.connect(t, "d", "u")
	req := func(biz uint16, seq uint32, body string) {
		p.send(frame.Header{Type: frame.TypeRequest, Biz: biz, Seq: seq}, frame.AppendMetaString(nil, "trace", "t1"), []byte(body))
	}
	req(bizEcho, 1, "hello")
	if f := p.expect(t, frame.TypeResponse, frame.CodeOK); f.Seq != 1 || f.Biz != bizEcho || string(f.Body) != "hello" {
		t.Fatalf("echo: seq %d biz %d body %q", f.Seq, f.Biz, f.Body)
	}
	req(99, 2, "x")
	if f := p.expect(t, frame.TypeResponse, frame.CodeUnknownBiz); f.Seq != 2 || f.Biz != 99 {
		t.Fatalf("unknown biz: seq %d biz %d", f.Seq, f.Biz)
	}
	req(bizFail, 3, "x")
	p.expect(t, frame.TypeResponse, frame.CodeBackendError)
	// Busy: the one worker holds the first request at the backend, the second waits in the queue
	// of one, the third is refused.
	req(bizBusy, 10, "a")
	<-b.entered
	req(bizBusy, 11, "b")
	req(bizBusy, 12, "c")
	if f := p.expect(t, frame.TypeResponse, frame.CodeBusy); f.Seq != 12 || f.Meta.GetString("msg") == "" {
		t.Fatalf("busy: seq %d msg %q", f.Seq, f.Meta.GetString("msg"))
	}
	close(b.release)
	seqs := map[uint32]bool{}
	for range 2 {
		f := p.expect(t, frame.TypeResponse, frame.CodeOK)
		seqs[f.Seq] = true
	}
	if !seqs[10] || !seqs[11] {
		t.Fatalf("answers %v", seqs)
	}
	// A meta key that cannot be an HTTP header is refused before it reaches the backend.
	p.send(frame.Header{Type: frame.TypeRequest, Biz: bizEcho, Seq: 20}, frame.AppendMetaString(nil, "bad key", "v"), nil)
	p.expect(t, frame.TypeResponse, frame.CodeBadFrame)
}

// TestJoinLeave: JOIN and LEAVE on a business that allows them, FORBIDDEN on one that does not,
// UNKNOWN_BIZ on none, BAD_FRAME for a bad group name, and FORBIDDEN past the per-connection
// group cap; a group push reaches the members.
func TestJoinLeave(t *testing.T) {
	n, _ := nodeWithBackends(t, Config{MaxGroupsPerConn: 2})
	p := n.connect(t, "d", "u")
	join := func(typ frame.Type, biz uint16, group string, code frame.Code) frame.Frame {
		t.Helper()
		p.send(frame.Header{Type: typ, Biz: biz, Seq: 5}, frame.AppendMetaString(nil, "group", group), nil)
		return p.expect(t, frame.TypeResponse, code)
	}
	join(frame.TypeJoin, bizEcho, "room", frame.CodeOK)
	join(frame.TypeJoin, bizEcho, "room", frame.CodeOK) // again: still one membership
	join(frame.TypeJoin, bizEcho, "hall", frame.CodeOK)
	if f := join(frame.TypeJoin, bizEcho, "third", frame.CodeForbidden); !strings.Contains(f.Meta.GetString("msg"), "at most 2 groups") {
		t.Fatalf("cap msg %q", f.Meta.GetString("msg"))
	}
	join(frame.TypeJoin, bizNoJoy, "room", frame.CodeForbidden)
	join(frame.TypeJoin, 99, "room", frame.CodeUnknownBiz)
	join(frame.TypeJoin, bizEcho, "", frame.CodeBadFrame)
	join(frame.TypeJoin, bizEcho, strings.Repeat("g", maxGroupLen+1), frame.CodeBadFrame)
	res, err := n.Push(&PushRequest{App: "app", Biz: bizEcho, Group: "room", Payload: []byte("to the room")})
	if err != nil || res.Targets != 1 || res.Delivered != 1 {
		t.Fatalf("group push %+v %v", res, err)
	}
	if f := p.expect(t, frame.TypePush, frame.CodeOK); f.Meta.GetString("group") != "room" || string(f.Body) != "to the room" {
		t.Fatalf("push meta %q body %q", f.Meta, f.Body)
	}
	join(frame.TypeLeave, bizEcho, "room", frame.CodeOK)
	join(frame.TypeJoin, bizEcho, "third", frame.CodeOK) // room's slot is free again
	if n.groups.Size("app", "room") != 0 {
		t.Fatal("left the room but still a member")
	}
	p.hangUp()
	if n.groups.Len() != 0 {
		t.Fatalf("%d groups after the only member closed", n.groups.Len())
	}
}

// TestRateLimit: REQUEST, JOIN and LEAVE beyond the rate (after the burst) are RATE_LIMITED,
// PING never is, and time on the node's clock refills the allowance.
func TestRateLimit(t *testing.T) {
	n, _ := nodeWithBackends(t, Config{RateLimit: 10, RateBurst: 5})
	p := n.connect(t, "d", "u")
	leave := func() frame.Code {
		p.send(frame.Header{Type: frame.TypeLeave, Biz: bizEcho}, frame.AppendMetaString(nil, "group", "g"), nil)
		return p.next(t).Code
	}
	ok := 0
	for range 20 {
		if leave() == frame.CodeOK {
			ok++
		}
	}
	// The first frame's own slot plus the burst of 5 pass; the clock did not move.
	if ok != 6 {
		t.Fatalf("%d of 20 frames at once allowed, want 6", ok)
	}
	p.send(frame.Header{Type: frame.TypePing}, nil, nil)
	p.expect(t, frame.TypePong, frame.CodeOK)
	n.clock.add(100 * time.Millisecond) // one interval at 10/s
	if leave() != frame.CodeOK || leave() != frame.CodeRateLimited {
		t.Fatal("one interval should allow exactly one more")
	}
	if got := counterValue(t, n.m.rateLimited); got != 15 {
		t.Fatalf("rate_limited_total %v", got)
	}
	unlimited := newNode(t, Config{RateLimit: -1})
	q := unlimited.connect(t, "d", "u")
	for range 200 {
		q.send(frame.Header{Type: frame.TypeLeave, Biz: 1}, frame.AppendMetaString(nil, "group", "g"), nil)
		q.expect(t, frame.TypeResponse, frame.CodeUnknownBiz)
	}
}

// TestSlowConsumer: a push that overflows a connection's write queue closes it SLOW_CONSUMER, or,
// for a business with the drop policy, is dropped and counted while the connection stays.
func TestSlowConsumer(t *testing.T) {
	n, _ := nodeWithBackends(t, Config{})
	payload := []byte(strings.Repeat("p", 200))
	open := func(device string) *pipe {
		p := n.dial(300) // room for one push of 200 bytes and its header, not two
		p.login(n.token(device, "u-"+device), device)
		p.expect(t, frame.TypeLoginAck, frame.CodeOK)
		return p
	}
	t.Run("close", func(t *testing.T) {
		p := open("slow")
		for i, want := range []PushResult{{Targets: 1, Delivered: 1}, {Targets: 1, Failed: 1}, {Targets: 1, Offline: 1}} {
			res, err := n.Push(&PushRequest{App: "app", Biz: bizEcho, Devices: []string{"slow"}, Payload: payload})
			res.ID = ""
			if err != nil || res != want {
				t.Fatalf("push %d: %+v %v, want %+v", i, res, err, want)
			}
		}
		if !p.isClosed() || p.client().closeCode() != frame.CodeSlowConsumer {
			t.Fatalf("closed %v code %v", p.isClosed(), p.client().closeCode())
		}
		p.expect(t, frame.TypePush, frame.CodeOK) // what was queued before is still flushed
		if got := counterValue(t, n.m.slowConsumers); got != 1 {
			t.Fatalf("slow_consumers_total %v", got)
		}
		if got := counterValue(t, n.m.closes.WithLabelValues("SLOW_CONSUMER")); got != 1 {
			t.Fatalf("closes{SLOW_CONSUMER} %v", got)
		}
	})
	t.Run("drop", func(t *testing.T) {
		p := open("dropper")
		for i, want := range []PushResult{{Targets: 1, Delivered: 1}, {Targets: 1, Failed: 1}} {
			res, err := n.Push(&PushRequest{App: "app", Biz: bizDrop, Devices: []string{"dropper"}, Payload: payload})
			res.ID = ""
			if err != nil || res != want {
				t.Fatalf("push %d: %+v %v, want %+v", i, res, err, want)
			}
		}
		if p.state() != session.StateActive {
			t.Fatalf("drop policy closed the connection: %v", p.state())
		}
		f := p.expect(t, frame.TypePush, frame.CodeOK)
		p.silent(t)
		// The peer read: the queue has room again, and seq numbers show the gap.
		res, _ := n.Push(&PushRequest{App: "app", Biz: bizDrop, Devices: []string{"dropper"}, Payload: payload})
		if res.Delivered != 1 {
			t.Fatalf("after reading: %+v", res)
		}
		if g := p.expect(t, frame.TypePush, frame.CodeOK); g.Seq <= f.Seq+1 {
			t.Fatalf("seq %d after %d and a drop", g.Seq, f.Seq)
		}
		if got := counterValue(t, n.m.pushes.WithLabelValues("dropped")); got != 1 {
			t.Fatalf("pushes{dropped} %v", got)
		}
	})
	t.Run("response", func(t *testing.T) {
		// Control frames and responses always close a connection whose queue is full.
		p := open("full")
		if _, err := n.Push(&PushRequest{App: "app", Biz: bizDrop, Devices: []string{"full"}, Payload: payload}); err != nil {
			t.Fatal(err)
		}
		p.send(frame.Header{Type: frame.TypeRequest, Biz: bizEcho, Seq: 1}, nil, payload)
		p.waitClosed(t)
		p.expect(t, frame.TypePush, frame.CodeOK)
		p.silent(t)
		if p.client().closeCode() != frame.CodeSlowConsumer {
			t.Fatalf("close code %v", p.client().closeCode())
		}
	})
}

// TestEviction: a newer connection of a device closes the older with GOAWAY EVICTED, and a user
// over MaxConnsPerUser loses its oldest connection the same way.
func TestEviction(t *testing.T) {
	n := newNode(t, Config{MaxConnsPerUser: 2})
	old := n.connect(t, "phone", "alice")
	cur := n.connect(t, "phone", "alice")
	if f := old.expect(t, frame.TypeGoaway, frame.CodeEvicted); f.Meta.GetString("reason") == "" {
		t.Fatal("GOAWAY without reason")
	}
	if !old.isClosed() || old.client().closeCode() != frame.CodeEvicted {
		t.Fatal("evicted connection not closed EVICTED")
	}
	if n.table.ByDevice("app", "phone") != cur.client() {
		t.Fatal("the table does not point at the newer connection")
	}
	n.connect(t, "tablet", "alice")
	n.connect(t, "laptop", "alice") // the third of alice: the oldest (cur) goes
	cur.expect(t, frame.TypeGoaway, frame.CodeEvicted)
	if got := len(n.table.ByUser(nil, "app", "alice")); got != 2 {
		t.Fatalf("alice has %d connections", got)
	}
	if got := counterValue(t, n.m.evictions); got != 2 {
		t.Fatalf("evictions %v", got)
	}
}

// TestDecodeErrors: every malformed input is answered ERROR with its code and closes the
// connection; a frame split across reads is put together.
func TestDecodeErrors(t *testing.T) {
	n := newNode(t, Config{MaxBody: 1024})
	ping := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePing, Seq: 9}})
	t.Run("split", func(t *testing.T) {
		p := n.connect(t, "d", "u")
		for _, b := range ping {
			p.feed([]byte{b})
		}
		if f := p.expect(t, frame.TypePong, frame.CodeOK); f.Seq != 9 {
			t.Fatalf("seq %d", f.Seq)
		}
		p.feed(append(append([]byte(nil), ping...), ping[:5]...)) // a whole one and a part
		p.expect(t, frame.TypePong, frame.CodeOK)
		p.feed(ping[5:])
		p.expect(t, frame.TypePong, frame.CodeOK)
	})
	version := append([]byte(nil), ping...)
	version[2] = 2
	huge := frame.AppendHeader(nil, frame.Header{Type: frame.TypeRequest, Biz: 1, BodyLen: 1 << 20})
	for _, tc := range []struct {
		name string
		in   []byte
		code frame.Code
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), frame.CodeBadFrame},
		{"version", version, frame.CodeUnsupportedVersion},
		{"too large", huge, frame.CodeFrameTooLarge},
		{"unknown type", frame.AppendHeader(nil, frame.Header{Type: 0x7F}), frame.CodeBadFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, loggedIn := range []bool{false, true} {
				p := n.dial(0)
				if loggedIn {
					p = n.connect(t, "e", "u")
				}
				p.feed(tc.in)
				p.expect(t, frame.TypeError, tc.code)
				if !p.isClosed() {
					t.Fatal("open after a protocol error")
				}
			}
		})
	}
}

// FuzzOnData feeds arbitrary bytes, in two reads, to a connection before and after login: the
// node never panics, answers a protocol error with ERROR and closes, and never writes a frame it
// could not decode itself.
func FuzzOnData(f *testing.F) {
	ping := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePing, Seq: 1}})
	join := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypeJoin, Biz: 1}, Meta: frame.AppendMetaString(nil, "group", "g")})
	login := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypeLogin}, Meta: frame.AppendMetaString(nil, "token", "x")})
	for _, seed := range [][]byte{ping, join, login, append(ping, ping[:7]...), []byte("PW\x01\x05"), {}, []byte("\x00\x00")} {
		f.Add(seed, 3, false)
		f.Add(seed, 0, true)
	}
	n := newNode(f, Config{Businesses: map[uint16]Business{1: {Biz: bizAt("http://127.0.0.1:1/"), AllowJoin: true}}})
	f.Fuzz(func(t *testing.T, in []byte, split int, loggedIn bool) {
		p := n.dial(0)
		if loggedIn {
			p = n.connect(t, "fuzz", "u")
		}
		split = min(max(split, 0), len(in))
		p.feed(in[:split])
		p.feed(in[split:])
		for {
			fr, ok := p.take(t)
			if !ok {
				break
			}
			if fr.Type == frame.TypeError && (!p.isClosed() || fr.Code == frame.CodeOK) {
				t.Fatalf("ERROR %v without a close", fr.Code)
			}
		}
		p.hangUp()
	})
}

// counterValue reads a Prometheus counter.
func counterValue(t testing.TB, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
