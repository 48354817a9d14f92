package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pushwire/pushwire/results"
)

// coord is the coordinator of a run.
type coord struct {
	cfg  Config
	log  *slog.Logger
	http *http.Client // push API and stats
	wc   *http.Client // the workers' API (calls as long as a phase)

	workers []*workerProc
	m       *coordMetrics // nil unless Config.MetricsAddr is set

	// redisIdleRate is the Redis commands per second of the idle phase: the cluster's background,
	// subtracted from the push phases' counts (0: not measured).
	redisIdleRate float64

	errMu  sync.Mutex
	errors map[string]int64

	// pushCalls counts the push API calls the coordinator has sent since the start, each just
	// before it goes out (see sendClock): the per-second series reads it.
	pushCalls atomic.Int64
}

// workerProc is one worker process as the coordinator sees it.
type workerProc struct {
	idx, lo, hi int
	base        string // its API's base URL
	cmd         *exec.Cmd
	stdin       io.WriteCloser
	done        chan struct{} // closed when it has exited
	err         error         // its exit, after done
}

// Run starts the workers, runs the phases and returns the result. It closes every connection
// and stops every worker before returning, also when ctx ends early (the result then holds the
// phases done).
func Run(ctx context.Context, cfg Config) (*results.Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	tr := &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second}
	c := &coord{
		cfg:    cfg,
		log:    cfg.Logger,
		http:   &http.Client{Transport: tr, Timeout: 30 * time.Second},
		wc:     &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
		errors: map[string]int64{},
	}
	defer tr.CloseIdleConnections()
	started := time.Now()
	res := &results.Result{
		Schema:    results.SchemaVersion,
		ID:        results.NewID(started, cfg.Engine, cfg.Transport),
		StartedAt: started.UTC(),
		Engine:    cfg.Engine,
		Transport: cfg.Transport,
		Config:    cfg.resultConfig(),
		Env:       results.CaptureEnv(cfg.Commit),
		Cluster:   &results.Cluster{Route: cfg.Route, Mode: cfg.Mode, Workers: cfg.Workers},
	}
	defer func() { res.Duration = time.Since(started).Seconds() }()
	if cfg.RedisAddr != "" {
		info, err := redisInfo(ctx, cfg.RedisAddr, "server")
		if err != nil {
			return res, err
		}
		res.Cluster.RedisVersion = info["redis_version"]
		defer func() {
			if info, err := redisInfo(context.Background(), cfg.RedisAddr, "memory"); err == nil {
				res.Cluster.RedisMemoryBytes = parseUint(info["used_memory"])
			}
		}()
	}
	if cfg.MetricsAddr != "" {
		m, stop, err := serveMetrics(cfg.MetricsAddr, c.workerMetricsURLs, c.wc, c.log)
		if err != nil {
			return res, err
		}
		defer stop()
		c.m = m
	}
	defer c.stopWorkers()
	if err := c.startWorkers(ctx); err != nil {
		return res, err
	}

	base, err := c.snapshot(ctx, true)
	if err != nil {
		return res, err
	}
	run := map[string]func(context.Context, snapshot) (results.Phase, error){
		results.PhaseRamp: c.ramp, results.PhaseIdle: c.idle, results.PhaseUpstream: c.upstream,
		results.PhasePush: c.push, results.PhaseGroup: c.group, PhaseGroupAll: c.groupAll,
		results.PhaseBroadcast: c.broadcast,
	}
	phases := append([]string{results.PhaseRamp}, slices.DeleteFunc(slices.Clone(cfg.Phases), func(s string) bool { return s == results.PhaseRamp })...)
	if len(cfg.Capacity) > 0 {
		phases = phases[:1] // a capacity search: the ramp, then the search's steps
	}
	for _, name := range phases {
		c.m.setPhase(name)
		p, err := run[name](ctx, base)
		res.Phases = append(res.Phases, p)
		if err == nil {
			err = c.workerExited()
		}
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			return res, err
		}
	}
	if len(cfg.Capacity) > 0 {
		if err := c.capacity(ctx, base, res); err != nil {
			res.Errors = append(res.Errors, err.Error())
			return res, err
		}
	}
	return res, nil
}

// startWorkers starts Config.Workers processes, hands each its slice of the devices and its
// source addresses, and waits for each to answer with its API address.
func (c *coord) startWorkers(ctx context.Context) error {
	n := c.cfg.Workers
	c.log.Info("loadgen: starting workers", "workers", n, "conns", c.cfg.Conns, "sources", len(c.cfg.Sources))
	errc := make(chan error, n)
	c.workers = make([]*workerProc, n)
	for i := range n {
		w := &workerProc{idx: i, lo: i * c.cfg.Conns / n, hi: (i + 1) * c.cfg.Conns / n, done: make(chan struct{})}
		c.workers[i] = w
		go func() { errc <- c.startWorker(ctx, w) }()
	}
	var errs []error
	for range n {
		errs = append(errs, <-errc)
	}
	return errors.Join(errs...)
}

// workerSources are worker i's source addresses of all: every n-th one from i (or, with fewer
// addresses than workers, one shared).
func workerSources(all []string, i, n int) []string {
	if len(all) == 0 {
		return nil
	}
	var out []string
	for j := i; j < len(all); j += n {
		out = append(out, all[j])
	}
	if len(out) == 0 {
		out = []string{all[i%len(all)]}
	}
	return out
}

func (c *coord) startWorker(ctx context.Context, w *workerProc) error {
	spec := WorkerSpec{
		Index: w.idx, Lo: w.lo, Hi: w.hi,
		ControlURL: c.cfg.ControlURL, App: c.cfg.App, Secret: c.cfg.Secret,
		DevicePrefix: c.cfg.DevicePrefix, Sources: workerSources(c.cfg.Sources, w.idx, c.cfg.Workers),
		PushBiz: c.cfg.PushBiz, LogLevel: c.cfg.LogLevel,
		Transport: c.cfg.Transport, CAPEM: c.cfg.caPEM, WSOrigin: c.cfg.WSOrigin, WSPath: c.cfg.WSPath,
	}
	line, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	argv := c.cfg.WorkerCommand
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), c.cfg.WorkerEnv...)
	cmd.Stderr = c.cfg.WorkerLog
	// Own process group (a terminal's Ctrl-C reaches the coordinator, which closes the workers'
	// connections first), and death with the coordinator.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		close(w.done)
		return fmt.Errorf("loadgen: starting worker %d (%s): %w", w.idx, strings.Join(argv, " "), err)
	}
	w.cmd, w.stdin = cmd, stdin
	if _, err := stdin.Write(append(line, '\n')); err != nil {
		_ = cmd.Process.Kill()
	}
	addr := make(chan string, 1)
	go func() {
		br := bufio.NewReader(stdout)
		l, _ := br.ReadBytes('\n')
		var hello struct {
			Addr string `json:"addr"`
		}
		if json.Unmarshal(l, &hello) == nil && hello.Addr != "" {
			addr <- hello.Addr
		}
		_, _ = io.Copy(io.Discard, br)
		w.err = cmd.Wait()
		close(w.done)
	}()
	t := time.NewTimer(30 * time.Second)
	defer t.Stop()
	select {
	case a := <-addr:
		w.base = "http://" + a
		c.log.Debug("loadgen: worker up", "worker", w.idx, "devices", w.hi-w.lo, "api", w.base, "sources", spec.Sources)
		return nil
	case <-w.done:
		return fmt.Errorf("loadgen: worker %d exited before it was ready: %v", w.idx, w.err)
	case <-t.C:
		_ = cmd.Process.Kill()
		return fmt.Errorf("loadgen: worker %d did not answer within 30s", w.idx)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		return ctx.Err()
	}
}

// workerExited returns an error naming a worker that has exited, if any.
func (c *coord) workerExited() error {
	for _, w := range c.workers {
		select {
		case <-w.done:
			return fmt.Errorf("loadgen: worker %d exited: %v", w.idx, w.err)
		default:
		}
	}
	return nil
}

// stopWorkers closes the workers' connections, then ends them (closing their stdin), killing
// any that does not exit within 30s.
func (c *coord) stopWorkers() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for _, w := range c.workers {
		if w == nil || w.cmd == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if w.base != "" {
				_ = c.call(ctx, w, http.MethodPost, "/close", struct{}{}, nil)
			}
			_ = w.stdin.Close()
			select {
			case <-w.done:
			case <-time.After(30 * time.Second):
				_ = w.cmd.Process.Kill()
				<-w.done
			}
		}()
	}
	wg.Wait()
}

func (c *coord) workerMetricsURLs() []string {
	var out []string
	for _, w := range c.workers {
		if w != nil && w.base != "" {
			out = append(out, w.base+"/metrics")
		}
	}
	return out
}

// call makes one worker API call; out may be nil.
func (c *coord) call(ctx context.Context, w *workerProc, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, w.base+path, body)
	if err != nil {
		return err
	}
	resp, err := c.wc.Do(req)
	if err != nil {
		return fmt.Errorf("loadgen: worker %d %s: %w", w.idx, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("loadgen: worker %d %s: %w", w.idx, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("loadgen: worker %d %s: %s: %s", w.idx, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// all calls every worker at once; each answer goes to out(i) (nil: discarded).
func (c *coord) all(ctx context.Context, method, path string, in func(w *workerProc) any, out func(i int) any) error {
	errs := make([]error, len(c.workers))
	var wg sync.WaitGroup
	for i, w := range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var o any
			if out != nil {
				o = out(i)
			}
			var body any
			if in != nil {
				body = in(w)
			}
			errs[i] = c.call(ctx, w, method, path, body, o)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// status sums the workers' counts now.
func (c *coord) status(ctx context.Context) (workerStatus, error) {
	st := make([]workerStatus, len(c.workers))
	err := c.all(ctx, http.MethodGet, "/status", nil, func(i int) any { return &st[i] })
	var sum workerStatus
	for _, s := range st {
		sum.Connected += s.Connected
		sum.Delivered += s.Delivered
		sum.Dups += s.Dups
		sum.Disconnects += s.Disconnects
		sum.Requests += s.Requests
	}
	return sum, err
}

// collected is the workers' collected figures for a phase, merged.
type collected struct {
	workerStatus
	lastRecv time.Time
	errors   map[string]int64
	hist     *hdrhistogram.Histogram // latency from the intended send times
	histU    *hdrhistogram.Histogram // from the actual send times
}

// collect gathers every worker's phase figures: counts summed, histograms merged.
func (c *coord) collect(ctx context.Context) (collected, error) {
	ans := make([]collectAns, len(c.workers))
	err := c.all(ctx, http.MethodGet, "/collect", nil, func(i int) any { return &ans[i] })
	if err != nil {
		return collected{}, err
	}
	return mergeCollected(ans), nil
}

// mergeCollected sums the workers' counts and merges their HDR histograms, the corrected and
// the uncorrected each into one (the percentiles of all the samples, never an average of the
// workers' percentiles).
func mergeCollected(ans []collectAns) collected {
	out := collected{hist: newHist(), histU: newHist(), errors: map[string]int64{}}
	var last int64
	for _, a := range ans {
		out.Connected += a.Connected
		out.Delivered += a.Delivered
		out.Dups += a.Dups
		out.Disconnects += a.Disconnects
		out.Requests += a.Requests
		last = max(last, a.LastRecvNS)
		for k, v := range a.Errors {
			out.errors[k] += v
		}
		if a.Hist != nil {
			out.hist.Merge(hdrhistogram.Import(a.Hist))
		}
		if a.HistUncorrected != nil {
			out.histU.Merge(hdrhistogram.Import(a.HistUncorrected))
		}
	}
	if last > 0 {
		out.lastRecv = time.Unix(0, last)
	}
	return out
}

func (c *coord) countErr(reason string) {
	c.errMu.Lock()
	c.errors[reason]++
	c.errMu.Unlock()
}

func (c *coord) takeErrors() map[string]int64 {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	m := c.errors
	c.errors = map[string]int64{}
	return m
}

// mergeErrors adds b's counts to a (either may be nil) and returns nil for none.
func mergeErrors(a, b map[string]int64) map[string]int64 {
	if len(a)+len(b) == 0 {
		return nil
	}
	out := map[string]int64{}
	for k, v := range a {
		out[k] += v
	}
	for k, v := range b {
		out[k] += v
	}
	return out
}
