// Package gateway is the gateway node: it wires the connection objects, the codec and the push path
// to an engine. It implements engines.Handler, so any registered engine carries it unchanged, and
// it serves the push API and the instance's health, metrics and statistics over HTTP.
//
// Each connection is a Client (client.go): it owns its state, identity, counters, rate limiter and
// groups, and handles every frame the connection sends through the session state machine. The
// Node keeps what spans connections: the indexes (the session table by connection, device and
// user; the groups), the downstream delivery (deliver.go: the one place that writes a frame to a
// connection and counts its outcome), the push and membership APIs, the forward pools and the
// timing wheel.
//
// The cluster (Config.Route; cluster.go, route.go, routewriter.go, busmsg.go): on a route store the
// node claims each login's device there (the store assigns the connection's generation), releases it
// at close, records group membership per device and which groups it holds members of, and keeps
// at-least-once messages until PUSH_ACK — all through one writer goroutine, in batches, so an
// engine's event loop never waits on the store. A push reaches targets on other instances over the
// bus (registry or broadcast mode) and the answer counts their reports. Membership belongs to the
// device: the server keeps it, and a device's next login on any instance within Config.Linger
// rejoins its groups and receives its unacknowledged messages. Without a route store the node is
// standalone: this instance only, pending messages in a local store.
//
// Lifecycle: New starts nothing. Start starts every goroutine the node owns (timing wheel, fan-out
// workers, forward pools, notifier, expiry of unacknowledged pushes; on a route store the route
// writer, the registration and the bus subscription); Stop stops them and waits for them, drains the
// route writer's queue (bounded) and deregisters the instance. Drain and Stop may be called more
// than once, and Stop without Start.
//
// Lock order: a table shard (conn, then device, then user), a groups shard, a group, a client's
// group list; no lock is held while writing to a connection or calling another component.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/procstats"
	"github.com/pushwire/pushwire/core/push"
	"github.com/pushwire/pushwire/core/session"
	"github.com/pushwire/pushwire/core/timewheel"
	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/route"
)

// Identity is what a verified login token says about the connection.
type Identity struct {
	App, Device, User string
}

// Verifier checks a login token without calling the control layer. Verify refuses a token that is
// forged, malformed or expired at now. A token is a ticket to log in: a connection already logged
// in is not closed when its token expires (docs/protocol.md, "Token expiry").
type Verifier interface {
	Verify(token string, now time.Time) (Identity, error)
}

// Clock tells the node the time: login and idle deadlines, the rate limiter, token checks and
// push expiry read it. Tests give one they move by hand.
type Clock interface {
	Now() time.Time
}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Apps authenticates businesses on the push API.
type Apps interface {
	// AppByPushKey returns the app whose push key is key.
	AppByPushKey(key string) (app string, ok bool)
}

// Config configures a Node. The zero value of each field means its documented default.
type Config struct {
	// Node is the instance ID sent in LOGIN_ACK. Default: hostname-pid.
	Node string
	// Engine and Transport name what carries the node, for stats and metrics only.
	Engine, Transport string
	// Heartbeat is the interval clients are told to PING at. Default 60s.
	Heartbeat time.Duration
	// IdleTimeout closes a logged-in connection that sent nothing for this long. Default
	// 3 × Heartbeat.
	IdleTimeout time.Duration
	// LoginTimeout closes a connection with no successful LOGIN within it. Default 10s.
	LoginTimeout time.Duration
	// MaxBody is the largest frame body accepted and pushed. Default frame.DefaultMaxBody.
	MaxBody int
	// MaxConnsPerUser closes a user's oldest connection past this many. Default 8; negative:
	// no limit.
	MaxConnsPerUser int
	// WheelTick is the timing wheel's granularity. Default 1s (tests use less).
	WheelTick time.Duration
	// Businesses configures each business (biz ID → backend, pool, notify URL, join policy,
	// slow-consumer policy). A REQUEST, JOIN or LEAVE of a biz not listed is UNKNOWN_BIZ.
	Businesses map[uint16]Business
	// MaxGroupsPerConn bounds the groups one connection may JOIN; past it JOIN is answered
	// RESPONSE FORBIDDEN. The membership API (a business's own call) is not bounded by it.
	// Default 256; negative: no limit.
	MaxGroupsPerConn int
	// RateLimit is the most REQUEST, JOIN and LEAVE frames one connection may send per second;
	// past it (after Burst) they are answered RATE_LIMITED. PING and PUSH_ACK are never limited.
	// Default 50; negative: no limit.
	RateLimit float64
	// RateBurst is how many such frames may arrive at once above the rate. Default 100.
	RateBurst int
	// AckTTL is how long an at-least-once push waits for PUSH_ACK when the push names no ttl_ms.
	// Default 60s.
	AckTTL time.Duration
	// MaxPending bounds the unacknowledged messages kept per device; the oldest is dropped
	// (counted) past it. Default 256.
	MaxPending int
	// DrainWindow is how long Drain spreads its GOAWAYs over. Default 10s.
	DrainWindow time.Duration
	// RetryMs is the retry_ms a GOAWAY tells clients, before jitter (±50%). Default 1000.
	RetryMs int
	// FanoutWorkers is the number of downlink fan-out goroutines. Default 2 × GOMAXPROCS.
	FanoutWorkers int
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Clock is the node's time. Default: the system clock.
	Clock Clock

	// Route is the route layer: where devices, users and groups live, the instance registry and
	// the bus. nil: standalone, this instance only (unit tests); the binary always sets one (the
	// in-memory store for one instance).
	Route RouteStore
	// Mode is how pushes reach other instances: route.ModeRegistry (default: look up the holders,
	// one bus message per holding instance) or route.ModeBroadcast (every push not wholly local
	// goes to every instance).
	Mode string
	// InstanceTTL is the registration's time to live; the node re-registers every third of it
	// with its live connections and whether it drains. Default 10s.
	InstanceTTL time.Duration
	// Endpoints are the access points this instance serves, advertised in the registry.
	Endpoints []route.Endpoint
	// HTTPURL is this instance's push API base URL, advertised in the registry.
	HTTPURL string
	// Region and Group are advertised in the registry for the control layer's dispatch policy
	// (route.Instance). Optional.
	Region, Group string
	// RemoteTimeout is how long a push waits for the remote instances' reports. Default 2s.
	RemoteTimeout time.Duration
	// Linger is how long a device's groups and unacknowledged messages are kept in the route
	// store after its connection closes. Default AckTTL.
	Linger time.Duration
}

func (c *Config) setDefaults() {
	if c.Node == "" {
		host, _ := os.Hostname()
		c.Node = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if c.Engine == "" {
		c.Engine = "unknown"
	}
	if c.Transport == "" {
		c.Transport = "tcp"
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 60 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 3 * c.Heartbeat
	}
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 10 * time.Second
	}
	if c.MaxBody <= 0 {
		c.MaxBody = frame.DefaultMaxBody
	}
	if c.MaxConnsPerUser == 0 {
		c.MaxConnsPerUser = 8
	}
	if c.WheelTick <= 0 {
		c.WheelTick = time.Second
	}
	if c.RateLimit == 0 {
		c.RateLimit = 50
	}
	if c.RateBurst <= 0 {
		c.RateBurst = 100
	}
	if c.AckTTL <= 0 {
		c.AckTTL = time.Minute
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 256
	}
	if c.DrainWindow <= 0 {
		c.DrainWindow = 10 * time.Second
	}
	if c.RetryMs <= 0 {
		c.RetryMs = 1000
	}
	if c.MaxGroupsPerConn == 0 {
		c.MaxGroupsPerConn = 256
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Clock == nil {
		c.Clock = systemClock{}
	}
	if c.Mode == "" {
		c.Mode = route.ModeRegistry
	}
	if c.InstanceTTL <= 0 {
		c.InstanceTTL = 10 * time.Second
	}
	if c.RemoteTimeout <= 0 {
		c.RemoteTimeout = 2 * time.Second
	}
	if c.Linger <= 0 {
		c.Linger = c.AckTTL
	}
}

// Validate reports a setting that cannot work, naming it.
func (c *Config) Validate() error {
	switch {
	case c.MaxBody > frame.MaxBodyLimit:
		return fmt.Errorf("gateway: max body %d over the limit %d", c.MaxBody, frame.MaxBodyLimit)
	case c.IdleTimeout < c.Heartbeat:
		return fmt.Errorf("gateway: idle timeout %v shorter than the heartbeat %v", c.IdleTimeout, c.Heartbeat)
	case c.WheelTick > c.LoginTimeout:
		return fmt.Errorf("gateway: wheel tick %v longer than the login timeout %v", c.WheelTick, c.LoginTimeout)
	case c.Mode != route.ModeRegistry && c.Mode != route.ModeBroadcast:
		return fmt.Errorf("gateway: mode %q: want %q or %q", c.Mode, route.ModeRegistry, route.ModeBroadcast)
	case c.InstanceTTL < 30*time.Millisecond:
		return fmt.Errorf("gateway: instance ttl %v under 30ms", c.InstanceTTL)
	}
	return nil
}

// Node is one gateway instance's engine-independent core.
type Node struct {
	cfg      Config
	log      *slog.Logger
	verifier Verifier
	apps     Apps
	clock    Clock
	lim      frame.Limits
	table    *table
	groups   *groups
	wheel    *timewheel.Wheel[*Client]
	fanout   *push.Fanout[*Client]
	fwd      *forward.Forwarder
	notifier *forward.Notifier   // nil when no business has a notify URL
	acks     *ackStore           // standalone only: with a route store, pending messages live there
	cl       *cluster            // nil: standalone
	biz      map[uint16]Business // with defaults applied; read-only
	m        *metrics
	started  time.Time
	hb       string        // heartbeat seconds, for LOGIN_ACK
	rateIvl  int64         // nanoseconds between limited frames; 0: no limit
	rateTol  int64         // burst tolerance, nanoseconds
	connIDs  atomic.Uint64 // the last connection ID handed out (Client.id)

	life      sync.Mutex // orders Start against Stop
	running   bool       // Start ran and Stop did not
	stopped   bool       // Stop ran
	stop      chan struct{}
	bg        sync.WaitGroup
	drainOnce sync.Once
	drainErr  error
	emptied   chan struct{} // closed when the table empties while draining
	emptyOnce sync.Once

	conns    atomic.Int64 // open transport connections
	msgSeq   atomic.Uint64
	lastGen  atomic.Uint64
	draining atomic.Bool

	meter procstats.Meter // the process's figures, less what collections forced by Stats(true) cost
}

// The engines.Handler the node implements.
var _ engines.Handler = (*Node)(nil)

// New returns a node. It starts nothing: call Start before handing the node to an engine, and
// Stop after the engine shut down.
func New(cfg Config, v Verifier, apps Apps) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if v == nil || apps == nil {
		return nil, errors.New("gateway: a token verifier and an app registry are required")
	}
	biz, err := withDefaults(cfg.Businesses)
	if err != nil {
		return nil, fmt.Errorf("gateway: businesses: %w", err)
	}
	fcfg := forward.Config{Biz: forwardConfig(biz), Logger: cfg.Logger}
	fwd, err := forward.New(fcfg)
	if err != nil {
		return nil, fmt.Errorf("gateway: businesses: %w", err)
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger.With("node", cfg.Node),
		verifier: v,
		apps:     apps,
		clock:    cfg.Clock,
		lim:      frame.Limits{MaxBody: cfg.MaxBody},
		table:    newTable(max(cfg.MaxConnsPerUser, 0)),
		groups:   newGroups(),
		fanout:   push.New[*Client](push.Config{Workers: cfg.FanoutWorkers}),
		fwd:      fwd,
		biz:      biz,
		started:  time.Now(),
		hb:       strconv.Itoa(int((cfg.Heartbeat + time.Second - 1) / time.Second)),
		stop:     make(chan struct{}),
		emptied:  make(chan struct{}),
	}
	if urls := fcfg.NotifyURLs(); len(urls) > 0 {
		if n.notifier, err = forward.NewNotifier(forward.NotifyConfig{URLs: urls, Logger: cfg.Logger}); err != nil {
			return nil, fmt.Errorf("gateway: businesses: %w", err)
		}
	}
	if cfg.RateLimit > 0 {
		n.rateIvl = int64(float64(time.Second) / cfg.RateLimit)
		n.rateTol = n.rateIvl * int64(cfg.RateBurst)
	}
	n.acks = newAckStore(cfg.MaxPending)
	if cfg.Route != nil {
		n.cl = &cluster{store: cfg.Route, mode: cfg.Mode, waiters: make(map[uint64]*waiter), repSignal: make(chan struct{}, 1)}
		n.cl.w = newRouteWriter(n)
		n.groups.held = n.held
	}
	n.m = newMetrics(n)
	slots := int((cfg.IdleTimeout+cfg.LoginTimeout)/cfg.WheelTick) + 2
	n.wheel = timewheel.New(cfg.WheelTick, min(slots, 1<<16), n.expire, timewheel.WithClock(n.clock.Now))
	return n, nil
}

// Start starts every goroutine the node owns: the timing wheel, the fan-out workers, the forward
// pools, the notifier and the expiry of unacknowledged pushes. ctx bounds the start itself, not
// the goroutines' lifetime: Stop ends them. Start after Start or after Stop does nothing.
func (n *Node) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	n.life.Lock()
	defer n.life.Unlock()
	if n.running || n.stopped {
		return nil
	}
	n.running = true
	n.wheel.Start()
	n.fanout.Start()
	n.fwd.Start()
	if n.notifier != nil {
		n.notifier.Start()
	}
	n.bg.Go(n.expireAcks)
	if n.clustered() {
		n.startCluster()
	}
	return nil
}

// Stop stops what Start started, waiting for each goroutine to exit and for the forward pools to
// answer the requests in flight until ctx ends (then ctx.Err()). Call it after the engine has shut
// down. It may be called more than once (later calls return nil at once), and without Start.
func (n *Node) Stop(ctx context.Context) error {
	n.life.Lock()
	if n.stopped {
		n.life.Unlock()
		return nil
	}
	n.stopped = true
	n.running = false
	close(n.stop)
	clusterStarted := n.clustered() && n.cl.subCancel != nil
	n.life.Unlock()
	var err error
	if clusterStarted {
		err = n.stopCluster(ctx)
	}
	n.bg.Wait()
	n.wheel.Stop()
	n.fanout.Stop()
	err = errors.Join(err, n.fwd.Close(ctx))
	if n.notifier != nil {
		err = errors.Join(err, n.notifier.Close(ctx))
	}
	return err
}

// Config returns the node's effective configuration.
func (n *Node) Config() Config { return n.cfg }

// now is the node's coarse clock in unix nanoseconds: the wheel's last tick.
func (n *Node) now() int64 { return n.wheel.Now().UnixNano() }

// OnOpen implements engines.Handler.
func (n *Node) OnOpen(conn engines.Conn) {
	now := n.clock.Now()
	c := newClient(n, conn, now.UnixNano())
	conn.SetContext(c)
	n.conns.Add(1)
	n.m.conns.Inc()
	n.wheel.Add(now.Add(n.cfg.LoginTimeout), c)
	if n.draining.Load() {
		// Draining: no new sessions. The client reconnects through the control layer.
		c.goaway(n.cfg.RetryMs)
	}
}

// OnData implements engines.Handler: the connection's Client decodes and handles every whole
// frame in in and leaves a partial one.
func (n *Node) OnData(conn engines.Conn, in []byte) (int, error) {
	c, _ := conn.Context().(*Client)
	if c == nil {
		return len(in), nil
	}
	return c.onData(in), nil
}

// OnClose implements engines.Handler.
func (n *Node) OnClose(conn engines.Conn, err error) {
	n.conns.Add(-1)
	n.m.conns.Dec()
	if c, _ := conn.Context().(*Client); c != nil {
		c.onClose(err)
	}
}

// register adds a logged-in client to the session table and closes those it displaces (GOAWAY
// EVICTED): the device's previous connection and the user's oldest past the per-user limit.
func (n *Node) register(c *Client) {
	for _, old := range n.table.Add(c) {
		n.m.evictions.Inc()
		old.evict()
	}
}

// unregister removes a closing client from the indexes, and reports whether it was in the table.
// The last client to leave a draining node ends Drain's wait.
func (n *Node) unregister(c *Client) bool {
	n.groups.LeaveAll(c)
	removed := n.table.Remove(c)
	if n.draining.Load() && n.table.Len() == 0 {
		n.emptyOnce.Do(func() { close(n.emptied) })
	}
	return removed
}

// notify posts a connection state change to the businesses' notify URLs, never blocking.
func (n *Node) notify(typ string, c *Client, reason string) {
	gen := c.gen.Load()
	if n.notifier == nil || gen == 0 {
		return
	}
	n.notifier.Notify(forward.Event{Type: typ, App: c.app, Device: c.device, User: c.user, Conn: c.id(),
		Node: n.cfg.Node, Gen: gen, Reason: reason, At: n.clock.Now().UnixMilli()})
}

// nextGen returns a connection generation above every one this node handed out and at least
// floor (the login time), so generations increase per device across restarts too.
func (n *Node) nextGen(floor uint64) uint64 {
	for {
		last := n.lastGen.Load()
		g := max(last+1, floor)
		if n.lastGen.CompareAndSwap(last, g) {
			return g
		}
	}
}

// expire runs on the wheel for each due client: the login timeout before login, the idle
// timeout after. A client has one wheel entry at a time; activity only stamps lastSeen, and the
// entry is re-armed here at the real deadline.
func (n *Node) expire(now time.Time, c *Client) {
	switch st := c.state(); st {
	case session.StateClosed:
		return
	case session.StateConnected, session.StateAuthenticating:
		n.m.timeouts.WithLabelValues("login").Inc()
		c.fail(frame.CodeLoginTimeout, "no login within "+n.cfg.LoginTimeout.String())
	case session.StateActive, session.StateDraining:
		deadline := time.Unix(0, c.lastSeen.Load()).Add(n.cfg.IdleTimeout)
		if !now.Before(deadline) {
			n.m.timeouts.WithLabelValues("idle").Inc()
			c.fail(frame.CodeIdleTimeout, "no frame within "+n.cfg.IdleTimeout.String())
			return
		}
		n.wheel.Add(deadline, c)
	}
}
