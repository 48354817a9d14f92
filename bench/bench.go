package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pushwire/pushwire/loadgen"
	"github.com/pushwire/pushwire/results"
)

// Config is one measured run: a deployment and the load to put on it.
type Config struct {
	DeployConfig

	Conns        int           // connections; default 10,000
	ConnectRate  float64       // connects per second; default 2,000
	Idle         time.Duration // idle hold; default 10s
	PushRate     float64       // unicast pushes per second; default 2,000
	PushDuration time.Duration // default 10s
	Sources      int           // source addresses 127.0.0.2…; default one per 8,000 connections
	// Workers is the load generator's worker processes; default one per 15,000 connections
	// (loadgen.MaxConnsPerWorker).
	Workers     int
	OutDir      string    // result files; default "results"
	Commit      string    // recorded in the result
	Progress    io.Writer // the load generator's progress log; default os.Stderr
	LoadgenArgs []string  // more flags for the load generator (phases and their settings)
	// LoadgenMetrics is the address the load generator serves its Prometheus /metrics on
	// (loadgen --metrics); default "" (off).
	LoadgenMetrics string
	// OnDeploy, when set, is called once the deployment is up, before the load starts (pushwire
	// bench --tui starts the dashboard from it).
	OnDeploy func(*Deployment)
	// Placement puts the deployment's processes and the load generator's on CPUs (nil: the
	// kernel chooses); it is recorded in the result. Its Gateway set applies to the deployment
	// unless DeployConfig.CPUs is set.
	Placement *Placement
	// Profile saves CPU and heap profiles of every gateway per phase (the load generator's
	// --profile-dir) into ProfileDir, default <LogDir>/profiles; the result lists them with paths
	// relative to its own directory.
	Profile    bool
	ProfileDir string
}

// Validate checks the settings a user chooses, naming the flag of each that is wrong.
func (c *Config) Validate() error {
	if c.Instances > 1 && (c.Route == "" || c.Route == RouteMemory) {
		return fmt.Errorf("bench: --instances %d with --route memory: gateways on the memory route are islands that cannot reach each other's devices; use --route redis (make bench ROUTE=redis)", c.Instances)
	}
	if c.Workers < 0 {
		return fmt.Errorf("bench: --workers %d: must be 0 (one per %d connections) or more", c.Workers, loadgen.MaxConnsPerWorker)
	}
	conns := c.Conns
	if conns <= 0 {
		conns = 10_000
	}
	if c.Workers > 0 && (conns+c.Workers-1)/c.Workers > loadgen.MaxConnsPerWorker {
		return fmt.Errorf("bench: --workers %d: %d connections each, at most %d per worker process", c.Workers, (conns+c.Workers-1)/c.Workers, loadgen.MaxConnsPerWorker)
	}
	if c.Workers > conns {
		return fmt.Errorf("bench: --workers %d: more than the %d connections", c.Workers, conns)
	}
	return nil
}

func (c *Config) setDefaults() {
	if c.Conns <= 0 {
		c.Conns = 10_000
	}
	if c.ConnectRate <= 0 {
		c.ConnectRate = 2000
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
	if c.Sources <= 0 {
		c.Sources = (c.Conns + 7999) / 8000
	}
	if c.OutDir == "" {
		c.OutDir = "results"
	}
	if c.Progress == nil {
		c.Progress = os.Stderr
	}
}

// SourceAddrs returns n loopback source addresses from 127.0.0.2 on.
func SourceAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.0.%d.%d", (i+2)/250, (i+2)%250)
	}
	return out
}

// Run deploys, runs the load generator in its own process against the deployment, stops
// everything (also when ctx ends), and writes the result file. It returns the result and its
// path; a result is written also for a failed run, as far as it got.
func Run(ctx context.Context, cfg Config) (*results.Result, string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, "", err
	}
	cfg.setDefaults()
	if cfg.LogDir == "" {
		name := cfg.Engine
		if cfg.Transport != "" && cfg.Transport != "tcp" {
			name += "-" + cfg.Transport
		}
		cfg.LogDir = filepath.Join(cfg.OutDir, "logs", time.Now().UTC().Format("20060102T150405Z")+"-"+name)
	}
	if cfg.Placement != nil && len(cfg.CPUs) == 0 {
		cfg.CPUs = cfg.Placement.Gateway
	}
	if cfg.Profile && cfg.ProfileDir == "" {
		cfg.ProfileDir = filepath.Join(cfg.LogDir, "profiles")
	}
	dep, err := Deploy(ctx, cfg.DeployConfig)
	if err != nil {
		return nil, "", err
	}
	defer func() { _ = dep.Stop() }()
	log := cfg.Logger
	if log == nil {
		log = dep.log
	}

	resultFile := filepath.Join(dep.LogDir, "loadgen-result.json")
	args := []string{"loadgen",
		"--control", dep.ControlURL,
		"--gateways", strings.Join(dep.GatewayHTTP, ","),
		"--gateway-admin", strings.Join(dep.GatewayAdmin, ","),
		"--app", dep.App, "--secret", dep.Secret, "--push-key", dep.PushKey,
		"--conns", strconv.Itoa(cfg.Conns),
		"--rate", strconv.FormatFloat(cfg.ConnectRate, 'f', -1, 64),
		"--idle", cfg.Idle.String(),
		"--push-rate", strconv.FormatFloat(cfg.PushRate, 'f', -1, 64),
		"--push-duration", cfg.PushDuration.String(),
		"--sources", strings.Join(SourceAddrs(cfg.Sources), ","),
		"--engine", dep.cfg.Engine,
		"--transport", dep.cfg.Transport,
		"--instances", strconv.Itoa(dep.cfg.Instances),
		"--commit", cfg.Commit,
		"--result-file", resultFile,
		"--workers", strconv.Itoa(cfg.Workers),
		"--route", dep.cfg.Route, "--mode", dep.cfg.Mode,
	}
	if dep.RedisAddr != "" {
		args = append(args, "--redis", dep.RedisAddr)
	}
	if dep.CAFile != "" {
		args = append(args, "--ca", dep.CAFile)
	}
	if cfg.Profile {
		dir, err := filepath.Abs(cfg.ProfileDir)
		if err == nil {
			err = os.MkdirAll(dir, 0o755)
		}
		if err != nil {
			return nil, "", fmt.Errorf("bench: --profile: the profiles' directory: %w", err)
		}
		args = append(args, "--profile-dir", dir)
	}
	args = append(args, cfg.LoadgenArgs...)
	if cfg.LoadgenMetrics != "" {
		args = append(args, "--metrics", cfg.LoadgenMetrics)
	}
	log.Info("watch it live", "gateways", strings.Join(dep.MetricsURLs(), ","), "loadgen", cfg.loadgenMetricsURL(),
		"cmd", dep.TUICommand(cfg.loadgenMetricsURL()))
	if cfg.OnDeploy != nil {
		cfg.OnDeploy(dep)
	}
	cmd := exec.Command(dep.cfg.Binary, args...)
	cmd.Stdout = cfg.Progress
	cmd.Stderr = cfg.Progress
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	log.Info("load generator starting", "engine", dep.cfg.Engine, "transport", dep.cfg.Transport, "conns", cfg.Conns, "rate", cfg.ConnectRate, "sources", cfg.Sources,
		"workers", cfg.Workers, "route", dep.cfg.Route, "mode", dep.cfg.Mode)
	var lgCPUs []int
	if cfg.Placement != nil {
		lgCPUs = cfg.Placement.Loadgen
	}
	if err := startOn(lgCPUs, cmd); err != nil {
		return nil, "", fmt.Errorf("bench: starting the load generator: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var runErr error
	select {
	case runErr = <-done:
	case <-ctx.Done():
		log.Warn("interrupted; stopping the load generator")
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case runErr = <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			runErr = <-done
		}
		if runErr == nil {
			runErr = ctx.Err()
		}
	}
	if err := dep.Check(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	res, rerr := results.Read(resultFile)
	if rerr != nil {
		return nil, "", errors.Join(fmt.Errorf("bench: the load generator wrote no result: %w", rerr), runErr)
	}
	if runErr != nil {
		res.Errors = append(res.Errors, runErr.Error())
	}
	res.Placement = cfg.Placement.Result()
	relativeProfiles(res, cfg.OutDir)
	if serr := dep.Stop(); serr != nil {
		res.Errors = append(res.Errors, serr.Error())
		runErr = errors.Join(runErr, serr)
	}
	path, werr := results.Write(cfg.OutDir, res)
	if werr != nil {
		return res, "", errors.Join(runErr, werr)
	}
	return res, path, runErr
}

// loadgenMetricsURL is the load generator's /metrics URL ("" when off).
func (c *Config) loadgenMetricsURL() string {
	if c.LoadgenMetrics == "" {
		return ""
	}
	return "http://" + c.LoadgenMetrics + "/metrics"
}

// MetricsURLs returns every gateway's Prometheus /metrics URL.
func (d *Deployment) MetricsURLs() []string {
	out := make([]string, len(d.GatewayHTTP))
	for i, u := range d.GatewayHTTP {
		out[i] = u + "/metrics"
	}
	return out
}

// TUICommand is the command line that watches the deployment live (pushwire tui, which asks
// control for the gateways), with the load generator's metrics URL when it is not empty.
func (d *Deployment) TUICommand(loadgenMetrics string) string {
	cmd := "pushwire tui --control " + d.ControlAdmin
	if loadgenMetrics != "" {
		cmd += " --loadgen " + loadgenMetrics
	}
	return cmd
}

// relativeProfiles rewrites the profiles' paths of res relative to dir, the directory the result
// file goes to, for those that lie under it (others stay as written).
func relativeProfiles(res *results.Result, dir string) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return
	}
	for i := range res.Phases {
		for j := range res.Phases[i].Profiles {
			pr := &res.Phases[i].Profiles[j]
			if !filepath.IsAbs(pr.Path) {
				continue
			}
			if rel, err := filepath.Rel(abs, pr.Path); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				pr.Path = filepath.ToSlash(rel)
			}
		}
	}
}
