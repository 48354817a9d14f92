// Package control is pushwire's control layer: the app registry, token issue, and access-point
// and protocol dispatch. Every client starts with POST /v1/connect (PROTOCOL.md "Control API"):
// it proves it belongs to a registered app and gets a token, which every gateway verifies on its
// own (package token), the heartbeat interval, and the endpoints to try, in order.
//
// The endpoints come from the configured list (static, optionally watched through each gateway's
// /v1/stats) or, in a cluster, from the instance registry (WithRegistry); the dispatch policy
// (DispatchConfig: rules by platform, network and region, gray releases) picks the transports and
// their order, and the answer's reason says why. Connects are limited per source address and per
// device (LimitsConfig) and answered 429 past the limits. Browsers may call from the pages
// cors_origins allows (CORS).
//
// The same Config serves the gateways: Config.Verifier checks LOGIN tokens and
// Config.AppByPushKey authenticates the push API.
package control

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushwire/pushwire/control/token"
	"github.com/pushwire/pushwire/route"
)

// Connect request limits.
const (
	// MaxConnectBody is the largest POST /v1/connect body, in bytes.
	MaxConnectBody = 64 << 10
	// MaxIDLen is the longest device or user ID, in bytes.
	MaxIDLen = 128
	// MaxInfoLen is the longest platform, network or sdk value, in bytes.
	MaxInfoLen = 64
	// MaxClockSkew is how far a connect request's ts may be from the server's clock.
	MaxClockSkew = 5 * time.Minute
)

// Platforms with their own endpoint policy (ConnectRequest.Platform).
const (
	PlatformWeb = "web" // browsers: WebSocket only (see also PlatformMiniApp)
)

// Error codes of the connect API (ErrorResponse.Error), each with its HTTP status.
const (
	CodeMalformed        = "malformed_request"  // 400: not JSON, unknown field, wrong type, trailing data
	CodeBodyTooLarge     = "body_too_large"     // 400: body over MaxConnectBody
	CodeInvalidField     = "invalid_field"      // 400: app or device missing, an ID too long or with control characters
	CodeUnknownApp       = "unknown_app"        // 401
	CodeBadSign          = "bad_sign"           // 401: sign missing or wrong
	CodeStaleTS          = "stale_ts"           // 401: ts further than MaxClockSkew from now
	CodeAppDisabled      = "app_disabled"       // 403
	CodeMethodNotAllowed = "method_not_allowed" // 405
	CodeRateLimited      = "rate_limited"       // 429: connects faster than limits allow; Retry-After says when to try again
	CodeNoEndpoints      = "no_endpoints"       // 503: no endpoint serves the client's platform
	CodeInternal         = "internal"           // 500: a bug; never expected
)

// resultOK is the metrics result label of a successful connect; failures use their code.
const resultOK = "ok"

// ConnectRequest is the body of POST /v1/connect.
type ConnectRequest struct {
	App      string `json:"app"`      // required: a configured app ID
	Device   string `json:"device"`   // required: at most MaxIDLen bytes, no control characters
	User     string `json:"user"`     // optional: at most MaxIDLen bytes, no control characters
	Platform string `json:"platform"` // native, web, miniapp…; matched by the dispatch policy
	Network  string `json:"network"`  // wifi, 4g, 5g…; matched by the dispatch policy
	// Region is optional (an extension): the client's region, matched by the dispatch policy;
	// gateways of that region come first.
	Region string `json:"region,omitempty"`
	SDK    string `json:"sdk"`  // client SDK version
	TS     int64  `json:"ts"`   // unix seconds, within MaxClockSkew of the server's clock
	Sign   string `json:"sign"` // Sign(app secret, app, device, user, ts)
}

// ConnectResponse is the 200 answer of POST /v1/connect.
type ConnectResponse struct {
	Token      string     `json:"token"`          // opaque to the client; sent in LOGIN
	ExpiresAt  int64      `json:"expires_at"`     // unix seconds
	HeartbeatS int        `json:"heartbeat_s"`    // PING interval, seconds
	Endpoints  []Endpoint `json:"endpoints"`      // to try in order
	Reason     string     `json:"reason"`         // why these endpoints: the rule, gray releases, region (for humans)
	Node       string     `json:"node,omitempty"` // reserved: a preferred instance
}

// ErrorResponse is the body of every error answer.
type ErrorResponse struct {
	Error   string `json:"error"`   // one of the Code constants
	Message string `json:"message"` // for humans
}

// Sign is the connect proof: the lowercase hex HMAC-SHA256, keyed with the app's secret, of
// app, device, user and ts (decimal) joined by "\n".
func Sign(secret, app, device, user string, ts int64) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(app + "\n" + device + "\n" + user + "\n" + strconv.FormatInt(ts, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// Option configures a Server.
type Option func(*Server)

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(s *Server) {
		if l != nil {
			s.log = l
		}
	}
}

// WithClock sets the clock used for ts checks and token times. Default: time.Now.
func WithClock(now func() time.Time) Option {
	return func(s *Server) {
		if now != nil {
			s.now = now
		}
	}
}

// WithEndpoints replaces the configured endpoints (for example with ones given as flags). To
// add to them instead, pass append(cfg.Endpoints, more...). NewServer validates them.
func WithEndpoints(eps []Endpoint) Option {
	return func(s *Server) {
		s.endpoints = append([]Endpoint(nil), eps...)
		s.endpointsSet = true
	}
}

// WithMetrics registers the server's metrics with r: pushwire_control_connects_total{result},
// result being "ok" or an error code, and with WithRegistry
// pushwire_control_registry_reads_total{result} ("ok" or "error"). When r is also a prometheus.Gatherer (a
// *prometheus.Registry is), the handler serves it on GET /metrics.
func WithMetrics(r prometheus.Registerer) Option {
	return func(s *Server) { s.registerer = r }
}

// Server answers the control API. Create it with NewServer; it is safe for concurrent use.
type Server struct {
	cfg          *Config
	signer       *token.Signer
	endpoints    []Endpoint
	endpointsSet bool
	heartbeatS   int
	log          *slog.Logger
	now          func() time.Time
	registerer   prometheus.Registerer
	connects     *prometheus.CounterVec // nil without WithMetrics
	regReads     *prometheus.CounterVec // nil without WithMetrics
	handler      http.Handler

	// The dispatch policy, and CORS (nil: off).
	policy      *policy
	cors        *corsPolicy
	corsOrigins []string
	corsSet     bool

	// Connect limits; nil when off.
	limDevice, limSource *limiter
	limiterKeys          int
	trustForwarded       bool

	// The instance registry (WithRegistry); nil: the static endpoints.
	reg       route.Registry
	refresh   time.Duration
	view      atomic.Pointer[regView]
	refreshMu sync.Mutex
	regState  regState // guarded by refreshMu

	// down[i] is set while endpoint i has a Health URL and its gateway is draining or silent.
	// Every endpoint starts up; Watch keeps it current.
	down []atomic.Bool
	// load[i] is the sessions endpoint i's gateway held at the last probe (-1: not known), and
	// handed[i] the connect answers that put it first since then: together, its live load.
	load, handed []atomic.Int64
}

// NewServer returns a Server for a copy of cfg (validated, with defaults applied; cfg itself is
// not modified). The error wraps ErrInvalidConfig for a bad configuration or endpoint, or is the
// metrics registration error.
func NewServer(cfg *Config, opts ...Option) (*Server, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	s := &Server{cfg: cfg.clone(), log: slog.Default(), now: time.Now, limiterKeys: DefaultLimiterKeys}
	for _, o := range opts {
		o(s)
	}
	if err := s.cfg.Validate(); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if s.endpointsSet {
		if errs := validateEndpoints("WithEndpoints", s.endpoints); len(errs) > 0 {
			return nil, fmt.Errorf("control: %w", errors.Join(errs...))
		}
	} else {
		s.endpoints = s.cfg.Endpoints
	}
	if s.corsSet {
		if errs := checkOrigins("WithCORSOrigins", s.corsOrigins); len(errs) > 0 {
			return nil, fmt.Errorf("control: %w", errors.Join(errs...))
		}
	} else {
		s.corsOrigins = s.cfg.CORSOrigins
	}
	s.cors = newCORS(s.corsOrigins)
	s.policy = newPolicy(s.cfg.Dispatch)
	s.down = make([]atomic.Bool, len(s.endpoints))
	s.load = make([]atomic.Int64, len(s.endpoints))
	s.handed = make([]atomic.Int64, len(s.endpoints))
	for i := range s.load {
		s.load[i].Store(-1)
	}
	var err error
	if s.signer, err = s.cfg.signer(); err != nil {
		return nil, err
	}
	s.heartbeatS = int(s.cfg.Heartbeat / time.Second)
	s.limDevice = newLimiter(s.cfg.Limits.ConnectPerDevice, s.limiterKeys)
	s.limSource = newLimiter(s.cfg.Limits.ConnectPerSource, s.limiterKeys)
	s.trustForwarded = s.cfg.Limits.TrustForwardedFor
	if s.reg != nil && len(s.endpoints) > 0 {
		s.log.Info("control: dispatching from the instance registry; the configured endpoints are not handed out",
			"endpoints", len(s.endpoints))
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/v1/connect", s.serveConnect)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok")
	})
	if s.registerer != nil {
		if err := s.registerMetrics(); err != nil {
			return nil, err
		}
		if g, ok := s.registerer.(prometheus.Gatherer); ok {
			mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
		}
	}
	s.handler = mux
	return s, nil
}

func (s *Server) registerMetrics() error {
	cv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushwire_control_connects_total",
		Help: `Connect requests by result: "ok" or the error code.`,
	}, []string{"result"})
	cv, err := registerCounterVec(s.registerer, cv)
	if err != nil {
		return err
	}
	for _, r := range []string{resultOK, CodeMalformed, CodeBodyTooLarge, CodeInvalidField, CodeUnknownApp,
		CodeBadSign, CodeStaleTS, CodeAppDisabled, CodeMethodNotAllowed, CodeRateLimited, CodeNoEndpoints} {
		cv.WithLabelValues(r) // export zeros, so rates work from the first scrape
	}
	s.connects = cv
	if s.reg == nil {
		return nil
	}
	rv := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "pushwire_control_registry_reads_total",
		Help: `Reads of the instance registry by result: "ok" or "error".`,
	}, []string{"result"})
	rv, err = registerCounterVec(s.registerer, rv)
	if err != nil {
		return err
	}
	rv.WithLabelValues("ok")
	rv.WithLabelValues("error")
	s.regReads = rv
	return nil
}

// registerCounterVec registers cv, or returns the counter already registered under its name (another
// Server on the same registry shares it).
func registerCounterVec(reg prometheus.Registerer, cv *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	err := reg.Register(cv)
	if err == nil {
		return cv, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
			return existing, nil
		}
	}
	return nil, fmt.Errorf("control: register metrics: %w", err)
}

func (s *Server) countRead(ok bool) {
	if s.regReads == nil {
		return
	}
	if ok {
		s.regReads.WithLabelValues("ok").Inc()
	} else {
		s.regReads.WithLabelValues("error").Inc()
	}
}

// Handler serves POST /v1/connect, GET /healthz and, with WithMetrics and a Gatherer, GET /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// connectError is a rejected connect: its status, code and message go to the client.
type connectError struct {
	status     int
	code       string
	message    string
	retryAfter time.Duration // 429: sent as Retry-After, whole seconds rounded up
}

func reject(status int, code, format string, args ...any) *connectError {
	return &connectError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

// rateLimited is the 429 answer for a connect over limit what, retry from now.
func rateLimited(what string, retry time.Duration) *connectError {
	secs := max(int64((retry+time.Second-1)/time.Second), 1)
	cerr := reject(http.StatusTooManyRequests, CodeRateLimited,
		"too many connects %s: retry in %d s", what, secs)
	cerr.retryAfter = time.Duration(secs) * time.Second
	return cerr
}

func (s *Server) serveConnect(w http.ResponseWriter, r *http.Request) {
	if s.cors != nil {
		if r.Method == http.MethodOptions {
			s.cors.preflight(w, r)
			return
		}
		s.cors.header(w, r)
	}
	resp, req, cerr := s.connect(w, r)
	if cerr != nil {
		s.count(cerr.code)
		s.logReject(r, req, cerr)
		if cerr.status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
		if cerr.retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.FormatInt(int64(cerr.retryAfter/time.Second), 10))
		}
		writeJSON(w, cerr.status, ErrorResponse{Error: cerr.code, Message: cerr.message})
		return
	}
	s.count(resultOK)
	s.log.Debug("control: connect", "app", req.App, "device", req.Device, "user", req.User,
		"platform", req.Platform, "network", req.Network, "region", req.Region, "sdk", req.SDK,
		"endpoints", len(resp.Endpoints), "reason", resp.Reason)
	writeJSON(w, http.StatusOK, resp)
}

// connect handles one connect request. req is nil when the request did not decode, and its
// fields are only safe to log once validated (it is returned for logging only then).
func (s *Server) connect(w http.ResponseWriter, r *http.Request) (*ConnectResponse, *ConnectRequest, *connectError) {
	if r.Method != http.MethodPost {
		return nil, nil, reject(http.StatusMethodNotAllowed, CodeMethodNotAllowed, "use POST")
	}
	// Per source before reading the body: a flood costs no parsing.
	if src := sourceKey(r, s.trustForwarded); src != "" {
		if ok, retry := s.limSource.allow(src, s.now()); !ok {
			return nil, nil, rateLimited("from this address", retry)
		}
	}
	var req ConnectRequest
	if cerr := decodeJSON(w, r, &req); cerr != nil {
		return nil, nil, cerr
	}
	if cerr := checkRequest(&req); cerr != nil {
		return nil, nil, cerr
	}

	app, ok := s.cfg.App(req.App)
	if !ok {
		return nil, &req, reject(http.StatusUnauthorized, CodeUnknownApp, "unknown app %q", req.App)
	}
	now := s.now()
	skew := int64(MaxClockSkew / time.Second)
	if req.TS < now.Unix()-skew || req.TS > now.Unix()+skew {
		return nil, &req, reject(http.StatusUnauthorized, CodeStaleTS,
			"ts %d is more than %v away from the server's clock (%d)", req.TS, MaxClockSkew, now.Unix())
	}
	if !checkSign(app.Secret, &req) {
		return nil, &req, reject(http.StatusUnauthorized, CodeBadSign, "sign does not match the app, device, user and ts")
	}
	if app.Disabled {
		return nil, &req, reject(http.StatusForbidden, CodeAppDisabled, "app %q is disabled", req.App)
	}
	// Per device only once the sign is verified, so a forger cannot use up a real device's
	// allowance. The key is the app and device, separated by a byte no valid ID contains.
	if ok, retry := s.limDevice.allow(req.App+"\x00"+req.Device, now); !ok {
		return nil, &req, rateLimited("for this device", retry)
	}
	eps, reason := s.dispatch(now, &req)
	if len(eps) == 0 {
		return nil, &req, reject(http.StatusServiceUnavailable, CodeNoEndpoints, "%s", reason)
	}

	iat := now.Truncate(time.Second)
	claims := token.Claims{App: req.App, Device: req.Device, User: req.User,
		IssuedAt: iat, ExpiresAt: iat.Add(s.cfg.Token.TTL)}
	tok, err := s.signer.Sign(claims)
	if err != nil {
		s.log.Error("control: sign token", "app", req.App, "err", err)
		return nil, &req, reject(http.StatusInternalServerError, CodeInternal, "could not issue a token")
	}
	return &ConnectResponse{
		Token:      tok,
		ExpiresAt:  claims.ExpiresAt.Unix(),
		HeartbeatS: s.heartbeatS,
		Endpoints:  eps,
		Reason:     reason,
	}, &req, nil
}

// decodeJSON reads exactly one JSON object of at most MaxConnectBody bytes, without unknown
// fields, into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) *connectError {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxConnectBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Only whitespace may follow the object.
		if _, terr := dec.Token(); terr != io.EOF {
			err = terr
			if err == nil {
				err = errors.New("data after the JSON object")
			}
		}
	}
	if err == nil {
		return nil
	}
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return reject(http.StatusBadRequest, CodeBodyTooLarge, "body is over %d bytes", MaxConnectBody)
	}
	if errors.Is(err, io.EOF) {
		return reject(http.StatusBadRequest, CodeMalformed, "empty body: want a JSON object")
	}
	// encoding/json messages name the offending field or offset; an unknown field's name is
	// client input, so the message is bounded.
	return reject(http.StatusBadRequest, CodeMalformed, "body: %s", truncate(err.Error(), 200))
}

// checkRequest validates the request's shape (not its authenticity).
func checkRequest(req *ConnectRequest) *connectError {
	if req.App == "" {
		return reject(http.StatusBadRequest, CodeInvalidField, "app: missing")
	}
	if req.Device == "" {
		return reject(http.StatusBadRequest, CodeInvalidField, "device: missing")
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{
		{"app", req.App, MaxAppIDLen},
		{"device", req.Device, MaxIDLen},
		{"user", req.User, MaxIDLen},
		{"platform", req.Platform, MaxInfoLen},
		{"network", req.Network, MaxInfoLen},
		{"region", req.Region, MaxInfoLen},
		{"sdk", req.SDK, MaxInfoLen},
	} {
		if len(f.value) > f.max {
			return reject(http.StatusBadRequest, CodeInvalidField, "%s: %d bytes, at most %d", f.name, len(f.value), f.max)
		}
		if !printable(f.value) {
			return reject(http.StatusBadRequest, CodeInvalidField, "%s: contains control characters or invalid UTF-8", f.name)
		}
	}
	return nil
}

// printable reports whether s is valid UTF-8 without control characters (C0, DEL, C1).
func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// checkSign compares the request's sign with the expected one in constant time. Upper- and
// lowercase hex are accepted.
func checkSign(secret string, req *ConnectRequest) bool {
	if len(req.Sign) != 2*sha256.Size {
		return false
	}
	got, err := hex.DecodeString(req.Sign)
	if err != nil {
		return false
	}
	want, _ := hex.DecodeString(Sign(secret, req.App, req.Device, req.User, req.TS))
	return hmac.Equal(got, want)
}

// dispatch is the access-point policy: the endpoints a client gets, in order, and why (the
// reason goes into the answer and the log, and is the message of a 503 when there is none). The
// dispatch policy (DispatchConfig) picks the transports; the endpoints come from the live
// instances of the registry (registryUnits) or the configured endpoints whose gateway serves
// (liveUnits), ordered by verdict.arrange.
func (s *Server) dispatch(now time.Time, req *ConnectRequest) ([]Endpoint, string) {
	v := s.policy.decide(req.App, req.Device, req.Platform, req.Network, req.Region)
	var units []unit
	var source string
	if s.reg != nil {
		var err string
		units, source, err = s.registryUnits(now)
		if err != "" {
			return nil, err
		}
	} else {
		units = s.liveUnits()
		source = fmt.Sprintf("configured endpoints: %d of %d serving", len(units), len(s.endpoints))
	}
	eps := v.arrange(units)
	v.reason = append(v.reason, source)
	return eps, v.String()
}

// liveUnits is the configured endpoints whose gateway is serving (or not watched), in configured
// order, each with its load: for a watched one the sessions at the last probe (none before the
// first) plus the clients sent there since; -1 for an unwatched one (after the watched ones).
func (s *Server) liveUnits() []unit {
	live := make([]unit, 0, len(s.endpoints))
	for i, e := range s.endpoints {
		if s.down[i].Load() {
			continue
		}
		l := int64(-1)
		if e.Health != "" {
			// Not probed yet counts as empty: the clients sent there still spread the load.
			l = max(s.load[i].Load(), 0) + s.handed[i].Load()
		}
		live = append(live, unit{load: l, region: e.Region, group: e.Group,
			eps: []Endpoint{{Protocol: e.Protocol, Addr: e.Addr}}, handed: &s.handed[i]})
	}
	return live
}

// Watch polls GET /v1/stats of every endpoint that has a Health URL every interval until ctx
// ends. It leaves out of connect answers each endpoint whose gateway says it is draining (or
// answers an error), or that has not answered twice in a row (one lost probe is not an outage),
// and orders the others by the sessions they hold. It logs each change of serving state.
func (s *Server) Watch(ctx context.Context, interval time.Duration) {
	hc := &http.Client{Timeout: interval}
	t := time.NewTicker(interval)
	defer t.Stop()
	silent := make([]int, len(s.endpoints))
	for {
		for i, e := range s.endpoints {
			if e.Health == "" {
				continue
			}
			status, sessions := probe(ctx, hc, strings.TrimSuffix(e.Health, "/")+"/v1/stats")
			if ctx.Err() != nil {
				return
			}
			if status == 0 {
				silent[i]++
			} else {
				silent[i] = 0
			}
			if status == http.StatusOK {
				s.load[i].Store(sessions)
				s.handed[i].Store(0)
			}
			up := status == http.StatusOK || (status == 0 && silent[i] < 2 && !s.down[i].Load())
			if was := !s.down[i].Swap(!up); was != up {
				s.log.Info("control: endpoint readiness changed", "endpoint", e.Protocol+"://"+e.Addr, "serving", up)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe GETs a gateway's /v1/stats. It returns 200 and the sessions held when the gateway serves,
// 503 when it drains or answers an error or something else than its stats, 0 when it does not
// answer.
func probe(ctx context.Context, hc *http.Client, url string) (status int, sessions int64) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, 0
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, 0
	}
	defer resp.Body.Close()
	var st struct {
		State    string `json:"state"`
		Sessions int64  `json:"sessions"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&st) != nil ||
		st.State != "serving" {
		return http.StatusServiceUnavailable, 0
	}
	return http.StatusOK, st.Sessions
}

func (s *Server) count(result string) {
	if s.connects != nil {
		s.connects.WithLabelValues(result).Inc()
	}
}

// logReject logs one line per rejected connect: Debug for malformed requests, Info for failed
// authentication, Warn when there is no endpoint to give. Never the sign, a secret or a token;
// client-supplied fields only once validated.
func (s *Server) logReject(r *http.Request, req *ConnectRequest, cerr *connectError) {
	level := slog.LevelInfo
	switch {
	case cerr.status == http.StatusServiceUnavailable || cerr.status >= 500:
		level = slog.LevelWarn
	case cerr.status == http.StatusBadRequest || cerr.status == http.StatusMethodNotAllowed ||
		cerr.status == http.StatusTooManyRequests:
		level = slog.LevelDebug
	}
	ctx := r.Context()
	if !s.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("code", cerr.code), slog.String("remote", r.RemoteAddr)}
	if req != nil {
		attrs = append(attrs, slog.String("app", req.App), slog.String("device", req.Device),
			slog.String("platform", req.Platform))
	}
	attrs = append(attrs, slog.String("reason", cerr.message))
	s.log.LogAttrs(ctx, level, "control: connect rejected", attrs...)
}

// truncate shortens s to at most n bytes, on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do about it
}

// Instance is one gateway as GET /v1/instances lists it: a watched endpoint (Protocol, Addr), or
// with a registry a registered instance (ID, Engine, Endpoints, Draining, Handed, Updated, Expires).
type Instance struct {
	ID        string     `json:"id,omitempty"`
	Engine    string     `json:"engine,omitempty"`
	Protocol  string     `json:"protocol,omitempty"`
	Addr      string     `json:"addr,omitempty"`      // as clients reach it
	Endpoints []Endpoint `json:"endpoints,omitempty"` // a registered instance's access points
	Health    string     `json:"health"`              // the gateway's HTTP base URL (push API, stats, /metrics)
	Serving   bool       `json:"serving"`             // not draining and answering (registered: and not lapsed)
	Draining  bool       `json:"draining,omitempty"`
	Sessions  int64      `json:"sessions"`         // at the last probe or registration; -1 before the first probe
	Handed    int64      `json:"handed,omitempty"` // registered: clients sent there since its registration
	Updated   time.Time  `json:"updated,omitzero"`
	Expires   time.Time  `json:"expires,omitzero"`
}

// Instances lists the endpoints that have a health URL, with what the last probes saw; with a
// registry, the instances of its last reading, lapsed ones included (not serving).
func (s *Server) Instances() []Instance {
	if s.reg != nil {
		return s.registryInstances()
	}
	var out []Instance
	for i, e := range s.endpoints {
		if e.Health == "" {
			continue
		}
		out = append(out, Instance{Protocol: e.Protocol, Addr: e.Addr, Health: e.Health,
			Serving: !s.down[i].Load(), Sessions: s.load[i].Load()})
	}
	return out
}

// InstancesHandler serves GET /v1/instances: {"instances": [...]}, the gateways the control layer
// watches or reads from the registry. It names internal addresses: serve it on an operator's port (pushwire control
// --admin), never on the client-facing API.
func (s *Server) InstancesHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": CodeMethodNotAllowed, "message": "use GET"})
			return
		}
		list := s.Instances()
		if list == nil {
			list = []Instance{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"instances": list})
	})
}
