// Package bench runs the workbench: a local deployment of the real system — the control layer
// and gateway instances as separate processes of the pushwire binary — loaded by the load
// generator in its own process, with a result file at the end. Integration tests use the same
// deployment.
package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/pushwire/pushwire/core/forward"
	"github.com/pushwire/pushwire/core/gateway"
	"github.com/pushwire/pushwire/engines"
	_ "github.com/pushwire/pushwire/engines/all" // the registered engines, for the transports they carry
	"github.com/pushwire/pushwire/engines/tlslayer"
	"github.com/pushwire/pushwire/internal/redisproc"
)

// DeployConfig describes a local deployment.
type DeployConfig struct {
	// Binary is the pushwire binary to run. Default: this executable.
	Binary string
	// Engine is the gateways' I/O engine. Default "std". With Transport quic it is recorded as
	// "quic" (the engine that carries QUIC); the gateways' tcp listener then runs on std.
	Engine string
	// Transport is the transport the deployment is measured over: tcp (default), tls, ws, wss or
	// quic. Each gateway serves it on a listener of its own next to its tcp listener (GatewayAddrs:
	// the raw TCP access the tests use), and control hands out only this transport's endpoints
	// (with the Redis route every listener is registered; clients keep to their transport). For
	// tls, wss and quic Deploy writes a self-signed certificate for 127.0.0.1 and localhost into
	// the log directory (Deployment.CAFile).
	Transport string
	// MoreTransports are further transports every gateway serves, each on a listener of its own,
	// and control hands out after Transport's, in this order (a test of every transport at once).
	MoreTransports []string
	// Instances is the number of gateway processes. Default 1.
	Instances int
	// Heartbeat is the interval clients are told to ping at. Default 30s.
	Heartbeat time.Duration
	// GatewayArgs are extra flags for every gateway (e.g. "--login-timeout=1s").
	GatewayArgs []string
	// ControlArgs are extra flags for the control layer (e.g. "--cors-origins", origin).
	ControlArgs []string
	// Backend starts the demo business server (pushwire backend) and configures Businesses for it.
	Backend bool
	// Businesses configures the gateways' businesses. A BackendURL or NotifyURL that starts with
	// "backend:" is a path on the demo backend ("backend:/echo?delay=2s"). Default with Backend:
	// DefaultBusinesses.
	Businesses map[uint16]gateway.Business
	// Route is the route store the gateways and control share: "memory" (default; one instance,
	// or several islands) or "redis", for which Deploy starts a redis-server on a free port (or
	// uses RedisAddr) and stops it with the deployment.
	Route string
	// Mode is the gateways' delivery mode with Redis: "registry" (default) or "broadcast".
	Mode string
	// RedisAddr is an already running Redis for Route "redis" (host:port); default: Deploy starts
	// its own.
	RedisAddr string
	// LogDir receives each process's log. Default: a new temporary directory.
	LogDir string
	// Logger reports progress. Default slog.Default().
	Logger *slog.Logger
	// CPUs are the CPUs every process of the deployment (gateways, control, the backend, Redis)
	// starts on: its affinity, which also sizes GOMAXPROCS in each. Empty: wherever the kernel
	// puts them.
	CPUs []int
}

// Deployment is a running local deployment. Stop it when done.
type Deployment struct {
	ControlURL   string   // control API base URL
	ControlAdmin string   // control's admin base URL: /metrics, /debug/pprof, /v1/instances
	GatewayAddrs []string // client (TCP) addresses
	GatewayHTTP  []string // push API / stats base URLs
	GatewayAdmin []string // admin base URLs: /v1/stats?gc=1, /metrics, /debug/pprof
	App          string
	Secret       string // the app's secret (devices prove it at connect)
	PushKey      string // the app's push key
	ConfigPath   string // the deployment config file
	BackendURL   string // the demo backend's base URL, with DeployConfig.Backend
	RedisAddr    string // the route store's Redis (host:port), with Route "redis"
	LogDir       string
	// Endpoints are each gateway's access points, protocol://host:port, by transport (Transport's
	// and MoreTransports').
	Endpoints map[string][]string
	// CAFile is the PEM certificate the gateways' TLS listeners present, which clients trust as a
	// root ("" when no transport needs one).
	CAFile string

	cfg   DeployConfig
	log   *slog.Logger
	mu    sync.Mutex
	procs []*process
	redis *redisproc.Proc // the Redis Deploy started, if any
}

type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func (c *DeployConfig) setDefaults() error {
	if c.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: locating the pushwire binary: %w", err)
		}
		c.Binary = exe
	}
	if c.Engine == "" {
		c.Engine = "std"
	}
	if c.Transport == "" {
		c.Transport = engines.TransportTCP
	}
	for _, t := range append([]string{c.Transport}, c.MoreTransports...) {
		if !slices.Contains(deployTransports, t) {
			return fmt.Errorf("bench: transport %q: want one of %s", t, strings.Join(deployTransports, ", "))
		}
	}
	switch {
	case c.Engine == EngineFloor:
		// The floor (pushwire floor) speaks plain TCP only and forwards to no business.
		if c.Transport != engines.TransportTCP || len(c.MoreTransports) > 0 {
			return fmt.Errorf("bench: engine %s serves tcp only, not %s: set the transport to tcp", EngineFloor,
				strings.Join(append([]string{c.Transport}, c.MoreTransports...), ","))
		}
		if c.Route == RouteRedis || c.Instances > 1 {
			return fmt.Errorf("bench: engine %s is one instance on no route store: not %d instances, route %q", EngineFloor, c.Instances, c.Route)
		}
	case c.Transport == engines.TransportQUIC:
		c.Engine = engines.TransportQUIC
	case !engines.Carries(c.Engine, engines.TransportTCP):
		return fmt.Errorf("bench: engine %q carries no stream transport: it serves %s only (set the transport)", c.Engine, c.Engine)
	}
	if c.Instances <= 0 {
		c.Instances = 1
	}
	switch c.Route {
	case "":
		c.Route = RouteMemory
	case RouteMemory, RouteRedis:
	default:
		return fmt.Errorf("bench: route %q: want %s or %s", c.Route, RouteMemory, RouteRedis)
	}
	switch c.Mode {
	case "":
		c.Mode = ModeRegistry
	case ModeRegistry, ModeBroadcast:
	default:
		return fmt.Errorf("bench: mode %q: want %s or %s", c.Mode, ModeRegistry, ModeBroadcast)
	}
	if c.RedisAddr != "" && c.Route != RouteRedis {
		return fmt.Errorf("bench: a Redis address (%s) with route %q: set route %s", c.RedisAddr, c.Route, RouteRedis)
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Backend && c.Businesses == nil {
		c.Businesses = DefaultBusinesses()
	}
	if c.LogDir == "" {
		dir, err := os.MkdirTemp("", "pushwire-deploy-")
		if err != nil {
			return err
		}
		c.LogDir = dir
	}
	return os.MkdirAll(c.LogDir, 0o755)
}

// deployTransports are the transports a deployment serves, in the order a gateway's flags list them.
var deployTransports = []string{engines.TransportTCP, engines.TransportTLS, engines.TransportWS, engines.TransportWSS, engines.TransportQUIC}

// streamEngine is the engine of the gateways' stream listeners: the configured engine, or std when
// it is the QUIC engine (which serves only --quic-listen).
func (c *DeployConfig) streamEngine() string {
	if engines.Carries(c.Engine, engines.TransportTCP) {
		return c.Engine
	}
	return "std"
}

// transports are the transports the gateways serve besides their tcp listener, without repeats.
func (c *DeployConfig) transports() []string {
	var out []string
	for _, t := range append([]string{c.Transport}, c.MoreTransports...) {
		if t != engines.TransportTCP && !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// EngineFloor is DeployConfig.Engine for the floor: `pushwire floor` processes in place of
// gateways, the raw-epoll yardstick the engines are measured against.
const EngineFloor = "floor"

// Route stores and delivery modes (DeployConfig.Route, DeployConfig.Mode).
const (
	RouteMemory   = "memory"
	RouteRedis    = "redis"
	ModeRegistry  = "registry"
	ModeBroadcast = "broadcast"
)

// limitsYAML raises the control layer's connect limits for a load run: every device of a run
// connects from a handful of source addresses, once.
const limitsYAML = `limits:
  connect_per_source: {rate: 100000/s, burst: 100000}
  connect_per_device: {rate: 10/s, burst: 10}
`

// Business IDs of DefaultBusinesses.
const (
	BizEcho  = 1 // echo, clients may join groups, connection notifications
	BizSlow  = 2 // echo after 2s with a pool of 2 and a queue of 2: a business that saturates
	BizDrop  = 3 // echo; pushes that overflow a write queue are dropped, not closing it
	BizGroup = 4 // the bench's group pushes; clients may join
)

// DefaultBusinesses is the demo deployment's set of businesses, all served by the demo backend.
func DefaultBusinesses() map[uint16]gateway.Business {
	return map[uint16]gateway.Business{
		BizEcho:  {Biz: forward.Biz{Name: "echo", BackendURL: "backend:/echo", NotifyURL: "backend:/notify", PoolSize: 32}, AllowJoin: true},
		BizSlow:  {Biz: forward.Biz{Name: "slow", BackendURL: "backend:/echo?delay=2s", PoolSize: 2, QueueLen: 2, Timeout: 10 * time.Second}},
		BizDrop:  {Biz: forward.Biz{Name: "drop", BackendURL: "backend:/echo"}, SlowConsumer: gateway.SlowConsumerDrop},
		BizGroup: {Biz: forward.Biz{Name: "group", BackendURL: "backend:/echo"}, AllowJoin: true},
	}
}

// businessesYAML renders the businesses section with backend: URLs resolved.
func businessesYAML(biz map[uint16]gateway.Business, backend string) (string, error) {
	if len(biz) == 0 {
		return "", nil
	}
	resolve := func(u string) string {
		if rest, ok := strings.CutPrefix(u, "backend:"); ok {
			return backend + rest
		}
		return u
	}
	out := make(map[uint16]gateway.Business, len(biz))
	for id, b := range biz {
		b.BackendURL, b.NotifyURL = resolve(b.BackendURL), resolve(b.NotifyURL)
		if strings.HasPrefix(b.BackendURL, "backend:") || strings.HasPrefix(b.NotifyURL, "backend:") {
			return "", fmt.Errorf("bench: biz %d uses the demo backend: set Backend", id)
		}
		out[id] = b
	}
	y, err := yaml.Marshal(map[string]any{"businesses": out})
	return string(y), err
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// freeUDPPort returns a UDP port on 127.0.0.1 that was free a moment ago.
func freeUDPPort() (int, error) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("bench: finding a free UDP port: %w", err)
	}
	defer func() { _ = pc.Close() }()
	return pc.LocalAddr().(*net.UDPAddr).Port, nil
}

// FreePorts returns n distinct TCP ports on 127.0.0.1 that were free a moment ago. It holds every
// port until it has all of them: picking them one at a time, the kernel may hand out the same
// port twice.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: finding a free port: %w", err)
		}
		defer func() { _ = ln.Close() }()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Deploy writes a configuration with fresh secrets, starts the control layer and the gateways, and
// waits until every one answers /healthz. On error it stops whatever it started.
func Deploy(ctx context.Context, cfg DeployConfig) (*Deployment, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	d := &Deployment{
		App:     "bench",
		Secret:  randomHex(16),
		PushKey: randomHex(16),
		LogDir:  cfg.LogDir,
		cfg:     cfg,
		log:     cfg.Logger,
	}
	extra := cfg.transports()
	ports, err := FreePorts(3 + (3+len(extra))*cfg.Instances) // control, 3 per gateway and one per extra transport, backend, control admin
	if err != nil {
		return nil, err
	}
	d.ControlURL = "http://127.0.0.1:" + strconv.Itoa(ports[0])
	d.Endpoints = map[string][]string{}
	listenArgs := make([][]string, cfg.Instances) // each gateway's listener flags
	per := 3 + len(extra)
	for i := range cfg.Instances {
		base := 1 + per*i
		addr := "127.0.0.1:" + strconv.Itoa(ports[base])
		d.GatewayAddrs = append(d.GatewayAddrs, addr)
		d.GatewayHTTP = append(d.GatewayHTTP, "http://127.0.0.1:"+strconv.Itoa(ports[base+1]))
		d.GatewayAdmin = append(d.GatewayAdmin, "http://127.0.0.1:"+strconv.Itoa(ports[base+2]))
		d.Endpoints[engines.TransportTCP] = append(d.Endpoints[engines.TransportTCP], "tcp://"+addr)
		listenArgs[i] = []string{"--listen", addr}
		for j, t := range extra {
			port := ports[base+3+j]
			if t == engines.TransportQUIC {
				// A free TCP port is not always a free UDP one.
				if port, err = freeUDPPort(); err != nil {
					return nil, err
				}
			}
			a := "127.0.0.1:" + strconv.Itoa(port)
			d.Endpoints[t] = append(d.Endpoints[t], t+"://"+a)
			listenArgs[i] = append(listenArgs[i], "--"+t+"-listen", a)
		}
	}
	// Control hands out the measured transport's endpoints, then MoreTransports', gateway by gateway.
	var endpoints, health []string
	for _, t := range append([]string{cfg.Transport}, cfg.MoreTransports...) {
		if slices.ContainsFunc(endpoints, func(e string) bool { return strings.HasPrefix(e, t+"://") }) {
			continue
		}
		endpoints = append(endpoints, d.Endpoints[t]...)
		health = append(health, d.GatewayHTTP...)
	}
	if cfg.Backend {
		d.BackendURL = "http://127.0.0.1:" + strconv.Itoa(ports[len(ports)-2])
	}
	d.ControlAdmin = "http://127.0.0.1:" + strconv.Itoa(ports[len(ports)-1])
	biz, err := businessesYAML(cfg.Businesses, d.BackendURL)
	if err != nil {
		return nil, err
	}
	d.ConfigPath = filepath.Join(cfg.LogDir, "pushwire.yaml")
	conf := fmt.Sprintf(`# written by pushwire bench
token:
  ttl: 1h
  keys:
    - {id: bench1, secret: %q}
heartbeat: %ds
apps:
  - id: %s
    secret: %q
    push_key: %q
`, randomHex(16), int(cfg.Heartbeat/time.Second), d.App, d.Secret, d.PushKey) + limitsYAML + biz
	if err := os.WriteFile(d.ConfigPath, []byte(conf), 0o600); err != nil {
		return nil, err
	}
	var certArgs []string
	if slices.ContainsFunc(extra, func(t string) bool {
		return t == engines.TransportTLS || t == engines.TransportWSS || t == engines.TransportQUIC
	}) {
		dir := filepath.Join(cfg.LogDir, "certs")
		certFile, keyFile, err := "", "", os.MkdirAll(dir, 0o700)
		if err == nil {
			certFile, keyFile, err = tlslayer.SelfSigned(dir, "localhost", "127.0.0.1")
		}
		if err != nil {
			return nil, fmt.Errorf("bench: transports %s: writing a self-signed certificate: %w", strings.Join(extra, ","), err)
		}
		d.CAFile = certFile
		certArgs = []string{"--tls-cert", certFile, "--tls-key", keyFile}
	}
	ok := false
	defer func() {
		if !ok {
			_ = d.Stop()
		}
	}()
	var gwRoute, ctlRoute []string
	if cfg.Route == RouteRedis {
		d.RedisAddr = cfg.RedisAddr
		if d.RedisAddr == "" {
			dir, err := filepath.Abs(filepath.Join(cfg.LogDir, "redis"))
			if err == nil {
				err = os.MkdirAll(dir, 0o755)
			}
			if err != nil {
				return nil, fmt.Errorf("bench: route redis: the server's directory: %w", err)
			}
			var rp *redisproc.Proc
			err = onCPUs(cfg.CPUs, func() (err error) {
				rp, err = redisproc.Start(ctx, redisproc.Options{Dir: dir})
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("bench: route redis: starting redis-server: %w", err)
			}
			d.redis, d.RedisAddr = rp, rp.Addr()
		}
		gwRoute = []string{"--route", RouteRedis, "--redis", d.RedisAddr, "--route-mode", cfg.Mode, "--instance-ttl", "10s"}
		ctlRoute = []string{"--route", RouteRedis, "--redis", d.RedisAddr}
	}
	if cfg.Backend {
		if err := d.start("backend", "backend", "--listen", strings.TrimPrefix(d.BackendURL, "http://")); err != nil {
			return nil, err
		}
	}
	for i := range cfg.Instances {
		if cfg.Engine == EngineFloor {
			// The gateway's flags the floor has; GatewayArgs must be floor flags too.
			args := []string{"floor", "--config", d.ConfigPath,
				"--http", strings.TrimPrefix(d.GatewayHTTP[i], "http://"),
				"--admin", strings.TrimPrefix(d.GatewayAdmin[i], "http://"), "--node", fmt.Sprintf("gw%d", i)}
			args = append(args, listenArgs[i]...)
			args = append(args, cfg.GatewayArgs...)
			if err := d.start(fmt.Sprintf("gateway-%d", i), args...); err != nil {
				return nil, err
			}
			continue
		}
		args := []string{"gateway", "--config", d.ConfigPath, "--engine", cfg.streamEngine(),
			"--http", strings.TrimPrefix(d.GatewayHTTP[i], "http://"),
			"--admin", strings.TrimPrefix(d.GatewayAdmin[i], "http://"), "--node", fmt.Sprintf("gw%d", i),
			"--drain-window", "2s"}
		args = append(args, listenArgs[i]...)
		args = append(args, certArgs...)
		if gwRoute != nil {
			args = append(args, gwRoute...)
			for _, t := range deployTransports {
				if eps := d.Endpoints[t]; eps != nil {
					args = append(args, "--advertise", eps[i])
				}
			}
		}
		args = append(args, cfg.GatewayArgs...)
		if err := d.start(fmt.Sprintf("gateway-%d", i), args...); err != nil {
			return nil, err
		}
	}
	ctlArgs := []string{"control", "--config", d.ConfigPath, "--listen", strings.TrimPrefix(d.ControlURL, "http://"),
		"--admin", strings.TrimPrefix(d.ControlAdmin, "http://")}
	if ctlRoute != nil {
		// control hands out the live gateways registered in Redis, least loaded first
		ctlArgs = append(ctlArgs, ctlRoute...)
	} else {
		ctlArgs = append(ctlArgs, "--endpoint", strings.Join(endpoints, ","), "--endpoint-health", strings.Join(health, ","))
	}
	ctlArgs = append(ctlArgs, cfg.ControlArgs...)
	if err := d.start("control", ctlArgs...); err != nil {
		return nil, err
	}
	urls := append(append([]string(nil), d.GatewayHTTP...), d.ControlURL)
	if cfg.Backend {
		urls = append(urls, d.BackendURL)
	}
	for _, u := range urls {
		if err := d.waitHealthy(ctx, u); err != nil {
			return nil, err
		}
	}
	if cfg.Route == RouteRedis {
		// Control hands out only the gateways it has read from the registry: the load starts
		// once it lists every one.
		if err := d.waitRegistered(ctx, cfg.Instances); err != nil {
			return nil, err
		}
	}
	ok = true
	d.log.Info("deployment up", "engine", cfg.Engine, "transport", cfg.Transport, "gateways", cfg.Instances, "control", d.ControlURL,
		"route", cfg.Route, "mode", cfg.Mode, "redis", d.RedisAddr, "logs", cfg.LogDir)
	return d, nil
}

func (d *Deployment) start(name string, args ...string) error {
	logPath := filepath.Join(d.LogDir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return err
	}
	cmd := exec.Command(d.cfg.Binary, args...)
	cmd.Stdout = f
	cmd.Stderr = f
	// Own process group: a terminal's Ctrl-C reaches the bench, which stops the children in order;
	// and the children die with the bench if it is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := startOn(d.cfg.CPUs, cmd); err != nil {
		_ = f.Close()
		return fmt.Errorf("bench: starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	d.mu.Lock()
	d.procs = append(d.procs, p)
	d.mu.Unlock()
	return nil
}

// waitRegistered waits until control's /v1/instances lists n gateways.
func (d *Deployment) waitRegistered(ctx context.Context, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	seen := -1
	for {
		var out struct {
			Instances []json.RawMessage `json:"instances"`
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.ControlAdmin+"/v1/instances", nil)
		if err != nil {
			return err
		}
		if resp, err := http.DefaultClient.Do(req); err == nil {
			if resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&out) == nil {
				seen = len(out.Instances)
			}
			_ = resp.Body.Close()
		}
		if seen >= n {
			return nil
		}
		if p := d.exited(); p != nil {
			return fmt.Errorf("bench: %s exited: %v\n%s", p.name, p.err, tail(p.log, 15))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: control lists %d of %d gateways in the registry after 30s", seen, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (d *Deployment) waitHealthy(ctx context.Context, base string) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if exited := d.exited(); exited != nil {
			return fmt.Errorf("bench: %s exited during start-up: %v\n%s", exited.name, exited.err, tail(exited.log, 15))
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("bench: %s not healthy: %v", base, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exited returns a process that has already exited, if any.
func (d *Deployment) exited() *process {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.procs {
		select {
		case <-p.done:
			return p
		default:
		}
	}
	return nil
}

// Terminate sends SIGTERM to the named process ("gateway-0", "control", "backend") and waits up to
// timeout for it to exit. It returns the process's exit error, or an error if it did not exit.
func (d *Deployment) Terminate(name string, timeout time.Duration) error {
	return d.signal(name, syscall.SIGTERM, timeout)
}

// Kill sends SIGKILL to the named process, as a crash would end it, and waits up to timeout for it
// to be gone; the process then counts as exited (Check reports it). It returns an error only if
// there is no such process or it did not die.
func (d *Deployment) Kill(name string, timeout time.Duration) error {
	if err := d.signal(name, syscall.SIGKILL, timeout); err != nil && !strings.Contains(err.Error(), "killed") {
		return err
	}
	return nil
}

// Signal sends sig to the named process and returns at once (SIGHUP: a gateway reloads its
// certificate files).
func (d *Deployment) Signal(name string, sig syscall.Signal) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, p := range d.procs {
		if p.name == name {
			return p.cmd.Process.Signal(sig)
		}
	}
	return fmt.Errorf("bench: no process %q", name)
}

func (d *Deployment) signal(name string, sig syscall.Signal, timeout time.Duration) error {
	d.mu.Lock()
	var p *process
	for _, q := range d.procs {
		if q.name == name {
			p = q
		}
	}
	d.mu.Unlock()
	if p == nil {
		return fmt.Errorf("bench: no process %q", name)
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("bench: %s did not exit within %v of %v", name, timeout, sig)
	}
}

// Check returns an error naming any process of the deployment that has exited.
func (d *Deployment) Check() error {
	if p := d.exited(); p != nil {
		return fmt.Errorf("bench: %s exited: %v\n%s", p.name, p.err, tail(p.log, 15))
	}
	return nil
}

// Stop stops every process (gateways first, then control, then the Redis it started): SIGTERM,
// then SIGKILL after 15s. It returns the first process failure other than the stop itself.
func (d *Deployment) Stop() error {
	d.mu.Lock()
	procs := d.procs
	d.procs = nil
	rp := d.redis
	d.redis = nil
	d.mu.Unlock()
	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		select {
		case <-p.done:
			if p.err != nil {
				errs = append(errs, fmt.Errorf("%s exited early: %w", p.name, p.err))
			}
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			if p.err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.name, p.err))
			}
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
			errs = append(errs, fmt.Errorf("%s did not stop within 15s; killed", p.name))
		}
	}
	if rp != nil {
		if err := rp.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("redis-server: %w", err))
		}
	}
	return errors.Join(errs...)
}

// tail returns the last n lines of a file, for error messages.
func tail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	var lines []string
	sc := bufio.NewScanner(io.LimitReader(f, 8<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}
