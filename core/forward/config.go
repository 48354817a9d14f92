package forward

import (
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"time"

	"github.com/pushwire/pushwire/core/frame"
)

// Defaults of a Biz, applied by Config.SetDefaults.
const (
	DefaultTimeout  = 5 * time.Second
	DefaultPoolSize = 16
	DefaultQueueLen = 1024
	DefaultMaxBody  = frame.DefaultMaxBody
)

// Upper bounds of the tunable settings: a typo must not spawn a million goroutines.
const (
	maxPoolSize = 4096
	maxQueueLen = 1 << 20
)

// Biz configures one business's upstream forwarding: where its REQUEST frames go and how its pool
// is sized. (The gateway's own policies for a business, such as group joins and slow consumers,
// are in gateway.Business, which embeds Biz.) The zero
// value of each field means its documented default; BackendURL is required.
type Biz struct {
	// Name labels the business in logs and statistics. Default: "biz-<id>".
	Name string `yaml:"name" json:"name"`
	// BackendURL receives each request as POST; an absolute http or https URL. Required.
	BackendURL string `yaml:"backend_url" json:"backend_url"`
	// Timeout bounds one backend call, from dequeue to the last byte of the answer. Default 5s.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// PoolSize is the number of workers, so the most concurrent backend calls. Default 16.
	PoolSize int `yaml:"pool_size" json:"pool_size"`
	// QueueLen bounds the requests waiting for a worker; past it Submit returns ErrBusy.
	// Default 1024.
	QueueLen int `yaml:"queue_len" json:"queue_len"`
	// MaxBody bounds the backend's answer; a longer one is BACKEND_ERROR "response too large".
	// Default frame.DefaultMaxBody (64 KiB).
	MaxBody int `yaml:"max_body" json:"max_body"`
	// NotifyURL, when set, receives the connection state changes as JSON batches (Notifier).
	NotifyURL string `yaml:"notify_url" json:"notify_url,omitempty"`
}

// Config configures a Forwarder. The zero value is a forwarder with no business, which answers
// every Submit with ErrUnknownBiz.
type Config struct {
	// Biz maps a business ID (the frame's biz, 1..65535) to its configuration.
	Biz map[uint16]Biz
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Observe, when set, is called by a worker after each answered request with the biz, the
	// answer's code and the time from Submit to the answer (queueing included); for latency
	// histograms. It must be fast and safe for concurrent use.
	Observe func(biz uint16, code frame.Code, d time.Duration)
}

// SetDefaults applies the documented default of every zero setting, in place. New calls it.
func (c *Config) SetDefaults() {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	for id, b := range c.Biz {
		b.setDefaults(id)
		c.Biz[id] = b
	}
}

func (b *Biz) setDefaults(id uint16) {
	if b.Name == "" {
		b.Name = fmt.Sprintf("biz-%d", id)
	}
	if b.Timeout == 0 {
		b.Timeout = DefaultTimeout
	}
	if b.PoolSize == 0 {
		b.PoolSize = DefaultPoolSize
	}
	if b.QueueLen == 0 {
		b.QueueLen = DefaultQueueLen
	}
	if b.MaxBody == 0 {
		b.MaxBody = DefaultMaxBody
	}
}

// Validate reports the first setting that cannot work, naming the biz and the setting, in
// increasing biz order. Call it after SetDefaults (New does both).
func (c *Config) Validate() error {
	for _, id := range sortedIDs(c.Biz) {
		if err := c.Biz[id].validate(id); err != nil {
			return err
		}
	}
	return nil
}

func (b Biz) validate(id uint16) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("forward: biz %d: "+format, append([]any{id}, args...)...)
	}
	switch {
	case id == 0:
		return bad("biz 0 is the connection itself: business IDs are 1..65535")
	case b.BackendURL == "":
		return bad("backend_url is required")
	case !absHTTP(b.BackendURL):
		return bad("backend_url %q: must be an absolute http(s) URL", b.BackendURL)
	case b.NotifyURL != "" && !absHTTP(b.NotifyURL):
		return bad("notify_url %q: must be an absolute http(s) URL", b.NotifyURL)
	case b.Timeout < 0:
		return bad("timeout %v: must be positive", b.Timeout)
	case b.PoolSize < 1 || b.PoolSize > maxPoolSize:
		return bad("pool_size %d: must be 1..%d", b.PoolSize, maxPoolSize)
	case b.QueueLen < 1 || b.QueueLen > maxQueueLen:
		return bad("queue_len %d: must be 1..%d", b.QueueLen, maxQueueLen)
	case b.MaxBody < 1 || b.MaxBody > frame.MaxBodyLimit:
		return bad("max_body %d: must be 1..%d", b.MaxBody, frame.MaxBodyLimit)
	}
	return nil
}

// NotifyURLs returns the distinct notify URLs of the configured businesses, sorted: the
// Notifier's targets.
func (c *Config) NotifyURLs() []string {
	var urls []string
	for _, b := range c.Biz {
		if b.NotifyURL != "" && !slices.Contains(urls, b.NotifyURL) {
			urls = append(urls, b.NotifyURL)
		}
	}
	slices.Sort(urls)
	return urls
}

// absHTTP reports whether s is an absolute http or https URL with a host.
func absHTTP(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

func sortedIDs[V any](m map[uint16]V) []uint16 {
	ids := make([]uint16, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}
