// Package forward is the gateway's upstream path. A Forwarder keeps one bounded worker pool per
// business (biz) and forwards each REQUEST to the business backend over HTTP keep-alive
// (docs/protocol.md "Backend contract"); a slow or dead business fills only its own queue and never
// delays another. A Notifier posts connection state changes to the businesses that ask for them.
//
// Goroutines: constructors start nothing. Forwarder.Start starts PoolSize workers per business
// and Notifier.Start one sender per notify URL; their Close stops and waits for them (and works
// without Start too). Locks: each pool's mu and the Notifier's mu only order a
// send on a queue against Close closing it; no lock is held while calling the backend, Done or
// Observe, and no two locks are ever held together.
//
// The package uses the standard library only; statistics are plain structs that the gateway turns
// into Prometheus metrics.
package forward

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/frame"
)

// Error is a Submit failure that goes on the wire: Code is the RESPONSE code the gateway answers
// with.
type Error struct {
	Code frame.Code
	Msg  string
}

func (e *Error) Error() string { return "forward: " + e.Msg }

// Errors returned by Submit. Each is an *Error, so errors.As yields the wire code; when Submit
// returns one of them the request was not forwarded and Done is never called.
var (
	ErrUnknownBiz = &Error{frame.CodeUnknownBiz, "unknown biz"}                            // no backend for the biz
	ErrBusy       = &Error{frame.CodeBusy, "busy: the business's queue is full"}           // queue full
	ErrClosed     = &Error{frame.CodeShuttingDown, "shutting down"}                        // Close was called
	ErrBadMeta    = &Error{frame.CodeBadFrame, "meta not representable as an HTTP header"} // a key or value
)

// Messages of the failures answered through Done (Response.Msg).
const (
	MsgTimeout      = "backend timeout"
	MsgTooLarge     = "response too large"
	MsgUnreachable  = "backend unreachable"
	MsgShuttingDown = "shutting down"
)

// Request is one upstream request. Submit copies Meta and Body, so the caller's buffers need only
// be valid during the call; the Forwarder owns the Request after a successful Submit.
type Request struct {
	App, Device, User string
	Biz               uint16
	Conn              uint64 // connection ID
	Node              string // instance ID
	Seq               uint32 // the REQUEST's seq, for the caller's RESPONSE
	// Meta is the request's meta; each entry is sent as the header Pushwire-Meta-<key>, the name
	// canonicalized as HTTP does (keys differing only in case become one header with both
	// values). Submit refuses keys that are not HTTP tokens and values with control characters
	// (ErrBadMeta); a backend's HTTP parser trims a value's leading and trailing blanks.
	Meta frame.Meta
	// Body is the payload, sent as the POST body.
	Body []byte
	// Done receives the answer exactly once, on a worker goroutine, unless Submit returned an
	// error. It must not block for long: the worker serves the next request after it returns.
	Done func(Response)

	submitted time.Time
}

// Response is the answer to a Request.
type Response struct {
	// Code is CodeOK (backend answered 2xx), CodeBackendError or CodeBackendTimeout.
	Code frame.Code
	// Msg explains a failure (the RESPONSE's msg meta); empty on OK.
	Msg string
	// Body is the backend's answer (on OK, the RESPONSE body; otherwise the error body, at most
	// MaxBody). It belongs to the receiver.
	Body []byte
	// Status is the backend's HTTP status, 0 when it gave none.
	Status int
}

// Stats are one business's counters, from New on.
type Stats struct {
	Biz  uint16
	Name string
	// Submitted counts the requests accepted into the queue; Busy those refused because it was
	// full.
	Submitted, Busy uint64
	// OK, BackendError and Timeout count the answers by code; BackendError includes the requests
	// answered "shutting down" by Close.
	OK, BackendError, Timeout uint64
	// Queued is the queue's length now, InFlight the requests at the backend now.
	Queued, InFlight int
	// Workers and QueueLen are the configured sizes.
	Workers, QueueLen int
}

// Forwarder holds one worker pool per business. It is safe for concurrent use.
type Forwarder struct {
	log       *slog.Logger
	transport *http.Transport
	observe   func(uint16, frame.Code, time.Duration)
	pools     map[uint16]*pool // read-only after New

	abort     context.Context // canceled when Close gives up waiting
	cancel    context.CancelFunc
	closing   atomic.Bool // set first thing in Close: Submit's fast refusal
	closeOnce sync.Once
	workers   sync.WaitGroup

	life    sync.Mutex // orders Start against Close
	started bool
}

// pool is one business's queue and workers.
type pool struct {
	id  uint16
	cfg Biz
	url string

	mu     sync.RWMutex // guards closed against sends on queue; Submit reads, Close writes
	closed bool
	queue  chan *Request

	submitted, busy, ok, backendErr, timeout atomic.Uint64
	inFlight                                 atomic.Int64
}

// New validates cfg and applies its defaults. It starts nothing: Start starts the workers, Close
// stops them. Requests submitted before Start wait in their queue.
func New(cfg Config) (*Forwarder, error) {
	cfg.Biz = maps.Clone(cfg.Biz)
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	conns := 0
	for _, b := range cfg.Biz {
		conns += b.PoolSize
	}
	f := &Forwarder{
		log:     cfg.Logger,
		observe: cfg.Observe,
		pools:   make(map[uint16]*pool, len(cfg.Biz)),
		// The transport directly, not an http.Client: no redirects to follow (one would turn the
		// POST into a GET without its body, so a 3xx is an error), no cookies, no header copies.
		transport: newTransport(max(conns, 2)),
	}
	f.abort, f.cancel = context.WithCancel(context.Background())
	for id, b := range cfg.Biz {
		f.pools[id] = &pool{id: id, cfg: b, url: b.BackendURL, queue: make(chan *Request, b.QueueLen)}
	}
	return f, nil
}

// Start starts every business's workers. It does nothing after the first call or after Close.
func (f *Forwarder) Start() {
	f.life.Lock()
	defer f.life.Unlock()
	if f.started || f.closing.Load() {
		return
	}
	f.started = true
	for _, p := range f.pools {
		for range p.cfg.PoolSize {
			f.workers.Go(func() { f.work(p) })
		}
	}
}

// newTransport is the keep-alive transport shared by every pool: several businesses may share a
// backend host, so it keeps up to conns idle connections per host, one per worker.
func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          conns,
		MaxIdleConnsPerHost:   conns,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// Submit queues req for its business's pool and returns at once. It never blocks: it returns
// ErrUnknownBiz when the biz has no backend, ErrBusy when its queue is full, ErrBadMeta when a
// meta entry cannot be an HTTP header, and ErrClosed after Close. On any error Done is not
// called and the caller answers itself (errors.As gives the *Error's Code).
func (f *Forwarder) Submit(req *Request) error {
	p, ok := f.pools[req.Biz]
	if !ok {
		return ErrUnknownBiz
	}
	if !validMeta(req.Meta) {
		return ErrBadMeta
	}
	if f.closing.Load() {
		return ErrClosed
	}
	if len(p.queue) == cap(p.queue) {
		// Overloaded: refuse before copying anything (the send below still decides the race).
		p.busy.Add(1)
		return ErrBusy
	}
	// One allocation holds both: the caller's buffers are only valid during this call.
	if n := len(req.Meta) + len(req.Body); n > 0 {
		buf := make([]byte, n)
		copy(buf, req.Meta)
		copy(buf[len(req.Meta):], req.Body)
		req.Meta, req.Body = frame.Meta(buf[:len(req.Meta):len(req.Meta)]), buf[len(req.Meta):]
	}
	req.submitted = time.Now()

	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	select {
	case p.queue <- req:
		p.submitted.Add(1)
		return nil
	default:
		p.busy.Add(1)
		return ErrBusy
	}
}

// work is one worker of p: it serves the queue until Close closes it and it is empty.
func (f *Forwarder) work(p *pool) {
	for req := range p.queue {
		var resp Response
		if f.abort.Err() != nil {
			resp = Response{Code: frame.CodeBackendError, Msg: MsgShuttingDown}
		} else {
			p.inFlight.Add(1)
			resp = f.call(p, req)
			p.inFlight.Add(-1)
		}
		f.answer(p, req, resp)
	}
}

// answer counts resp and hands it to req.Done.
func (f *Forwarder) answer(p *pool, req *Request, resp Response) {
	switch resp.Code {
	case frame.CodeOK:
		p.ok.Add(1)
	case frame.CodeBackendTimeout:
		p.timeout.Add(1)
	default:
		p.backendErr.Add(1)
	}
	if f.observe != nil {
		f.observe(p.id, resp.Code, time.Since(req.submitted))
	}
	if req.Done != nil {
		req.Done(resp)
	}
}

// call forwards req to p's backend and maps the outcome to a Response.
func (f *Forwarder) call(p *pool, req *Request) Response {
	ctx, cancel := context.WithTimeout(f.abort, p.cfg.Timeout)
	defer cancel()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(req.Body))
	if err != nil { // the URL was validated: unreachable
		return Response{Code: frame.CodeBackendError, Msg: MsgUnreachable}
	}
	hreq.Header = headers(req)
	hresp, err := f.transport.RoundTrip(hreq)
	if err != nil {
		return f.failure(p, req, ctx, err)
	}
	defer hresp.Body.Close()
	body, err := readBody(hresp, p.cfg.MaxBody)
	switch {
	case errors.Is(err, errTooLarge):
		f.log.Warn("backend response too large", "biz", p.id, "name", p.cfg.Name, "status", hresp.StatusCode, "max_body", p.cfg.MaxBody)
		return Response{Code: frame.CodeBackendError, Msg: MsgTooLarge, Status: hresp.StatusCode}
	case err != nil:
		r := f.failure(p, req, ctx, err)
		r.Status = hresp.StatusCode
		return r
	}
	if hresp.StatusCode/100 != 2 {
		f.log.Debug("backend error", "biz", p.id, "name", p.cfg.Name, "status", hresp.StatusCode, "conn", req.Conn, "seq", req.Seq)
		return Response{Code: frame.CodeBackendError, Msg: "backend status " + strconv.Itoa(hresp.StatusCode), Body: body, Status: hresp.StatusCode}
	}
	return Response{Code: frame.CodeOK, Body: body, Status: hresp.StatusCode}
}

// failure maps a transport error to a Response: the call's deadline is BACKEND_TIMEOUT, Close
// giving up is "shutting down", anything else (refused, reset) BACKEND_ERROR.
func (f *Forwarder) failure(p *pool, req *Request, ctx context.Context, err error) Response {
	switch {
	case f.abort.Err() != nil:
		return Response{Code: frame.CodeBackendError, Msg: MsgShuttingDown}
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		f.log.Debug("backend timeout", "biz", p.id, "name", p.cfg.Name, "timeout", p.cfg.Timeout, "conn", req.Conn, "seq", req.Seq)
		return Response{Code: frame.CodeBackendTimeout, Msg: MsgTimeout}
	}
	f.log.Warn("backend call failed", "biz", p.id, "name", p.cfg.Name, "err", err)
	return Response{Code: frame.CodeBackendError, Msg: MsgUnreachable}
}

var errTooLarge = errors.New("forward: response too large")

// readBody reads the whole answer, at most max bytes, in one allocation when the length is known.
func readBody(resp *http.Response, max int) ([]byte, error) {
	if resp.ContentLength > int64(max) {
		return nil, errTooLarge
	}
	if resp.ContentLength == 0 {
		return nil, nil
	}
	var buf []byte
	if resp.ContentLength > 0 {
		buf = make([]byte, 0, resp.ContentLength+1) // +1: room to see EOF without growing
	} else {
		buf = make([]byte, 0, min(max+1, 512))
	}
	b := bytes.NewBuffer(buf)
	n, err := b.ReadFrom(io.LimitReader(resp.Body, int64(max)+1))
	if err != nil {
		return nil, err
	}
	if n > int64(max) {
		return nil, errTooLarge
	}
	return b.Bytes(), nil
}

// Header names of the backend contract.
const (
	HeaderApp        = "Pushwire-App"
	HeaderDevice     = "Pushwire-Device"
	HeaderUser       = "Pushwire-User"
	HeaderBiz        = "Pushwire-Biz"
	HeaderConn       = "Pushwire-Conn"
	HeaderNode       = "Pushwire-Node"
	HeaderMetaPrefix = "Pushwire-Meta-"
)

// headers returns the request's headers, built with few allocations: every value slice shares
// one backing array.
func headers(req *Request) http.Header {
	n := 0
	req.Meta.Range(func(_, _ []byte) bool { n++; return true })
	vals := make([]string, 7+n)
	vals[0], vals[1], vals[2], vals[3] = req.App, req.Device, req.User, strconv.Itoa(int(req.Biz))
	vals[4], vals[5], vals[6] = strconv.FormatUint(req.Conn, 10), req.Node, "application/octet-stream"
	h := make(http.Header, 7+n)
	for i, k := range [...]string{HeaderApp, HeaderDevice, HeaderUser, HeaderBiz, HeaderConn, HeaderNode, "Content-Type"} {
		h[k] = vals[i : i+1 : i+1]
	}
	i := 7
	req.Meta.Range(func(k, v []byte) bool {
		vals[i] = string(v)
		name := metaHeader(k)
		if prev, dup := h[name]; dup { // keys differing only in case: one header, both values
			h[name] = append(prev, vals[i])
		} else {
			h[name] = vals[i : i+1 : i+1]
		}
		i++
		return true
	})
	return h
}

// metaHeader is the canonical header name Pushwire-Meta-<key> of a token key: "trace_id" gives
// "Pushwire-Meta-Trace_id", "delay-ms" "Pushwire-Meta-Delay-Ms", as http.CanonicalHeaderKey does.
func metaHeader(key []byte) string {
	var b strings.Builder
	b.Grow(len(HeaderMetaPrefix) + len(key))
	b.WriteString(HeaderMetaPrefix)
	upper := true
	for _, c := range key {
		switch {
		case upper && 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case !upper && 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		b.WriteByte(c)
		upper = c == '-'
	}
	return b.String()
}

// validMeta reports whether every meta entry can travel as a header: a token key and a value
// without control characters (a hostile CR LF must never reach the backend). A malformed meta
// (the codec rejects those) is refused too.
func validMeta(m frame.Meta) bool {
	if len(m) == 0 {
		return true
	}
	if m.Validate() != nil {
		return false
	}
	ok := true
	m.Range(func(k, v []byte) bool {
		for _, c := range k {
			if !isTokenChar(c) {
				ok = false
				return false
			}
		}
		for _, c := range v {
			if c < 0x20 && c != '\t' || c == 0x7f {
				ok = false
				return false
			}
		}
		return true
	})
	return ok
}

// isTokenChar reports whether c may appear in an HTTP header name (RFC 9110 tchar).
func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// Stats returns every business's counters, in increasing biz order.
func (f *Forwarder) Stats() []Stats {
	out := make([]Stats, 0, len(f.pools))
	for _, id := range sortedIDs(f.pools) {
		out = append(out, f.pools[id].stats())
	}
	return out
}

func (p *pool) stats() Stats {
	return Stats{
		Biz: p.id, Name: p.cfg.Name,
		Submitted: p.submitted.Load(), Busy: p.busy.Load(),
		OK: p.ok.Load(), BackendError: p.backendErr.Load(), Timeout: p.timeout.Load(),
		Queued: len(p.queue), InFlight: int(p.inFlight.Load()),
		Workers: p.cfg.PoolSize, QueueLen: p.cfg.QueueLen,
	}
}

// Close stops accepting requests (Submit returns ErrClosed), lets the workers answer every
// request already queued or in flight, and waits for them. If ctx ends first, it aborts the
// backend calls in flight, answers every request left with BACKEND_ERROR "shutting down" (Done
// is still called exactly once per request), waits for the workers and returns ctx.Err().
// Close may be called more than once; later calls wait like the first. Without Start, it answers
// every queued request "shutting down" itself.
func (f *Forwarder) Close(ctx context.Context) error {
	f.closeOnce.Do(func() {
		f.life.Lock()
		f.closing.Store(true)
		started := f.started
		f.life.Unlock()
		for _, p := range f.pools {
			p.mu.Lock()
			p.closed = true
			close(p.queue)
			p.mu.Unlock()
			if !started {
				for req := range p.queue {
					f.answer(p, req, Response{Code: frame.CodeBackendError, Msg: MsgShuttingDown})
				}
			}
		}
	})
	err := waitOrAbort(ctx, &f.workers, f.cancel, f.log, "close deadline passed: aborting backend calls")
	f.cancel()
	f.transport.CloseIdleConnections()
	return err
}

// waitOrAbort waits for wg. If ctx ends first, it logs msg, calls abort, still waits for wg and
// returns ctx.Err().
func waitOrAbort(ctx context.Context, wg *sync.WaitGroup, abort func(), log *slog.Logger, msg string) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		log.Warn(msg, "err", ctx.Err())
		abort()
		<-done
		return ctx.Err()
	}
}
