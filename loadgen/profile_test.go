package loadgen

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestProfileFile(t *testing.T) {
	for _, tc := range []struct{ phase, node, kind, want string }{
		{"push", "gw-1", "cpu", "push-gw-1-cpu.pprof"},
		{"push@1500.5", "gw-1", "heap", "push_at_1500.5-gw-1-heap.pprof"},
		{"group-all", "../etc/x y", "cpu", "group-all-_etc_x_y-cpu.pprof"},
		{"..", "", "cpu", "_-_-cpu.pprof"},
	} {
		if got := profileFile(tc.phase, tc.node, tc.kind); got != tc.want {
			t.Errorf("%q %q %q: %q, want %q", tc.phase, tc.node, tc.kind, got, tc.want)
		}
		if got := profileFile(tc.phase, tc.node, tc.kind); filepath.Base(got) != got {
			t.Errorf("%q is not a plain file name", got)
		}
	}
}

func TestProfileSeconds(t *testing.T) {
	for d, want := range map[time.Duration]int{0: 1, 500 * time.Millisecond: 2, 3 * time.Second: 4, 3001 * time.Millisecond: 5} {
		if got := profileSeconds(d); got != want {
			t.Errorf("%v: %d, want %d", d, got, want)
		}
	}
}

// pprofServer serves the Go runtime's own /debug/pprof handlers, as a gateway's admin
// listener does.
func pprofServer(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/text", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("not a profile")) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// A phase's profiles: a CPU profile covering it and a heap profile at its end, written under
// the phase and node names, gzip-compressed, listed with absolute paths.
func TestProfiles(t *testing.T) {
	srv := pprofServer(t)
	dir := filepath.Join(t.TempDir(), "profiles")
	cfg := Config{ControlURL: "http://127.0.0.1:1", GatewayHTTP: []string{srv.URL}, GatewayAdmin: []string{srv.URL},
		App: "a", Secret: "s", PushKey: "k", ProfileDir: dir, Logger: discard()}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	c := &coord{cfg: cfg, log: cfg.Logger, http: &http.Client{Transport: &http.Transport{}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pf := c.startProfiles(ctx, "push@10", 0) // a 1 s profile
	got := pf.finish(ctx)
	if len(got) != 2 || got[0].Kind != "cpu" || got[1].Kind != "heap" {
		t.Fatalf("profiles %+v, want a cpu and a heap one", got)
	}
	for _, p := range got {
		if p.Node != "gw0" || !filepath.IsAbs(p.Path) || filepath.Dir(p.Path) != dir ||
			filepath.Base(p.Path) != "push_at_10-gw0-"+p.Kind+".pprof" {
			t.Errorf("profile %+v", p)
		}
		b, err := os.ReadFile(p.Path)
		if err != nil || !isPprof(b) {
			t.Errorf("%s: %d bytes, gzip %v, %v", p.Path, len(b), isPprof(b), err)
		}
	}

	// Not a profile, or no answer: logged, left out, not fatal.
	if _, err := getProfile(ctx, c.http, srv.URL+"/debug/pprof/text"); err == nil || !strings.Contains(err.Error(), "not a gzip-compressed profile") {
		t.Errorf("text: %v", err)
	}
	if _, err := getProfile(ctx, c.http, srv.URL+"/nothing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("404: %v", err)
	}
	c.cfg.GatewayAdmin = []string{"http://127.0.0.1:1"}
	if got := c.startProfiles(ctx, "idle", 0).finish(ctx); len(got) != 0 {
		t.Errorf("profiles of a gateway that is not there: %+v", got)
	}
	c.cfg.ProfileDir = ""
	if pf := c.startProfiles(ctx, "idle", 0); pf != nil || pf.finish(ctx) != nil {
		t.Error("profiles without a directory")
	}
}

func TestProfileDirNeedsAdmin(t *testing.T) {
	cfg := Config{ControlURL: "http://127.0.0.1:1", GatewayHTTP: []string{"http://127.0.0.1:2"}, App: "a", Secret: "s", PushKey: "k", ProfileDir: "/tmp/x"}
	err := cfg.setDefaults()
	if err == nil || !strings.Contains(err.Error(), "profile dir") || !strings.Contains(err.Error(), "admin") {
		t.Errorf("setDefaults: %v", err)
	}
}
