package main

// Third-party clients against real processes: headless Chromium loads a page that uses the
// browser's own fetch, WebCrypto and WebSocket, and Node.js runs a script on the npm ws package;
// both share test/thirdparty/pushwire.js (the frame codec and the client flow). Each calls
// control's /v1/connect as a web client, opens the ws endpoint it is given, logs in, receives a
// push sent through the push API with ack, and answers PUSH_ACK; the test checks the body and
// that the gateway counted the ack. Then each sends a text message on a second WebSocket, which
// the gateway must refuse with ERROR BAD_FRAME and close status 1003. `make tools` installs chromium, nodejs, npm and the npm
// packages; without them these tests skip, unless PUSHWIRE_THIRDPARTY=1 (set by `make test`),
// which makes a missing tool a failure.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pushwire/pushwire/bench"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
)

const (
	// thirdPartyEnv set to anything but "" or "0" makes a missing browser, Node.js or npm package
	// a failure instead of a skip (make test sets it).
	thirdPartyEnv = "PUSHWIRE_THIRDPARTY"
	// thirdPartyDir holds the page, the Node script, pushwire.js and package.json.
	thirdPartyDir = "../../test/thirdparty"
	// thirdPartyBound bounds each client's whole run (connect, login, push, ack).
	thirdPartyBound = 60 * time.Second
)

// thirdPartyRequired reports whether missing tools fail the tests.
func thirdPartyRequired() bool {
	v := os.Getenv(thirdPartyEnv)
	return v != "" && v != "0"
}

// thirdPartyMissing skips the test, or fails it when thirdPartyEnv is set.
func thirdPartyMissing(t *testing.T, why string) {
	t.Helper()
	if thirdPartyRequired() {
		t.Fatalf("%s; %s is set, so the third-party client tests must run: `make tools` installs chromium, nodejs, npm and the npm packages", why, thirdPartyEnv)
	}
	t.Skipf("%s: skipped; run `make tools`, then `%s=1 go test -run ThirdParty ./cmd/pushwire/` (make test sets %s)", why, thirdPartyEnv, thirdPartyEnv)
}

// lookTool finds one of names on PATH, or skips/fails the test.
func lookTool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	thirdPartyMissing(t, strings.Join(names, " or ")+" is not installed")
	return ""
}

// thirdPartyPath is the absolute path of a file in thirdPartyDir.
func thirdPartyPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(thirdPartyDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// nodeTool finds node and checks that `npm ci` has installed the ws package.
func nodeTool(t *testing.T) string {
	t.Helper()
	node := lookTool(t, "node", "nodejs")
	if _, err := os.Stat(thirdPartyPath(t, "node_modules/ws/package.json")); err != nil {
		thirdPartyMissing(t, "the npm ws package is not installed in test/thirdparty (npm ci)")
	}
	return node
}

// tailBuffer keeps the last max bytes written to it, for a process's stderr.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (tb *tailBuffer) Write(p []byte) (int, error) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.b = append(tb.b, p...)
	if over := len(tb.b) - tb.max; over > 0 {
		tb.b = append(tb.b[:0], tb.b[over:]...)
	}
	return len(p), nil
}

func (tb *tailBuffer) String() string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	return string(tb.b)
}

// progress is one step a client reports: {"step", "detail"}.
type progress struct {
	Step   string          `json:"step"`
	Detail json.RawMessage `json:"detail"`
}

// clientProc is a third-party client process (chromium or node) and the steps it reports.
type clientProc struct {
	t        *testing.T
	name     string
	cmd      *exec.Cmd
	steps    chan progress
	exited   chan struct{}
	waitErr  error
	stderr   *tailBuffer
	deadline time.Time
	stopOnce sync.Once
}

// startClient starts cmd in its own process group (so that stopping it ends every process it
// started: chromium runs several) and stops it when the test ends. With stdoutSteps the client
// reports its steps on stdout, one JSON object a line (the Node client); otherwise they come to
// steps from elsewhere (the page's POST /progress).
func startClient(t *testing.T, name string, cmd *exec.Cmd, steps chan progress, stdoutSteps bool) *clientProc {
	t.Helper()
	p := &clientProc{t: t, name: name, cmd: cmd, steps: steps, exited: make(chan struct{}),
		stderr: &tailBuffer{max: 64 << 10}, deadline: time.Now().Add(thirdPartyBound)}
	cmd.Stderr = p.stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second // a descendant holding stdout or stderr open does not hold Wait
	var pw *io.PipeWriter
	read := make(chan struct{})
	if stdoutSteps {
		var pr *io.PipeReader
		pr, pw = io.Pipe()
		cmd.Stdout = pw
		go func() {
			defer close(read)
			readSteps(pr, steps, p.stderr)
		}()
	} else {
		close(read)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.waitErr = cmd.Wait() // after the process exits and its stdout is copied
		if pw != nil {
			_ = pw.Close()
		}
		<-read // every line it wrote is in steps
		close(p.exited)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop kills the client's process group and waits until every process of it is gone.
func (p *clientProc) stop() {
	p.stopOnce.Do(func() {
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			p.t.Errorf("%s (pid %d) still running 10s after SIGKILL", p.name, pgid)
			return
		}
		deadline := time.Now().Add(10 * time.Second)
		for groupRunning(pgid) {
			if time.Now().After(deadline) {
				p.t.Errorf("%s: processes of group %d still running 10s after SIGKILL", p.name, pgid)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// groupRunning reports whether a process of group pgid is still running: one that is not a zombie
// (chromium's helpers, reparented when it dies, may wait a moment to be reaped by init).
func groupRunning(pgid int) bool {
	if syscall.Kill(-pgid, 0) != nil {
		return false // no process at all in the group
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // it ended meanwhile
		}
		// pid (comm) state ppid pgrp …: comm may hold spaces and parentheses, so parse after the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(b[i+1:]))
		if len(fields) >= 3 && fields[2] == fmt.Sprint(pgid) && fields[0] != "Z" {
			return true
		}
	}
	return false
}

// fail ends the test with why, the client's exit status and the end of its stderr.
func (p *clientProc) fail(format string, args ...any) {
	p.t.Helper()
	status := "still running"
	select {
	case <-p.exited:
		status = fmt.Sprintf("exited: %v", p.waitErr)
	default:
	}
	p.t.Fatalf("%s: %s\n%s %s; its stderr ends with:\n%s", p.name, fmt.Sprintf(format, args...), p.name, status, quiet(p.stderr.String()))
}

// quiet drops the lines of a client's stderr that say nothing about the test: chromium logs every
// failed attempt to reach D-Bus, which no test machine runs.
func quiet(s string) string {
	var b strings.Builder
	dropped := 0
	for line := range strings.Lines(s) {
		if strings.Contains(line, "dbus") || strings.Contains(line, "DBus") {
			dropped++
			continue
		}
		b.WriteString(line)
	}
	if dropped > 0 {
		fmt.Fprintf(&b, "(%d D-Bus lines left out)\n", dropped)
	}
	return b.String()
}

// wait returns the detail of the client's next report of step, failing on an "error" report,
// on the client's exit and past the client's deadline. Other steps are skipped.
func (p *clientProc) wait(step string) json.RawMessage {
	p.t.Helper()
	timer := time.NewTimer(time.Until(p.deadline))
	defer timer.Stop()
	for {
		select {
		case s := <-p.steps:
			if s.Step == "error" {
				p.fail("reported an error waiting for %q: %s", step, s.Detail)
			}
			if s.Step == step {
				return s.Detail
			}
		case <-p.exited:
			// The reports it made before it exited are all in steps by now.
			for {
				select {
				case s := <-p.steps:
					if s.Step == "error" {
						p.fail("reported an error waiting for %q: %s", step, s.Detail)
					}
					if s.Step == step {
						return s.Detail
					}
				default:
					p.fail("exited before reporting %q", step)
				}
			}
		case <-timer.C:
			p.fail("no %q report within %v", step, thirdPartyBound)
		}
	}
}

// thirdPartyEngines are the registered stream engines that carry WebSocket.
func thirdPartyEngines(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, name := range engines.Names() {
		if engines.Carries(name, engines.TransportWS) {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		t.Fatal("no registered engine carries ws")
	}
	return out
}

// deployWS starts control and one gateway on engine serving WebSocket (bench's Transport ws: a
// --ws-listen next to the tcp listener); control hands out the ws endpoint (web clients get ws
// and wss only), with controlArgs added (e.g. --cors-origins for the browser's page). wsAddr is
// the ws listener's host:port.
func deployWS(t *testing.T, engine string, controlArgs ...string) (d *bench.Deployment, wsAddr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := bench.Deploy(ctx, bench.DeployConfig{
		Binary:      testBinary,
		Engine:      engine,
		Transport:   engines.TransportWS,
		Heartbeat:   2 * time.Second,
		ControlArgs: controlArgs,
		LogDir:      t.TempDir(),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatalf("deploy: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stopping the deployment: %v", err)
		}
	})
	eps := d.Endpoints[engines.TransportWS]
	if len(eps) != 1 || !strings.HasPrefix(eps[0], "ws://") {
		t.Fatalf("deployment's ws endpoints %q: want one ws://host:port", eps)
	}
	return d, strings.TrimPrefix(eps[0], "ws://")
}

// clientPush is a push as a client reports it.
type clientPush struct {
	Biz  int    `json:"biz"`
	ID   string `json:"id"`
	Seq  uint32 `json:"seq"`
	Ack  bool   `json:"ack"`
	Body string `json:"body"`
}

// pushAndCheckAck waits until the client has logged in, pushes one message with ack to device
// through the push API, and checks that the client got its body and that the gateway counted the
// PUSH_ACK (pushwire_push_acked_total up by one, nothing left pending); then that the client's
// text message was refused.
func pushAndCheckAck(t *testing.T, p *clientProc, d *bench.Deployment, wsAddr, device, payload string) {
	t.Helper()
	connected := p.wait("connected")
	var conn struct {
		URL       string `json:"url"`
		Endpoints []struct {
			Protocol string `json:"protocol"`
			Addr     string `json:"addr"`
		} `json:"endpoints"`
	}
	if err := json.Unmarshal(connected, &conn); err != nil {
		p.fail("connected report %s: %v", connected, err)
	}
	for _, ep := range conn.Endpoints {
		if ep.Protocol != engines.TransportWS && ep.Protocol != engines.TransportWSS {
			p.fail("control gave a web client a %s endpoint (%s): want ws or wss only", ep.Protocol, connected)
		}
	}
	if want := "ws://" + wsAddr + "/ws"; conn.URL != want {
		p.fail("the client opened %s, want %s", conn.URL, want)
	}
	var login struct {
		Conn string `json:"conn"`
		Node string `json:"node"`
	}
	if li := p.wait("logged-in"); json.Unmarshal(li, &login) != nil || login.Conn == "" || login.Node != "gw0" {
		p.fail("logged-in report %s: want a connection ID and node gw0", li)
	}

	gw := d.GatewayHTTP[0]
	acked := metric(t, gw, "pushwire_push_acked_total")
	status, ans := push(t, d, d.PushKey, map[string]any{"biz": 7, "devices": []string{device}, "payload": payload, "ack": true})
	if status != http.StatusOK || ans["delivered"] != 1.0 || ans["pending"] != 1.0 {
		p.fail("push answer %d %v: want delivered 1, pending 1", status, ans)
	}

	done := p.wait("done")
	var result struct {
		Pushes []clientPush `json:"pushes"`
	}
	if err := json.Unmarshal(done, &result); err != nil || len(result.Pushes) != 1 {
		p.fail("done report %s: want one push (%v)", done, err)
	}
	got := result.Pushes[0]
	if got.Body != payload || got.Biz != 7 || !got.Ack || got.ID == "" || got.ID != ans["id"] {
		p.fail("push received %+v; sent biz 7, id %v, with ack, body %q", got, ans["id"], payload)
	}
	eventually(t, 10*time.Second, "the gateway counts the PUSH_ACK", func() bool {
		return metric(t, gw, "pushwire_push_acked_total") == acked+1 && metric(t, gw, "pushwire_push_pending") == 0
	})

	// Then a text message on a new WebSocket: ERROR BAD_FRAME in a binary message, and the
	// gateway closes with 1003 (unsupported data).
	refused := p.wait("text-refused")
	var probe struct {
		Frames []struct {
			Type string `json:"type"`
			Code string `json:"code"`
			Msg  string `json:"msg"`
		} `json:"frames"`
		CloseCode int `json:"closeCode"`
	}
	if err := json.Unmarshal(refused, &probe); err != nil {
		p.fail("text-refused report %s: %v", refused, err)
	}
	if len(probe.Frames) != 1 || probe.Frames[0].Type != "ERROR" || probe.Frames[0].Code != "BAD_FRAME" ||
		probe.CloseCode != 1003 {
		p.fail("a text message was answered %s: want one ERROR BAD_FRAME, then close status 1003", refused)
	}
}

// pageServer serves thirdPartyDir on 127.0.0.1 and takes the page's reports at POST /progress.
func pageServer(t *testing.T, steps chan progress) (origin string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /", http.FileServer(http.Dir(thirdPartyPath(t, "."))))
	mux.HandleFunc("POST /progress", func(w http.ResponseWriter, r *http.Request) {
		var s progress
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&s); err != nil || s.Step == "" {
			http.Error(w, fmt.Sprintf("want {step, detail}: %v", err), http.StatusBadRequest)
			return
		}
		select {
		case steps <- s:
			w.WriteHeader(http.StatusNoContent)
		case <-r.Context().Done():
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String()
}

func TestIntegrationThirdPartyBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	chromium := lookTool(t, "chromium", "chromium-browser")
	for _, engine := range thirdPartyEngines(t) {
		t.Run(engine, func(t *testing.T) {
			steps := make(chan progress, 16)
			origin := pageServer(t, steps)
			// control answers CORS for the page's origin: the page calls /v1/connect cross-origin.
			d, wsAddr := deployWS(t, engine, "--cors-origins", origin)
			device := "browser-" + engine
			q := url.Values{"control": {d.ControlURL}, "app": {d.App}, "secret": {d.Secret}, "device": {device},
				"user": {"u-" + device}, "ws_path": {"/ws"}}
			page := origin + "/index.html?" + q.Encode()
			cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--enable-logging=stderr",
				"--user-data-dir="+t.TempDir(), page)
			p := startClient(t, "chromium", cmd, steps, false)
			p.wait("loaded")
			pushAndCheckAck(t, p, d, wsAddr, device, "héllo from a browser ✓ "+engine)
		})
	}
}

func TestIntegrationThirdPartyNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	node := nodeTool(t)
	for _, engine := range thirdPartyEngines(t) {
		t.Run(engine, func(t *testing.T) {
			d, wsAddr := deployWS(t, engine)
			device := "node-" + engine
			cmd := exec.Command(node, "node-client.js", "--control", d.ControlURL, "--app", d.App,
				"--secret", d.Secret, "--device", device, "--user", "u-"+device, "--ws-path", "/ws",
				"--timeout", fmt.Sprint(int(thirdPartyBound/time.Second)))
			cmd.Dir = thirdPartyPath(t, ".")
			p := startClient(t, "node", cmd, make(chan progress, 16), true)
			p.wait("loaded")
			pushAndCheckAck(t, p, d, wsAddr, device, "héllo from node ✓ "+engine)
			select {
			case <-p.exited:
				if p.waitErr != nil {
					p.fail("exit status after the push: %v", p.waitErr)
				}
			case <-time.After(10 * time.Second):
				p.fail("still running 10s after reporting done")
			}
		})
	}
}

// readSteps turns the Node client's stdout (one JSON report a line) into steps; a line that is
// not a report goes to the client's stderr tail, to be shown on failure.
func readSteps(r io.Reader, steps chan<- progress, other io.Writer) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var s progress
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil || s.Step == "" {
			_, _ = fmt.Fprintf(other, "stdout: %s\n", sc.Bytes())
			continue
		}
		steps <- s
	}
}

// TestThirdPartyFrameCodec checks pushwire.js against core/frame in both directions: frames the
// JavaScript encoder writes are the bytes core/frame writes, and the JavaScript decoder reads
// core/frame's frames, meta and bodies included.
func TestThirdPartyFrameCodec(t *testing.T) {
	node := lookTool(t, "node", "nodejs")
	frames := []frame.Frame{
		{Header: frame.Header{Type: frame.TypeLogin, Seq: 1}, Meta: frame.AppendMetaString(frame.AppendMetaString(nil, "token", "t.o.k"), "device", "dév-1")},
		{Header: frame.Header{Type: frame.TypePush, Flags: frame.FlagAck, Biz: 65535, Seq: 0xfffffffe},
			Meta: frame.AppendMetaString(frame.AppendMetaString(nil, "id", "m-1"), "group", "g"), Body: []byte("héllo ✓")},
		{Header: frame.Header{Type: frame.TypePushAck, Biz: 7}, Meta: frame.AppendMetaString(nil, "id", "m-1")},
		{Header: frame.Header{Type: frame.TypePing, Seq: 9}},
		{Header: frame.Header{Type: frame.TypeError, Code: frame.CodeBadFrame}, Meta: frame.AppendMetaString(nil, "msg", "text message")},
		{Header: frame.Header{Type: frame.TypeRequest, Biz: 1, Seq: 3}, Body: bytes.Repeat([]byte{0, 1, 2, 0xff}, 1000)},
	}
	type jsFrame struct {
		Type  uint8             `json:"type"`
		Flags uint8             `json:"flags"`
		Code  uint8             `json:"code"`
		Biz   uint16            `json:"biz"`
		Seq   uint32            `json:"seq"`
		Meta  [][2]string       `json:"meta"` // key, value as hex
		Body  string            `json:"body"` // hex
		Dec   map[string]string `json:"dec,omitempty"`
	}
	var in []jsFrame
	var want []string
	for _, f := range frames {
		jf := jsFrame{Type: uint8(f.Type), Flags: uint8(f.Flags), Code: uint8(f.Code), Biz: f.Biz, Seq: f.Seq, Body: hex.EncodeToString(f.Body), Meta: [][2]string{}}
		f.Meta.Range(func(k, v []byte) bool {
			jf.Meta = append(jf.Meta, [2]string{string(k), hex.EncodeToString(v)})
			return true
		})
		in = append(in, jf)
		want = append(want, hex.EncodeToString(frame.Append(nil, &f)))
	}
	// The script encodes each frame from its fields and decodes core/frame's bytes back to fields.
	script := `
const p = require(process.argv[1]);
const input = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
const out = input.frames.map((f, i) => {
  const enc = p.hex(p.encode({type: f.type, flags: f.flags, code: f.code, biz: f.biz, seq: f.seq,
    meta: f.meta.map(([k, v]) => [k, Buffer.from(v, 'hex')]), body: Buffer.from(f.body, 'hex')}));
  const d = p.decode(Buffer.from(input.wire[i], 'hex'));
  return {enc, dec: {type: d.type, flags: d.flags, code: d.code, biz: d.biz, seq: d.seq,
    meta: Array.from(d.meta, ([k, v]) => [k, p.hex(v)]), body: p.hex(d.body)}};
});
let bad = [];
for (const b of [new Uint8Array(17), Buffer.from('GET / HTTP/1.1\r\n\r\n'), Buffer.from(input.wire[1], 'hex').subarray(0, 30)]) {
  try { p.decode(b); bad.push('accepted'); } catch (e) { bad.push(e.message); }
}
process.stdout.write(JSON.stringify({out, bad}));
`
	input, _ := json.Marshal(map[string]any{"frames": in, "wire": want})
	cmd := exec.Command(node, "-e", script, thirdPartyPath(t, "pushwire.js"))
	cmd.Stdin = bytes.NewReader(input)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var res struct {
		Out []struct {
			Enc string  `json:"enc"`
			Dec jsFrame `json:"dec"`
		} `json:"out"`
		Bad []string `json:"bad"`
	}
	if err := json.Unmarshal(out, &res); err != nil || len(res.Out) != len(frames) {
		t.Fatalf("node answered %q: %v", out, err)
	}
	for i := range frames {
		if res.Out[i].Enc != want[i] {
			t.Errorf("frame %d (%v): pushwire.js encodes\n%s\ncore/frame encodes\n%s", i, frames[i].Type, res.Out[i].Enc, want[i])
		}
		got, _ := json.Marshal(res.Out[i].Dec)
		exp, _ := json.Marshal(in[i])
		if !bytes.Equal(got, exp) {
			t.Errorf("frame %d (%v): pushwire.js decodes\n%s\nwant\n%s", i, frames[i].Type, got, exp)
		}
	}
	for i, msg := range res.Bad {
		if msg == "accepted" || !strings.HasPrefix(msg, "pushwire: ") {
			t.Errorf("malformed input %d: decode gave %q, want a pushwire error", i, msg)
		}
	}
	if len(res.Bad) != 3 {
		t.Errorf("malformed inputs: %d results, want 3", len(res.Bad))
	}
}
