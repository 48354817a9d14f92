// Package loadgen is pushwire's load generator: it connects simulated devices through the
// control layer with the Go SDK, holds them, and pushes to them through the gateways' push API at
// a fixed rate, measuring end-to-end latency from each message's intended send time into HDR
// histograms and counting every message as delivered or accounted for.
//
// A run is a coordinator (Run) and worker processes (ServeWorker, started by the coordinator from
// Config.WorkerCommand), each holding a slice of the devices — at most MaxConnsPerWorker, since a
// process may hold 20,000 open files — and dialling from its own source addresses. The
// coordinator runs the phases: it asks the workers to ramp, send upstream requests or join groups,
// and calls the push API itself, through a gateway chosen at random (never by where the targets
// are), while the workers record each arrival's latency into HDR histograms. At each phase's end
// it collects every worker's histogram and merges them (never averaging percentiles) and sums
// their counts. One worker runs the same code as many.
package loadgen

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/quic-go/quic-go"

	"github.com/pushwire/pushwire/client"
	"github.com/pushwire/pushwire/internal/transport"
	"github.com/pushwire/pushwire/results"
)

// Config is one load run. The zero value of a field means its documented default.
type Config struct {
	ControlURL  string   // required
	GatewayHTTP []string // required: every gateway's HTTP base URL (push API and stats)
	App         string   // required
	Secret      string   // required: the app secret devices prove
	PushKey     string   // required: the app's push key

	// GatewayAdmin are the gateways' admin base URLs, in the order of GatewayHTTP: the memory
	// snapshots, which force a garbage collection first (/v1/stats?gc=1, served on the admin
	// listener only), are read there. Default none: memory is read without a forced collection.
	GatewayAdmin []string

	Conns          int           // connections to open; default 10,000
	ConnectRate    float64       // new connections per second; default 2,000
	RampTimeout    time.Duration // give up waiting for the ramp after; default Conns/ConnectRate + 60s
	Idle           time.Duration // idle hold; default 10s
	PushRate       float64       // unicast pushes per second; default 2,000
	PushDuration   time.Duration // how long to push; default 10s
	PushBiz        uint16        // default 1
	PushSenders    int           // concurrent push API callers; default 64
	Drain          time.Duration // wait for the last deliveries after pushing; default 10s
	Sources        []string      // local IPs to dial from, shared among the workers; default none (kernel's choice)
	DevicePrefix   string        // device IDs are prefix + index; default "lg-<unix time>-"
	Engine         string        // labels for the result
	Transport      string        // the clients' protocol (see Transport below); default "tcp"
	Commit         string        // for the result's environment
	ResultConfig   map[string]any
	Logger         *slog.Logger
	ProgressPeriod time.Duration // how often progress is logged; default 2s
	MetricsAddr    string        // serve Prometheus /metrics here (see metrics.go); default "" (off)

	// Transport (above) is the protocol every client uses: tcp, tls, ws, wss or quic. Each
	// client's Transports is [Transport], so control's endpoints of other protocols are passed
	// over. Clients of ws and wss say platform "web" (browsers), the others "native". With
	// Sources, QUIC's UDP sockets are bound to them in turn, as the TCP dialer's are.

	// CAFile is a PEM file of the roots that verify the gateways under tls, wss and quic.
	// Default "": the system roots.
	CAFile string
	// WSOrigin is the Origin header of the clients' WebSocket upgrades (ws, wss); default none.
	WSOrigin string
	// WSPath is the request path of the WebSocket upgrade; default "/ws".
	WSPath string

	// Workers is the number of worker processes; default ceil(Conns / MaxConnsPerWorker).
	Workers int
	// WorkerCommand is the command line of a worker process (it must run ServeWorker on its
	// stdin and stdout). Default: this executable with "loadgen worker".
	WorkerCommand []string
	// WorkerEnv is added to the workers' environment.
	WorkerEnv []string
	// WorkerLog receives the workers' logs. Default os.Stderr.
	WorkerLog io.Writer
	// LogLevel is the workers' log level (debug, info, warn, error); default info.
	LogLevel string

	// Route and Mode label the result: the gateways' route store (memory, redis) and delivery
	// mode (registry, broadcast). Defaults memory and registry.
	Route, Mode string
	// RedisAddr is the route store's Redis server (host:port), read with INFO for the commands
	// each push phase cost, its memory and version. Default "": none.
	RedisAddr string

	// Phases names the phases to run, in order, from DefaultPhases; ramp always runs first.
	// Default: DefaultPhases.
	Phases          []string
	RequestRate     float64       // upstream REQUESTs per second; default 2,000
	RequestDuration time.Duration // default 10s
	RequestBiz      uint16        // default 1
	RequestSenders  int           // requests in flight at most; default 256
	GroupSize       int           // members of each group in the group phase; default 1,000
	GroupRate       float64       // group pushes per second; default 10
	GroupDuration   time.Duration // default 10s
	GroupBiz        uint16        // a biz that lets clients join; default 1
	FanoutPushes    int           // messages of the group-all and broadcast phases, one a second; default 5

	// ProfileDir, when set, is where a CPU profile covering each phase and a heap profile at its
	// end are saved of every gateway (from its admin URL: GatewayAdmin is then required), as
	// <phase>-<node>-cpu.pprof and <phase>-<node>-heap.pprof; Phase.Profiles lists them.
	// Default "": no profiles.
	ProfileDir string

	// Capacity, when set, makes the run a capacity search: after the ramp, each of these
	// workloads (results.Workload*: connect, upstream, push, batch, group, broadcast) in turn
	// runs in steps of rising rate, each a phase "<workload>@<rate>", instead of Phases, and
	// Result.Capacity gets the ceilings (see capacity.go). Default none: a plain run.
	Capacity []string
	P99Limit time.Duration // a step holds with its p99 at most this; default 50ms
	// BroadcastP99Limit is the broadcast workload's own limit (one message to every connection
	// cannot reach the last of 10,000 within 50ms: see results.DefaultBroadcastP99Limit);
	// default 500ms.
	BroadcastP99Limit time.Duration
	StepDuration      time.Duration      // how long each step sends; default 5s
	Refine            int                // bisections between the last rate that held and the first that failed; default 2, negative: none
	BatchSize         int                // devices per push API call of the batch workload; default 10
	StartRates        map[string]float64 // a workload's first step's rate; default DefaultStartRates
	MaxRates          map[string]float64 // the highest rate a workload's search tries; default DefaultMaxRates

	caPEM []byte // CAFile's contents, read by setDefaults and handed to the workers
}

// certPool is the pool of the certificates in pem; none is an error.
func certPool(pem []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("no PEM certificate in it")
	}
	return pool, nil
}

// platformOf is the platform a client of proto says it is: WebSocket clients stand for
// browsers and mini-apps.
func platformOf(proto string) string {
	if proto == transport.WS || proto == transport.WSS {
		return "web"
	}
	return "native"
}

func (c *Config) setDefaults() error {
	switch {
	case c.ControlURL == "":
		return errors.New("loadgen: control URL required")
	case len(c.GatewayHTTP) == 0:
		return errors.New("loadgen: at least one gateway HTTP URL required")
	case len(c.GatewayAdmin) > 0 && len(c.GatewayAdmin) != len(c.GatewayHTTP):
		return fmt.Errorf("loadgen: gateway admin URLs: %d for %d gateways (one per gateway, in the same order)", len(c.GatewayAdmin), len(c.GatewayHTTP))
	case c.ProfileDir != "" && len(c.GatewayAdmin) == 0:
		return fmt.Errorf("loadgen: profile dir %q: the profiles are fetched from the gateways' admin URLs, and none is given", c.ProfileDir)
	case c.App == "" || c.Secret == "" || c.PushKey == "":
		return errors.New("loadgen: app, secret and push key required")
	}
	if c.Conns <= 0 {
		c.Conns = 10_000
	}
	if c.Workers < 0 {
		return fmt.Errorf("loadgen: workers %d: must be positive (0: one per %d connections)", c.Workers, MaxConnsPerWorker)
	}
	if c.Workers == 0 {
		c.Workers = (c.Conns + MaxConnsPerWorker - 1) / MaxConnsPerWorker
	}
	if c.Workers > c.Conns {
		return fmt.Errorf("loadgen: workers %d: more than the %d connections", c.Workers, c.Conns)
	}
	if per := (c.Conns + c.Workers - 1) / c.Workers; per > MaxConnsPerWorker {
		return fmt.Errorf("loadgen: workers %d: %d connections each, at most %d per worker process (its open-file limit); use at least %d",
			c.Workers, per, MaxConnsPerWorker, (c.Conns+MaxConnsPerWorker-1)/MaxConnsPerWorker)
	}
	if len(c.WorkerCommand) == 0 {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("loadgen: locating this executable for the workers: %w", err)
		}
		c.WorkerCommand = []string{exe, "loadgen", "worker"}
	}
	if c.WorkerLog == nil {
		c.WorkerLog = os.Stderr
	}
	if c.Route == "" {
		c.Route = "memory"
	}
	if c.Mode == "" {
		c.Mode = "registry"
	}
	if c.ConnectRate <= 0 {
		c.ConnectRate = 2000
	}
	if c.RampTimeout <= 0 {
		c.RampTimeout = time.Duration(float64(c.Conns)/c.ConnectRate*float64(time.Second)) + 60*time.Second
	}
	if c.Idle <= 0 {
		c.Idle = 10 * time.Second
	}
	if c.PushRate <= 0 {
		c.PushRate = 2000
	}
	if c.PushDuration <= 0 {
		c.PushDuration = 10 * time.Second
	}
	if c.PushBiz == 0 {
		c.PushBiz = 1
	}
	if c.PushSenders <= 0 {
		c.PushSenders = 64
	}
	if c.Drain <= 0 {
		c.Drain = 10 * time.Second
	}
	if len(c.Phases) == 0 {
		c.Phases = DefaultPhases
	}
	for _, ph := range c.Phases {
		if !slices.Contains(DefaultPhases, ph) {
			return fmt.Errorf("loadgen: unknown phase %q (have %s)", ph, strings.Join(DefaultPhases, ", "))
		}
	}
	if c.RequestRate <= 0 {
		c.RequestRate = 2000
	}
	if c.RequestDuration <= 0 {
		c.RequestDuration = 10 * time.Second
	}
	if c.RequestBiz == 0 {
		c.RequestBiz = 1
	}
	if c.RequestSenders <= 0 {
		c.RequestSenders = 256
	}
	if err := c.capacityDefaults(); err != nil {
		return err
	}
	if c.GroupSize <= 0 {
		c.GroupSize = 1000
	}
	if c.GroupRate <= 0 {
		c.GroupRate = 10
	}
	if c.GroupDuration <= 0 {
		c.GroupDuration = 10 * time.Second
	}
	if c.GroupBiz == 0 {
		c.GroupBiz = 1
	}
	if c.FanoutPushes <= 0 {
		c.FanoutPushes = 5
	}
	if c.DevicePrefix == "" {
		c.DevicePrefix = "lg-" + strconv.FormatInt(time.Now().Unix(), 36) + "-"
	}
	if c.Transport == "" {
		c.Transport = transport.TCP
	}
	if !transport.Known(c.Transport) {
		return fmt.Errorf("loadgen: transport %q: want one of %s", c.Transport, strings.Join(transport.Protocols, ", "))
	}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return fmt.Errorf("loadgen: CA file: %w", err)
		}
		if _, err := certPool(pem); err != nil {
			return fmt.Errorf("loadgen: CA file %s: %w", c.CAFile, err)
		}
		c.caPEM = pem
	}
	if c.WSPath == "" {
		c.WSPath = transport.DefaultPath
	}
	if c.WSPath[0] != '/' {
		return fmt.Errorf("loadgen: WebSocket path %q does not start with /", c.WSPath)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.ProgressPeriod <= 0 {
		c.ProgressPeriod = 2 * time.Second
	}
	for _, s := range c.Sources {
		if net.ParseIP(s) == nil {
			return fmt.Errorf("loadgen: source address %q is not an IP", s)
		}
	}
	return nil
}

func (c *Config) resultConfig() map[string]any {
	m := map[string]any{
		"conns":            c.Conns,
		"connect_rate":     c.ConnectRate,
		"idle_s":           c.Idle.Seconds(),
		"push_rate":        c.PushRate,
		"push_duration_s":  c.PushDuration.Seconds(),
		"push_senders":     c.PushSenders,
		"gateways":         len(c.GatewayHTTP),
		"source_addresses": len(c.Sources),
		"phases":           strings.Join(c.Phases, ","),
		"request_rate":     c.RequestRate,
		"group_size":       c.GroupSize,
		"group_rate":       c.GroupRate,
		"fanout_pushes":    c.FanoutPushes,
		"workers":          c.Workers,
		"route":            c.Route,
		"mode":             c.Mode,
		"transport":        c.Transport,
	}
	if c.ProfileDir != "" {
		m["profile_dir"] = c.ProfileDir
	}
	for k, v := range c.ResultConfig {
		m[k] = v
	}
	return m
}

// errReason classifies a client error for the per-reason counts: control_<status>,
// gateway_<code>, timeout, refused, handshake_<transport>, reset, other.
func errReason(err error) string {
	var ce *client.ControlError
	var se *client.Error
	var ne net.Error
	var he *transport.HandshakeError
	var qe *quic.TransportError
	switch {
	case errors.As(err, &ce):
		return "control_" + strconv.Itoa(ce.Status)
	case errors.As(err, &se):
		return "gateway_" + se.Code.String()
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &qe) && qe.ErrorCode == quic.ConnectionRefused:
		return "refused" // a QUIC server refuses a connection its accept queue has no room for
	case errors.As(err, &he): // TLS, WebSocket upgrade or QUIC handshake refused
		return "handshake_" + he.Proto
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
		return "reset"
	}
	return "other"
}

// pushAnswer mirrors the push API's answer: targets = delivered + forwarded + offline + failed,
// and remote is what the instances the push was forwarded to reported back.
type pushAnswer struct {
	Targets   int64 `json:"targets"`
	Delivered int64 `json:"delivered"`
	Forwarded int64 `json:"forwarded"`
	Offline   int64 `json:"offline"`
	Failed    int64 `json:"failed"`
	Remote    *struct {
		Instances int64 `json:"instances"`
		Reported  int64 `json:"reported"`
		Delivered int64 `json:"delivered"`
		Offline   int64 `json:"offline"`
		Stale     int64 `json:"stale"`
		Failed    int64 `json:"failed"`
	} `json:"remote,omitempty"`
}

func latencyOf(h *hdrhistogram.Histogram) *results.Latency {
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return &results.Latency{
		Count: h.TotalCount(),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
		Mean:  h.Mean() / 1000,
	}
}
