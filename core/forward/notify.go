package forward

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Event types.
const (
	EventConnect    = "connect"
	EventDisconnect = "disconnect"
)

// Event is one connection state change, as posted to a notify URL.
type Event struct {
	Type   string `json:"type"` // EventConnect or EventDisconnect
	App    string `json:"app"`
	Device string `json:"device"`
	User   string `json:"user,omitempty"`
	Conn   uint64 `json:"conn"` // connection ID on Node
	Node   string `json:"node"` // instance ID
	// Gen is the device's connection generation: it increases at each login of the device, so
	// a receiver can tell a late disconnect of an old connection from the current one's. It is a
	// JSON number that may exceed 2^53.
	Gen    uint64 `json:"gen"`
	Reason string `json:"reason,omitempty"` // why a disconnect happened (a code name, "transport", …)
	At     int64  `json:"at"`               // unix milliseconds
}

// Batch is the JSON body of one notify POST: {"events": [...]}, at most NotifyConfig.BatchSize
// events, in the order Notify saw them.
type Batch struct {
	Events []Event `json:"events"`
}

// NotifyConfig configures a Notifier. The zero value of each field means its documented default.
type NotifyConfig struct {
	// URLs are the targets; each receives every event (Config.NotifyURLs lists a config's).
	URLs []string
	// BatchSize is the most events in one POST. Default 256.
	BatchSize int
	// FlushInterval is the longest an event waits for its batch to fill. Default 100ms.
	FlushInterval time.Duration
	// BufferLen bounds the events waiting per target; past it Notify drops. Default 4096.
	BufferLen int
	// MaxRetries is how many times a failed POST is retried. Default 3; negative: never.
	MaxRetries int
	// RetryBackoff is the wait before the first retry, doubled at each next one. Default 100ms.
	RetryBackoff time.Duration
	// Timeout bounds one POST. Default 5s.
	Timeout time.Duration
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
}

func (c *NotifyConfig) setDefaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 256
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 100 * time.Millisecond
	}
	if c.BufferLen <= 0 {
		c.BufferLen = 4096
	}
	if c.MaxRetries == 0 {
		c.MaxRetries = 3
	}
	if c.MaxRetries < 0 {
		c.MaxRetries = 0
	}
	if c.RetryBackoff <= 0 {
		c.RetryBackoff = 100 * time.Millisecond
	}
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// NotifyStats are one target's counters, in events unless said otherwise.
type NotifyStats struct {
	URL string
	// Sent counts events the target accepted (2xx); Failed those of batches given up after the
	// retries or refused with a 4xx; Dropped those refused because the buffer was full or the
	// Notifier closed.
	Sent, Failed, Dropped uint64
	// Batches counts the POSTs accepted, Retries the POSTs repeated after a failure.
	Batches, Retries uint64
	// Buffered is the events waiting now.
	Buffered int
}

// Notifier posts connection events to notify URLs in batches, off the connection path. It is
// safe for concurrent use.
type Notifier struct {
	cfg     NotifyConfig
	log     *slog.Logger
	client  *http.Client
	targets []*target

	mu     sync.RWMutex // guards closed against sends on the buffers; Notify reads, Close writes
	closed bool
	quit   chan struct{}

	abort     context.Context // canceled when Close gives up waiting
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
	started   bool // guarded by mu
}

type target struct {
	url string
	ch  chan Event

	sent, failed, dropped, batches, retries atomic.Uint64
}

// NewNotifier validates cfg. It starts nothing: Start starts one sender per URL, Close stops them.
// With no URL, Notify does nothing. Events notified before Start wait in their buffer.
func NewNotifier(cfg NotifyConfig) (*Notifier, error) {
	cfg.URLs = slices.Clone(cfg.URLs)
	cfg.setDefaults()
	for _, u := range cfg.URLs {
		if !absHTTP(u) {
			return nil, fmt.Errorf("forward: notify_url %q: must be an absolute http(s) URL", u)
		}
	}
	n := &Notifier{
		cfg:    cfg,
		log:    cfg.Logger,
		client: &http.Client{Transport: newTransport(2 * len(cfg.URLs))},
		quit:   make(chan struct{}),
	}
	n.abort, n.cancel = context.WithCancel(context.Background())
	for _, u := range slices.Compact(slices.Sorted(slices.Values(cfg.URLs))) {
		n.targets = append(n.targets, &target{url: u, ch: make(chan Event, cfg.BufferLen)})
	}
	return n, nil
}

// Start starts one sender per URL. It does nothing after the first call or after Close.
func (n *Notifier) Start() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.started || n.closed {
		return
	}
	n.started = true
	for _, t := range n.targets {
		n.wg.Go(func() { n.run(t) })
	}
}

// Notify queues ev for every target and returns at once: when a target's buffer is full, or
// after Close, the event is dropped for it and counted.
func (n *Notifier) Notify(ev Event) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	for _, t := range n.targets {
		if n.closed {
			t.dropped.Add(1)
			continue
		}
		select {
		case t.ch <- ev:
		default:
			t.dropped.Add(1)
		}
	}
}

// run is t's sender: it batches by size and by time until Close, then flushes what is left.
func (n *Notifier) run(t *target) {
	batch := make([]Event, 0, n.cfg.BatchSize)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func() {
		timer.Stop()
		if len(batch) > 0 {
			n.post(t, batch)
			clear(batch)
			batch = batch[:0]
		}
	}
	add := func(ev Event) {
		batch = append(batch, ev)
		switch {
		case len(batch) >= n.cfg.BatchSize:
			flush()
		case len(batch) == 1:
			timer.Reset(n.cfg.FlushInterval)
		}
	}
	for {
		select {
		case ev := <-t.ch:
			add(ev)
		case <-timer.C:
			flush()
		case <-n.quit:
			// Notify sends nothing more: what the buffer holds now is all there is.
			for {
				select {
				case ev := <-t.ch:
					add(ev)
				default:
					flush()
					return
				}
			}
		}
	}
}

// post sends one batch, retrying with a doubling backoff; it counts the outcome.
func (n *Notifier) post(t *target, batch []Event) {
	body, err := json.Marshal(Batch{Events: batch})
	if err != nil { // cannot happen: Event has only strings and integers
		t.failed.Add(uint64(len(batch)))
		return
	}
	backoff := n.cfg.RetryBackoff
	for attempt := 0; ; attempt++ {
		status, err := n.postOnce(t.url, body)
		if err == nil && status/100 == 2 {
			t.sent.Add(uint64(len(batch)))
			t.batches.Add(1)
			return
		}
		// A 4xx other than 408 and 429 says the batch itself is refused: retrying cannot help.
		permanent := status/100 == 4 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
		if permanent || attempt >= n.cfg.MaxRetries || n.abort.Err() != nil {
			t.failed.Add(uint64(len(batch)))
			n.log.Warn("notify failed", "url", t.url, "events", len(batch), "attempts", attempt+1, "status", status, "err", err)
			return
		}
		select {
		case <-time.After(backoff):
		case <-n.abort.Done():
		}
		backoff *= 2
		t.retries.Add(1)
	}
}

// postOnce POSTs body to url and returns the status (0 when there is none).
func (n *Notifier) postOnce(url string, body []byte) (int, error) {
	ctx, cancel := context.WithTimeout(n.abort, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keep the connection reusable
	return resp.StatusCode, nil
}

// Stats returns every target's counters, in URL order.
func (n *Notifier) Stats() []NotifyStats {
	out := make([]NotifyStats, 0, len(n.targets))
	for _, t := range n.targets {
		out = append(out, NotifyStats{
			URL: t.url, Sent: t.sent.Load(), Failed: t.failed.Load(), Dropped: t.dropped.Load(),
			Batches: t.batches.Load(), Retries: t.retries.Load(), Buffered: len(t.ch),
		})
	}
	return out
}

// Close stops accepting events, posts every buffered one (with retries) and waits for the
// senders. If ctx ends first, it aborts the POSTs and retries under way, counts what is left as
// failed, waits for the senders and returns ctx.Err(). Close may be called more than once.
// Without Start, the events buffered are counted as dropped.
func (n *Notifier) Close(ctx context.Context) error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		n.closed = true
		close(n.quit)
		started := n.started
		n.mu.Unlock()
		if !started {
			for _, t := range n.targets {
				t.dropped.Add(uint64(len(t.ch)))
			}
		}
	})
	err := waitOrAbort(ctx, &n.wg, n.cancel, n.log, "notify close deadline passed: aborting")
	n.cancel()
	n.client.CloseIdleConnections()
	return err
}
