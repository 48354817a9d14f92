// Package backend is the demo business server that the workbench and the tests put behind the
// gateway. It implements both sides of the backend contract (PROTOCOL.md "Backend contract"):
//
//	POST /echo    answers the request body as is, after an optional delay, or fails on purpose
//	POST /notify  the notification sink: counts connect and disconnect events per app and checks
//	              that each device's connection generations arrive in order
//	GET  /stats   the counts as JSON (Stats)
//	GET  /healthz "ok"
//	GET  /metrics Prometheus metrics of the above
//
// Each /echo request may override the configured delay and error rate, through the query
// (?delay=50ms, ?fail=1, ?error_rate=0.5) or through the request's meta as the gateway forwards it
// (headers Pushwire-Meta-Delay-Ms and Pushwire-Meta-Fail), so a test or a load scenario picks the
// backend's behaviour per request.
package backend

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
)

// Limits of the settings and of what a request may ask for.
const (
	MaxDelay          = time.Minute        // longest delay, configured or requested
	DefaultMaxBody    = frame.MaxBodyLimit // largest /echo body: the largest a gateway forwards
	DefaultMaxDevices = 1_000_000          // devices whose generation is tracked
	maxApps           = 1024               // apps counted by name; the rest count under otherApp
	otherApp          = "_other"           // the app name past maxApps
	failureBody       = "injected failure\n"
)

// Config configures a Server. The zero value of each field means its documented default.
type Config struct {
	// Delay is added before each /echo answer. Default 0; at most MaxDelay.
	Delay time.Duration
	// ErrorRate is the share of /echo requests answered 500, 0..1. Default 0.
	ErrorRate float64
	// MaxBody is the largest /echo body; a longer one is answered 413. Default 16 MiB.
	MaxBody int
	// MaxDevices bounds the devices whose latest generation is kept; events of further devices
	// are counted but not checked for order. Default 1,000,000.
	MaxDevices int
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.MaxDevices <= 0 {
		c.MaxDevices = DefaultMaxDevices
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Validate reports the first setting that cannot work, naming it.
func (c *Config) Validate() error {
	switch {
	case c.Delay < 0 || c.Delay > MaxDelay:
		return fmt.Errorf("backend: delay %v: must be 0..%v", c.Delay, MaxDelay)
	case !(c.ErrorRate >= 0 && c.ErrorRate <= 1): // also rejects NaN
		return fmt.Errorf("backend: error rate %v: must be 0..1", c.ErrorRate)
	}
	return nil
}

// Stats are the server's counts since it started, as GET /stats serves them.
type Stats struct {
	Requests    uint64 `json:"requests"`     // /echo requests answered (echoed or failed)
	Errors      uint64 `json:"errors"`       // /echo requests failed on purpose (500)
	BadRequests uint64 `json:"bad_requests"` // requests refused as malformed (400, 413) on any path
	BodyBytes   uint64 `json:"body_bytes"`   // bytes echoed

	Notifications NotifyStats         `json:"notifications"`
	Apps          map[string]AppStats `json:"apps"` // per app; past 1024 apps, under "_other"
	// OutOfOrder counts events whose generation contradicts the device's latest connect: a
	// connect not above it (a replay or reordering) or a disconnect above it (the disconnect of
	// a connection whose connect was not seen).
	OutOfOrder uint64 `json:"out_of_order"`
	// Devices is the number of devices whose latest generation is kept.
	Devices int `json:"devices"`
}

// NotifyStats count what /notify received.
type NotifyStats struct {
	Batches    uint64 `json:"batches"`    // batches accepted
	Rejected   uint64 `json:"rejected"`   // batches refused as malformed (nothing counted from them)
	Connect    uint64 `json:"connect"`    // connect events
	Disconnect uint64 `json:"disconnect"` // disconnect events
	Untracked  uint64 `json:"untracked"`  // events of devices past MaxDevices
}

// AppStats count one app's events.
type AppStats struct {
	Connect    uint64 `json:"connect"`
	Disconnect uint64 `json:"disconnect"`
}

// Server is the demo business server. It is safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger
	reg *prometheus.Registry
	mux *http.ServeMux

	requests, failed, bad, bodyBytes atomic.Uint64

	mu         sync.Mutex // guards what follows
	notify     NotifyStats
	apps       map[string]*AppStats
	gens       map[deviceKey]uint64 // latest connect generation per device
	outOfOrder uint64

	mEcho       *prometheus.CounterVec
	mEvents     *prometheus.CounterVec
	mBatches    *prometheus.CounterVec
	mOutOfOrder prometheus.Counter
}

type deviceKey struct{ app, device string }

// New returns a server for cfg.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:  cfg,
		log:  cfg.Logger,
		reg:  prometheus.NewRegistry(),
		mux:  http.NewServeMux(),
		apps: make(map[string]*AppStats),
		gens: make(map[deviceKey]uint64),
		mEcho: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushwire_backend_echo_requests_total",
			Help: "Echo requests by result: ok, error (failed on purpose), bad (refused).",
		}, []string{"result"}),
		mEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushwire_backend_notify_events_total",
			Help: "Connection events received, by type.",
		}, []string{"type"}),
		mBatches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pushwire_backend_notify_batches_total",
			Help: "Notification batches by result: ok, bad (refused).",
		}, []string{"result"}),
		mOutOfOrder: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "pushwire_backend_out_of_order_total",
			Help: "Events whose connection generation contradicts the device's latest connect.",
		}),
	}
	devices := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "pushwire_backend_devices",
		Help: "Devices whose latest connection generation is tracked.",
	}, func() float64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return float64(len(s.gens))
	})
	s.reg.MustRegister(s.mEcho, s.mEvents, s.mBatches, s.mOutOfOrder, devices,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	s.mux.HandleFunc("POST /echo", s.handleEcho)
	s.mux.HandleFunc("POST /notify", s.handleNotify)
	s.mux.HandleFunc("GET /stats", s.handleStats)
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return s, nil
}

// Handler serves every path of the server.
func (s *Server) Handler() http.Handler { return s.mux }

// Registry is the server's metrics registry, served on /metrics.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// Stats returns the counts so far.
func (s *Server) Stats() Stats {
	st := Stats{
		Requests: s.requests.Load(), Errors: s.failed.Load(), BadRequests: s.bad.Load(),
		BodyBytes: s.bodyBytes.Load(),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st.Notifications = s.notify
	st.OutOfOrder = s.outOfOrder
	st.Devices = len(s.gens)
	st.Apps = make(map[string]AppStats, len(s.apps))
	for app, a := range s.apps {
		st.Apps[app] = *a
	}
	return st
}

// Headers through which the gateway forwards a request's meta "delay-ms" and "fail".
const (
	HeaderDelayMs = forward.HeaderMetaPrefix + "Delay-Ms"
	HeaderFail    = forward.HeaderMetaPrefix + "Fail"
)

// handleEcho answers the body after the delay, or 500 when the request is picked to fail.
func (s *Server) handleEcho(w http.ResponseWriter, r *http.Request) {
	delay, fail, err := s.behaviour(r)
	if err != nil {
		s.refuse(w, s.mEcho, http.StatusBadRequest, err.Error())
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, int64(s.cfg.MaxBody)))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.refuse(w, s.mEcho, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", s.cfg.MaxBody))
			return
		}
		return // the client went away
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			return
		}
	}
	s.requests.Add(1)
	if fail {
		s.failed.Add(1)
		s.mEcho.WithLabelValues("error").Inc()
		http.Error(w, failureBody[:len(failureBody)-1], http.StatusInternalServerError)
		return
	}
	s.bodyBytes.Add(uint64(len(body)))
	s.mEcho.WithLabelValues("ok").Inc()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body) // a failed write means the caller has gone: nothing left to tell it
}

// behaviour decides the delay and whether to fail: the configuration, overridden by the query
// (delay, fail, error_rate), overridden by the meta headers (Delay-Ms, Fail).
func (s *Server) behaviour(r *http.Request) (time.Duration, bool, error) {
	delay, rate := s.cfg.Delay, s.cfg.ErrorRate
	var failSet, fail bool
	q := r.URL.Query()
	if v := q.Get("delay"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 || d > MaxDelay {
			return 0, false, fmt.Errorf("query delay %q: want a duration 0..%v", v, MaxDelay)
		}
		delay = d
	}
	if v := q.Get("error_rate"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || !(f >= 0 && f <= 1) {
			return 0, false, fmt.Errorf("query error_rate %q: want 0..1", v)
		}
		rate = f
	}
	if v := q.Get("fail"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return 0, false, fmt.Errorf("query fail %q: want true or false", v)
		}
		failSet, fail = true, b
	}
	if v := r.Header.Get(HeaderDelayMs); v != "" {
		ms, err := strconv.ParseUint(v, 10, 32)
		if err != nil || time.Duration(ms)*time.Millisecond > MaxDelay {
			return 0, false, fmt.Errorf("%s %q: want milliseconds 0..%d", HeaderDelayMs, v, MaxDelay.Milliseconds())
		}
		delay = time.Duration(ms) * time.Millisecond
	}
	if v := r.Header.Get(HeaderFail); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return 0, false, fmt.Errorf("%s %q: want true or false", HeaderFail, v)
		}
		failSet, fail = true, b
	}
	if !failSet {
		fail = rate > 0 && rand.Float64() < rate
	}
	return delay, fail, nil
}

// Limits of a notification batch.
const (
	MaxNotifyBody  = 8 << 20 // bytes
	MaxBatchEvents = 10_000  // events
)

// handleNotify applies one batch; a malformed batch is refused whole.
func (s *Server) handleNotify(w http.ResponseWriter, r *http.Request) {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxNotifyBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			s.rejectBatch()
			s.refuse(w, nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("batch over %d bytes", MaxNotifyBody))
		}
		return
	}
	events, err := DecodeBatch(data)
	if err != nil {
		s.rejectBatch()
		s.refuse(w, nil, http.StatusBadRequest, err.Error())
		return
	}
	s.apply(events)
	s.mBatches.WithLabelValues("ok").Inc()
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, "{\"accepted\":%d}\n", len(events)) // the events are applied whether or not the caller reads this
}

func (s *Server) rejectBatch() {
	s.mBatches.WithLabelValues("bad").Inc()
	s.mu.Lock()
	s.notify.Rejected++
	s.mu.Unlock()
}

// apply counts events and checks each device's generations.
func (s *Server) apply(events []forward.Event) {
	var connects, disconnects, outOfOrder float64
	s.mu.Lock()
	s.notify.Batches++
	for _, ev := range events {
		app := ev.App
		a := s.apps[app]
		if a == nil {
			if len(s.apps) >= maxApps {
				app = otherApp
			}
			if a = s.apps[app]; a == nil {
				a = new(AppStats)
				s.apps[app] = a
			}
		}
		key := deviceKey{ev.App, ev.Device}
		latest, known := s.gens[key]
		if !known && len(s.gens) >= s.cfg.MaxDevices {
			s.notify.Untracked++
		}
		track := known || len(s.gens) < s.cfg.MaxDevices
		switch ev.Type {
		case forward.EventConnect:
			s.notify.Connect++
			a.Connect++
			connects++
			if known && ev.Gen <= latest {
				s.outOfOrder++
				outOfOrder++
			}
			if track && (!known || ev.Gen > latest) {
				s.gens[key] = ev.Gen
			}
		case forward.EventDisconnect:
			s.notify.Disconnect++
			a.Disconnect++
			disconnects++
			if known && ev.Gen > latest {
				s.outOfOrder++
				outOfOrder++
			}
		}
	}
	s.mu.Unlock()
	s.mEvents.WithLabelValues(forward.EventConnect).Add(connects)
	s.mEvents.WithLabelValues(forward.EventDisconnect).Add(disconnects)
	s.mOutOfOrder.Add(outOfOrder)
}

// DecodeBatch parses one notification batch, the JSON object {"events": [...]} that a
// forward.Notifier posts, and checks every event: type "connect" or "disconnect", app and device
// present, at not negative; at most MaxBatchEvents events. Unknown fields are ignored (a newer
// gateway may add some); anything after the object is an error. The error says what is wrong and
// where (the event's index).
func DecodeBatch(data []byte) ([]forward.Event, error) {
	var b struct {
		Events *[]forward.Event `json:"events"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&b); err != nil {
		return nil, fmt.Errorf("backend: malformed batch: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("backend: malformed batch: data after the JSON object")
	}
	if b.Events == nil {
		return nil, errors.New(`backend: malformed batch: no "events" array`)
	}
	events := *b.Events
	if len(events) > MaxBatchEvents {
		return nil, fmt.Errorf("backend: batch of %d events: at most %d", len(events), MaxBatchEvents)
	}
	for i, ev := range events {
		switch {
		case ev.Type != forward.EventConnect && ev.Type != forward.EventDisconnect:
			return nil, fmt.Errorf("backend: event %d: type %q: want %q or %q", i, ev.Type, forward.EventConnect, forward.EventDisconnect)
		case ev.App == "":
			return nil, fmt.Errorf("backend: event %d: app missing", i)
		case ev.Device == "":
			return nil, fmt.Errorf("backend: event %d: device missing", i)
		case ev.At < 0:
			return nil, fmt.Errorf("backend: event %d: at %d: negative", i, ev.At)
		}
	}
	return events, nil
}

// errorBody is the JSON error of every refused request.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// refuse answers a malformed request with a JSON error and counts it.
func (s *Server) refuse(w http.ResponseWriter, m *prometheus.CounterVec, status int, msg string) {
	s.bad.Add(1)
	if m != nil {
		m.WithLabelValues("bad").Inc()
	}
	s.log.Debug("request refused", "status", status, "msg", msg)
	kind := "bad_request"
	if status == http.StatusRequestEntityTooLarge {
		kind = "too_large"
	}
	writeJSON(w, status, errorBody{Error: kind, Message: msg})
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.Stats())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
