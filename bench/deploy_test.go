package bench

import (
	"context"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// Ports picked for one deployment must differ: the kernel may hand out a port again as soon as
// it is closed.
func TestFreePortsDistinct(t *testing.T) {
	for range 20 {
		ports, err := FreePorts(50)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int]bool{}
		for _, p := range ports {
			if seen[p] || p <= 0 {
				t.Fatalf("port %d twice or invalid in %v", p, ports)
			}
			seen[p] = true
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string // "" = valid
	}{
		{Config{}, ""},
		{Config{DeployConfig: DeployConfig{Instances: 6, Route: RouteRedis}, Conns: 100_000}, ""},
		{Config{DeployConfig: DeployConfig{Instances: 3}}, "--instances 3 with --route memory"},
		{Config{DeployConfig: DeployConfig{Instances: 2, Route: RouteMemory}}, "use --route redis"},
		{Config{Workers: -1}, "--workers -1: must be 0"},
		{Config{Conns: 20_500, Workers: 1}, "--workers 1: 20500 connections each, at most 15000 per worker process"},
		{Config{Conns: 10, Workers: 11}, "--workers 11: more than the 10 connections"},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" {
			if err != nil {
				t.Errorf("%+v: %v", tc.cfg, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}

func TestDeployConfigRoute(t *testing.T) {
	for _, tc := range []struct {
		cfg  DeployConfig
		want string
	}{
		{DeployConfig{Route: "etcd"}, `route "etcd": want memory or redis`},
		{DeployConfig{Route: RouteRedis, Mode: "gossip"}, `mode "gossip": want registry or broadcast`},
		{DeployConfig{RedisAddr: "127.0.0.1:6379"}, `with route "memory": set route redis`},
		{DeployConfig{Transport: "http"}, `transport "http": want one of tcp, tls, ws, wss, quic`},
		{DeployConfig{MoreTransports: []string{"ws", "sctp"}}, `transport "sctp"`},
		{DeployConfig{Engine: "quic", Transport: "ws"}, `engine "quic" carries no stream transport`},
	} {
		tc.cfg.LogDir = t.TempDir()
		if err := tc.cfg.setDefaults(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
	ok := DeployConfig{LogDir: t.TempDir()}
	if err := ok.setDefaults(); err != nil || ok.Route != RouteMemory || ok.Mode != ModeRegistry || ok.Transport != "tcp" {
		t.Errorf("defaults: %v route %q mode %q transport %q", err, ok.Route, ok.Mode, ok.Transport)
	}
	// Over QUIC the engine recorded is quic's; the gateways' tcp listener runs on std.
	q := DeployConfig{LogDir: t.TempDir(), Engine: "gnet", Transport: "quic", MoreTransports: []string{"tcp", "ws", "quic"}}
	if err := q.setDefaults(); err != nil || q.Engine != "quic" || q.streamEngine() != "std" {
		t.Errorf("quic: %v engine %q stream engine %q", err, q.Engine, q.streamEngine())
	}
	if got := q.transports(); !slices.Equal(got, []string{"quic", "ws"}) {
		t.Errorf("listeners besides tcp %v, want quic, ws", got)
	}
}

// The Makefile refuses bad bench variables before building anything, naming the variable.
func TestMakefileBenchValidation(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not installed")
	}
	for _, tc := range []struct {
		vars []string
		want string
	}{
		{[]string{"ROUTE=etcd"}, "ROUTE=etcd: want memory or redis"},
		{[]string{"MODE=gossip"}, "MODE=gossip: want registry or broadcast"},
		{[]string{"INSTANCES=3"}, "INSTANCES=3 with ROUTE=memory"},
		{[]string{"TRANSPORT=http"}, "TRANSPORT=http: want tcp, tls, ws, wss or quic"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, "make", append([]string{"-s", "-C", "..", "bench-redis"}, tc.vars...)...).CombinedOutput()
		cancel()
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("make bench-redis %v: err %v, output %q, want %q", tc.vars, err, out, tc.want)
		}
	}
	out, err := exec.Command("make", "-s", "-C", "..", "bench-redis").CombinedOutput()
	if err != nil {
		t.Errorf("make bench-redis with the defaults: %v\n%s", err, out)
	}
}
