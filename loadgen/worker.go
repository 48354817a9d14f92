package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/client"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/internal/transport"
)

// A worker is one process of the load generator: it holds a slice of the devices, [Lo, Hi) of
// the run's indexes, and does what the coordinator asks over a small HTTP API on 127.0.0.1
// (JSON in and out):
//
//	POST /ramp      {rate, timeout_ms}          connect the slice at rate; answers when done
//	POST /track     {phase, msgs, fanout}       start a delivery phase: reset the histogram
//	                                            and the record of which deliveries arrived
//	POST /upstream  {rate, duration_ms, biz, senders}  send REQUESTs from the slice
//	POST /join      {biz, group_size}           JOIN each client to group lg-g<index/size>
//	GET  /status                                counts now (connected, delivered, disconnects…)
//	GET  /collect                               the phase's counts and HDR histogram snapshots
//	                                            (latency from the intended and the actual sends)
//	GET  /tick                                  counts now, and the histogram of the deliveries
//	                                            since the last tick (the per-second series)
//	POST /reconnect {close, count, rate, …}     the connect workload (worker_connect.go)
//	POST /close                                 close every connection
//	GET  /metrics                               the worker's Prometheus metrics
//
// The worker reads its WorkerSpec as one JSON line on stdin, answers with one JSON line
// {"addr": "127.0.0.1:port"} on stdout, and runs until stdin ends (the coordinator closed it or
// died) or its context ends.

// WorkerSpec is what a worker is told at its start.
type WorkerSpec struct {
	Index        int      `json:"index"`
	Lo           int      `json:"lo"` // first device index of the slice
	Hi           int      `json:"hi"` // one past the last
	ControlURL   string   `json:"control_url"`
	App          string   `json:"app"`
	Secret       string   `json:"secret"`
	DevicePrefix string   `json:"device_prefix"`
	Sources      []string `json:"sources,omitempty"`
	PushBiz      uint16   `json:"push_biz"`
	LogLevel     string   `json:"log_level,omitempty"`
	Transport    string   `json:"transport,omitempty"` // default tcp
	CAPEM        []byte   `json:"ca_pem,omitempty"`    // roots for tls, wss and quic; default the system's
	WSOrigin     string   `json:"ws_origin,omitempty"`
	WSPath       string   `json:"ws_path,omitempty"` // default /ws
}

func (s *WorkerSpec) validate() error {
	switch {
	case s.Lo < 0 || s.Hi <= s.Lo:
		return fmt.Errorf("loadgen worker: device slice [%d, %d) is empty", s.Lo, s.Hi)
	case s.Hi-s.Lo > MaxConnsPerWorker:
		return fmt.Errorf("loadgen worker: %d devices, at most %d per worker", s.Hi-s.Lo, MaxConnsPerWorker)
	case s.ControlURL == "" || s.App == "" || s.Secret == "" || s.DevicePrefix == "":
		return errors.New("loadgen worker: control_url, app, secret and device_prefix are required")
	}
	for _, src := range s.Sources {
		if net.ParseIP(src) == nil {
			return fmt.Errorf("loadgen worker: source address %q is not an IP", src)
		}
	}
	if s.Transport != "" && !transport.Known(s.Transport) {
		return fmt.Errorf("loadgen worker: transport %q: want one of %s", s.Transport, strings.Join(transport.Protocols, ", "))
	}
	if len(s.CAPEM) > 0 {
		if _, err := certPool(s.CAPEM); err != nil {
			return fmt.Errorf("loadgen worker: ca_pem: %w", err)
		}
	}
	if s.WSPath != "" && s.WSPath[0] != '/' {
		return fmt.Errorf("loadgen worker: ws_path %q does not start with /", s.WSPath)
	}
	return nil
}

// MaxConnsPerWorker bounds one worker's connections: a process may hold 20,000 open files, and
// a worker needs some for its HTTP clients and listener.
const MaxConnsPerWorker = 15_000

// worker API messages.
type (
	rampReq struct {
		Rate      float64 `json:"rate"`
		TimeoutMS int64   `json:"timeout_ms"`
	}
	rampAns struct {
		Connected int64            `json:"connected"`
		Errors    map[string]int64 `json:"errors,omitempty"`
		// StartNS is when the worker's connect schedule began and LastSentNS when its last
		// connect started (unix ns): the rate the ramp was sent at.
		StartNS    int64 `json:"start_ns,omitempty"`
		LastSentNS int64 `json:"last_sent_ns,omitempty"`
	}
	trackReq struct {
		Phase  string `json:"phase"`
		Msgs   int    `json:"msgs"`
		Fanout bool   `json:"fanout"` // a message goes to many devices: track (message, device)
		// Batch > 1: each message (push API call) seq goes to the Batch devices
		// (seq*Batch+k) mod Conns, k < Batch; Msgs counts (call, device) pairs.
		Batch int `json:"batch,omitempty"`
		Conns int `json:"conns,omitempty"`
	}
	upstreamReq struct {
		Rate       float64 `json:"rate"`
		DurationMS int64   `json:"duration_ms"`
		Biz        uint16  `json:"biz"`
		Senders    int     `json:"senders"`
	}
	upstreamAns struct {
		Sent   int64 `json:"sent"`
		OK     int64 `json:"ok"`
		Failed int64 `json:"failed"`
		// LastSentNS is when the last request went out (unix ns; 0: none did): with the phase
		// start it gives the rate the requests were actually sent at.
		LastSentNS int64 `json:"last_sent_ns,omitempty"`
	}
	joinReq struct {
		Biz       uint16 `json:"biz"`
		GroupSize int    `json:"group_size"`
	}
	joinAns struct {
		Failed int64 `json:"failed"`
	}
	workerStatus struct {
		Connected   int64 `json:"connected"`
		Delivered   int64 `json:"delivered"`
		Dups        int64 `json:"dups"`
		Disconnects int64 `json:"disconnects"` // lost connections the worker did not close, since start
		Requests    int64 `json:"requests"`    // upstream REQUESTs sent, since start
	}
	tickAns struct {
		workerStatus
		Hist *hdrhistogram.Snapshot `json:"hist"` // deliveries since the last tick
	}
	collectAns struct {
		workerStatus
		LastRecvNS int64                  `json:"last_recv_ns"`
		Errors     map[string]int64       `json:"errors,omitempty"`
		Hist       *hdrhistogram.Snapshot `json:"hist"` // latency from the intended send times
		// HistUncorrected is the latency from the actual send times (see results.Phase).
		HistUncorrected *hdrhistogram.Snapshot `json:"hist_uncorrected"`
	}
)

// worker is the state of one worker process.
type worker struct {
	spec WorkerSpec
	log  *slog.Logger
	http *http.Client // control calls

	clients     []*client.Client // index i is device Lo+i
	connected   atomic.Int64
	disconnects atomic.Int64
	closing     atomic.Bool

	errMu  sync.Mutex
	errors map[string]int64
	logged map[string]bool // connect failure reasons already logged (one example of each)

	histMu    sync.Mutex
	hist      *hdrhistogram.Histogram // from each message's intended send time (corrected)
	histU     *hdrhistogram.Histogram // from its actual send time (uncorrected)
	requests  atomic.Int64            // upstream REQUESTs sent
	tr        atomic.Pointer[tracker]
	delivered atomic.Int64
	dups      atomic.Int64
	lastRecv  atomic.Int64

	// tick is the latency of the deliveries since the last GET /tick: the coordinator reads it
	// every second for the phase's time series.
	tickMu sync.Mutex
	tick   *hdrhistogram.Histogram

	m *metrics

	proto string      // the clients' transport
	tls   *tls.Config // the clients' roots, nil for the system's
}

func newWorker(spec WorkerSpec, log *slog.Logger) *worker {
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	w := &worker{
		spec:   spec,
		log:    log,
		http:   &http.Client{Transport: tr, Timeout: 30 * time.Second},
		errors: map[string]int64{},
		hist:   newHist(),
		histU:  newHist(),
		tick:   newHist(),
	}
	w.m = newMetrics(spec.Hi-spec.Lo, w.connected.Load)
	w.proto = spec.Transport
	if w.proto == "" {
		w.proto = transport.TCP
	}
	if len(spec.CAPEM) > 0 {
		pool, _ := certPool(spec.CAPEM) // validate checked it
		w.tls = &tls.Config{RootCAs: pool}
	}
	return w
}

func newHist() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, (5 * time.Minute).Microseconds(), 3)
}

// ServeWorker runs one worker: it reads the WorkerSpec from in, writes its API address to out,
// and serves until in ends or ctx does. Logs go to logw.
func ServeWorker(ctx context.Context, in io.Reader, out io.Writer, logw io.Writer) error {
	br := bufio.NewReader(in)
	line, err := br.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return fmt.Errorf("loadgen worker: reading the spec on stdin: %w", err)
	}
	var spec WorkerSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fmt.Errorf("loadgen worker: spec: %w", err)
	}
	if err := spec.validate(); err != nil {
		return err
	}
	var lv slog.Level
	if spec.LogLevel != "" {
		if err := lv.UnmarshalText([]byte(spec.LogLevel)); err != nil {
			return fmt.Errorf("loadgen worker: log_level %q: %w", spec.LogLevel, err)
		}
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: lv})).With("worker", spec.Index)
	w := newWorker(spec, log)
	defer w.closeAll()
	stopRoll := w.m.rollEvery(LatencyWindow)
	defer stopRoll()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("loadgen worker: listener: %w", err)
	}
	srv := &http.Server{Handler: w.handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	hello, _ := json.Marshal(map[string]string{"addr": ln.Addr().String()})
	if _, err := out.Write(append(hello, '\n')); err != nil {
		_ = srv.Close()
		return fmt.Errorf("loadgen worker: writing the address: %w", err)
	}
	// The coordinator closes stdin to end the worker (and stdin ends when it dies).
	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, br)
		close(eof)
	}()
	select {
	case <-eof:
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("loadgen worker: API listener: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	return nil
}

func (w *worker) handler() http.Handler {
	mux := http.NewServeMux()
	handle := func(pattern string, f func(ctx context.Context, body []byte) (any, error)) {
		mux.HandleFunc(pattern, func(rw http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
			var out any
			if err == nil {
				out, err = f(r.Context(), body)
			}
			rw.Header().Set("Content-Type", "application/json")
			if err != nil {
				rw.WriteHeader(http.StatusInternalServerError)
				_ = json.NewEncoder(rw).Encode(map[string]string{"error": err.Error()})
				return
			}
			_ = json.NewEncoder(rw).Encode(out)
		})
	}
	decode := func(body []byte, v any) error {
		if err := json.Unmarshal(body, v); err != nil {
			return fmt.Errorf("loadgen worker: request body: %w", err)
		}
		return nil
	}
	handle("POST /ramp", func(ctx context.Context, b []byte) (any, error) {
		var req rampReq
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		return w.ramp(ctx, req)
	})
	handle("POST /track", func(_ context.Context, b []byte) (any, error) {
		var req trackReq
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		w.startTracking(req)
		return struct{}{}, nil
	})
	handle("POST /upstream", func(ctx context.Context, b []byte) (any, error) {
		var req upstreamReq
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		return w.upstream(ctx, req), nil
	})
	handle("POST /join", func(ctx context.Context, b []byte) (any, error) {
		var req joinReq
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		if req.GroupSize <= 0 {
			return nil, errors.New("loadgen worker: join: group_size must be positive")
		}
		return w.join(ctx, req), nil
	})
	handle("POST /reconnect", func(ctx context.Context, b []byte) (any, error) {
		var req reconnectReq
		if err := decode(b, &req); err != nil {
			return nil, err
		}
		return w.reconnect(ctx, req)
	})
	handle("GET /status", func(context.Context, []byte) (any, error) { return w.status(), nil })
	handle("GET /collect", func(context.Context, []byte) (any, error) { return w.collect(), nil })
	handle("GET /tick", func(context.Context, []byte) (any, error) { return w.takeTick(), nil })
	handle("POST /close", func(context.Context, []byte) (any, error) {
		w.closeAll()
		return w.status(), nil
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.m.reg, promhttp.HandlerOpts{}))
	return mux
}

func (w *worker) status() workerStatus {
	return workerStatus{
		Connected:   w.connected.Load(),
		Delivered:   w.delivered.Load(),
		Dups:        w.dups.Load(),
		Disconnects: w.disconnects.Load(),
		Requests:    w.requests.Load(),
	}
}

func (w *worker) countErr(reason string) {
	w.errMu.Lock()
	w.errors[reason]++
	w.errMu.Unlock()
	w.m.countErr(reason)
}

// connectFailed counts a failed connect of client i by reason and logs the first one of each
// reason, so that an "other" can be told apart.
func (w *worker) connectFailed(i int, err error) {
	reason := errReason(err)
	w.countErr(reason)
	w.errMu.Lock()
	first := !w.logged[reason]
	if first {
		if w.logged == nil {
			w.logged = map[string]bool{}
		}
		w.logged[reason] = true
	}
	w.errMu.Unlock()
	if first {
		w.log.Warn("connect failed (the first of this reason)", "reason", reason,
			"device", w.spec.DevicePrefix+strconv.Itoa(w.spec.Lo+i), "err", err)
	}
}

func (w *worker) takeErrors() map[string]int64 {
	w.errMu.Lock()
	defer w.errMu.Unlock()
	if len(w.errors) == 0 {
		return nil
	}
	m := w.errors
	w.errors = map[string]int64{}
	return m
}

// dialer dials from the worker's source addresses in turn, when it has any.
func (w *worker) dialer(i int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if src := w.spec.Sources; len(src) > 0 {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(src[i%len(src)])}
		// Let the kernel pick the port at connect time, per destination, instead of at bind:
		// without it one source address is capped near 28k connections in all.
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
			})
			if err != nil {
				return err
			}
			return serr
		}
	}
	return d.DialContext
}

func (w *worker) newClient(i int) (*client.Client, error) {
	dev := w.spec.Lo + i
	var local string // QUIC's source address, in turn as the TCP dialer's
	if src := w.spec.Sources; len(src) > 0 && w.proto == transport.QUIC {
		local = src[i%len(src)]
	}
	return client.New(client.Config{
		ControlURL: w.spec.ControlURL,
		App:        w.spec.App,
		Secret:     w.spec.Secret,
		Device:     w.spec.DevicePrefix + strconv.Itoa(dev),
		User:       "u" + strconv.Itoa(dev),
		Platform:   platformOf(w.proto),
		HTTPClient: w.http,
		Dial:       w.dialer(i),
		Transports: []string{w.proto},
		TLS:        w.tls,
		WSPath:     w.spec.WSPath,
		Origin:     w.spec.WSOrigin,
		LocalAddr:  local,
		OnPush:     func(p client.Push) { w.onPush(i, p) },
		OnState: func(st client.State, err error) {
			w.m.onState(st, err)
			switch st {
			case client.Connected:
				w.connected.Add(1)
			case client.Disconnected:
				w.connected.Add(-1)
				if !w.closing.Load() {
					w.disconnects.Add(1)
					w.log.Warn("connection lost", "device", w.spec.DevicePrefix+strconv.Itoa(dev), "err", err)
				}
			case client.Idle, client.Connecting, client.Closed:
				// not a change of what is connected
			}
		},
		Logger: w.log,
	})
}

// ramp connects the worker's slice at req.Rate and answers once every connect has ended.
func (w *worker) ramp(ctx context.Context, req rampReq) (rampAns, error) {
	n := w.spec.Hi - w.spec.Lo
	if w.clients != nil {
		return rampAns{}, errors.New("loadgen worker: ramp: already ramped")
	}
	if req.Rate <= 0 {
		return rampAns{}, errors.New("loadgen worker: ramp: rate must be positive")
	}
	w.clients = make([]*client.Client, n)
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = time.Duration(float64(n)/req.Rate*float64(time.Second)) + time.Minute
	}
	rampCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	start := time.Now()
	var lastSent atomic.Int64
	if err := w.connectEach(rampCtx, idx, req.Rate, start, func(_ int, _, actual, _ time.Time, _ error) {
		for ns := actual.UnixNano(); ; {
			old := lastSent.Load()
			if ns <= old || lastSent.CompareAndSwap(old, ns) {
				break
			}
		}
	}); err != nil {
		return rampAns{}, err
	}
	return rampAns{Connected: w.connected.Load(), Errors: w.takeErrors(), StartNS: start.UnixNano(), LastSentNS: lastSent.Load()}, nil
}

// closeAll closes every connection (the disconnects it causes are not counted as unexpected).
func (w *worker) closeAll() {
	w.closing.Store(true)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 256)
	for _, c := range w.clients {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Close()
			<-sem
		}()
	}
	wg.Wait()
}

// tracker records which deliveries of a phase arrived at this worker's devices. Unicast
// (stride 1): one flag per message. Fan-out: one per (message, local device).
type tracker struct {
	got    []atomic.Bool
	stride int
	// batch, conns and lo: a batch push (batch > 1) sends message seq to devices
	// (seq*batch+k) mod conns; this worker's device i is lo+i.
	batch, conns, lo int
}

// index returns the flag of message seq at local device i, or -1 when the message was not
// meant for it.
func (t *tracker) index(seq, local int) int {
	switch {
	case t.batch > 1:
		k := ((t.lo+local-seq*t.batch)%t.conns + t.conns) % t.conns
		if k >= t.batch {
			return -1
		}
		return seq*t.batch + k
	case t.stride == 1:
		return seq
	}
	return seq*t.stride + local
}

func (w *worker) startTracking(req trackReq) {
	stride := 1
	if req.Fanout {
		stride = w.spec.Hi - w.spec.Lo
	}
	w.histMu.Lock()
	w.hist = newHist()
	w.histU = newHist()
	w.histMu.Unlock()
	tr := &tracker{got: make([]atomic.Bool, max(req.Msgs, 0)*stride), stride: stride}
	if req.Batch > 1 && req.Conns > 0 {
		tr.batch, tr.conns, tr.lo = req.Batch, req.Conns, w.spec.Lo
	}
	w.tr.Store(tr)
	w.delivered.Store(0)
	w.dups.Store(0)
	w.lastRecv.Store(0)
	_ = w.takeErrors()
}

const payloadPrefix = "pwlg:"

// errBadPayload is the reason a delivery whose payload has the load generator's prefix but not
// its format is counted under (see parsePayload).
const errBadPayload = "bad_payload"

// parsePayload reads a payload the load generator pushed, "pwlg:<seq>:<intended send time>:<actual
// send time>" (times in unix ns): the message's sequence number in its phase, when the schedule
// meant it to go out, and when the push API call that carries it went out. Anything else is an
// error, the older "pwlg:<seq>:<intended>" included: its latency cannot be told both ways.
func parsePayload(b []byte) (seq int, intended, actual int64, err error) {
	rest, ok := bytes.CutPrefix(b, []byte(payloadPrefix))
	if !ok {
		return 0, 0, 0, errors.New("loadgen: payload: no " + payloadPrefix + " prefix")
	}
	seqB, rest, ok1 := bytes.Cut(rest, []byte(":"))
	inB, acB, ok2 := bytes.Cut(rest, []byte(":"))
	if !ok1 || !ok2 {
		return 0, 0, 0, fmt.Errorf("loadgen: payload %.40q: want %s<seq>:<intended ns>:<actual ns>", b, payloadPrefix)
	}
	n, err := strconv.ParseUint(string(seqB), 10, 31)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("loadgen: payload seq %.20q: %w", seqB, err)
	}
	intended, err = strconv.ParseInt(string(inB), 10, 64)
	if err != nil || intended <= 0 {
		return 0, 0, 0, fmt.Errorf("loadgen: payload intended time %.24q: not a positive unix ns time", inB)
	}
	actual, err = strconv.ParseInt(string(acB), 10, 64)
	if err != nil || actual <= 0 {
		return 0, 0, 0, fmt.Errorf("loadgen: payload actual time %.24q: not a positive unix ns time", acB)
	}
	return int(n), intended, actual, nil
}

// onPush records a push to local device i (payload: see parsePayload). Payloads without the load
// generator's prefix are not its own and are left alone; one with the prefix that does not parse
// is counted as a bad_payload error.
func (w *worker) onPush(i int, p client.Push) {
	now := time.Now()
	if !bytes.HasPrefix(p.Payload, []byte(payloadPrefix)) {
		return
	}
	seq, intended, actual, err := parsePayload(p.Payload)
	if err != nil {
		w.countErr(errBadPayload)
		return
	}
	tr := w.tr.Load()
	if tr == nil {
		return
	}
	idx := tr.index(seq, i)
	if idx < 0 || idx >= len(tr.got) {
		return
	}
	if tr.got[idx].Swap(true) {
		w.dups.Add(1)
		return
	}
	w.record(now, time.Unix(0, intended), time.Unix(0, actual))
}

// record counts one delivery (or answered request) meant to go out at intended, sent at actual
// and arrived at now: the corrected latency runs from intended, the uncorrected from actual.
func (w *worker) record(now, intended, actual time.Time) {
	w.delivered.Add(1)
	w.lastRecv.Store(now.UnixNano())
	us := now.Sub(intended).Microseconds()
	usU := now.Sub(actual).Microseconds()
	w.histMu.Lock()
	_ = w.hist.RecordValue(max(us, 1))
	_ = w.histU.RecordValue(max(usU, 1))
	w.histMu.Unlock()
	w.tickMu.Lock()
	_ = w.tick.RecordValue(max(us, 1))
	w.tickMu.Unlock()
	w.m.observeLatency(us)
}

// takeTick returns the counts now and the latency histogram of the deliveries since the last
// call, and starts a new one.
func (w *worker) takeTick() tickAns {
	w.tickMu.Lock()
	h := w.tick
	w.tick = newHist()
	w.tickMu.Unlock()
	return tickAns{workerStatus: w.status(), Hist: h.Export()}
}

func (w *worker) collect() collectAns {
	w.histMu.Lock()
	snap, snapU := w.hist.Export(), w.histU.Export()
	w.histMu.Unlock()
	return collectAns{workerStatus: w.status(), LastRecvNS: w.lastRecv.Load(), Errors: w.takeErrors(),
		Hist: snap, HistUncorrected: snapU}
}

// upstream sends req.Rate REQUESTs per second for req.DurationMS from the slice's clients in
// turn, open loop: latency runs from each request's intended send time to its RESPONSE (and,
// uncorrected, from its actual send, just before Request).
func (w *worker) upstream(ctx context.Context, req upstreamReq) upstreamAns {
	total := int(req.Rate * float64(req.DurationMS) / 1000)
	var sent, ok, failed, lastSent atomic.Int64
	type job struct {
		seq int
		at  time.Time
	}
	jobs := make(chan job, max(total, 1))
	var wg sync.WaitGroup
	for range max(req.Senders, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := []byte("pwlg-request-0123456789abcdef")
			for j := range jobs {
				c := w.clients[j.seq%len(w.clients)]
				rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				actual := time.Now()
				w.requests.Add(1)
				storeMax(&lastSent, actual.UnixNano())
				r, err := c.Request(rctx, req.Biz, nil, body)
				cancel()
				sent.Add(1)
				switch {
				case err != nil:
					w.countErr("request_" + errReason(err))
					continue // neither answered nor refused: counted missing
				case r.Code != frame.CodeOK:
					failed.Add(1)
					w.countErr("response_" + r.Code.String())
					continue
				}
				ok.Add(1)
				w.record(time.Now(), j.at, actual)
			}
		}()
	}
	if total > 0 && len(w.clients) > 0 {
		n := 0
		for at := range (Pacer{Rate: req.Rate, Count: total}).Run(ctx, time.Now()) {
			jobs <- job{seq: n, at: at}
			n++
		}
	}
	close(jobs)
	wg.Wait()
	return upstreamAns{Sent: sent.Load(), OK: ok.Load(), Failed: failed.Load(), LastSentNS: lastSent.Load()}
}

// storeMax raises a to v when v is greater.
func storeMax(a *atomic.Int64, v int64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}

// join sends a JOIN from every client of the slice to group lg-g<device index / size>.
func (w *worker) join(ctx context.Context, req joinReq) joinAns {
	var wg sync.WaitGroup
	var failed atomic.Int64
	sem := make(chan struct{}, 256)
	for i, c := range w.clients {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			r, err := c.Join(jctx, req.Biz, groupName(w.spec.Lo+i, req.GroupSize))
			if err != nil || r.Code != frame.CodeOK {
				failed.Add(1)
				w.countErr("join")
			}
		}()
	}
	wg.Wait()
	return joinAns{Failed: failed.Load()}
}

// groupName is the group phase's group of device index i.
func groupName(i, size int) string { return "lg-g" + strconv.Itoa(i/size) }
