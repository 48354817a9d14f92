package loadgen

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pushwire/pushwire/results"
)

// Profiles of the gateways during a phase (Config.ProfileDir): a CPU profile of each gateway
// covering the phase, started at its start, and a heap profile at its end, fetched from the
// gateway's admin listener (/debug/pprof) and written as DIR/<phase>-<node>-cpu.pprof and
// DIR/<phase>-<node>-heap.pprof. A fetch that fails is logged and leaves that profile out.

// profileSlack is how much longer than its N seconds a CPU profile may take to arrive.
const profileSlack = 10 * time.Second

// maxProfileBytes bounds a profile read.
const maxProfileBytes = 256 << 20

// profiler is the profiles of one phase being taken.
type profiler struct {
	c     *coord
	dir   string // absolute
	phase string
	nodes []string // the gateways' node IDs, in the order of GatewayAdmin

	wg  sync.WaitGroup
	mu  sync.Mutex
	cpu []results.Profile
}

// profileSeconds is N of a CPU profile covering a phase meant to send for expect: whole
// seconds, rounded up, plus one (the drain), at least 1.
func profileSeconds(expect time.Duration) int {
	return max(int(math.Ceil(expect.Seconds()))+1, 1)
}

// startProfiles starts a CPU profile of every gateway for phase name, meant to send for expect
// (nil without Config.ProfileDir).
func (c *coord) startProfiles(ctx context.Context, name string, expect time.Duration) *profiler {
	if c.cfg.ProfileDir == "" || len(c.cfg.GatewayAdmin) == 0 {
		return nil
	}
	dir, err := filepath.Abs(c.cfg.ProfileDir)
	if err == nil {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		c.log.Warn(name+": no profiles", "dir", c.cfg.ProfileDir, "err", err)
		return nil
	}
	pf := &profiler{c: c, dir: dir, phase: name, nodes: make([]string, len(c.cfg.GatewayAdmin))}
	n := profileSeconds(expect)
	hc := &http.Client{Transport: c.http.Transport, Timeout: time.Duration(n)*time.Second + profileSlack}
	for i, admin := range c.cfg.GatewayAdmin {
		pf.wg.Add(1)
		go func() {
			defer pf.wg.Done()
			// The node ID names the file: read it first, with the profile started right after.
			pf.nodes[i] = c.nodeID(ctx, i)
			url := admin + "/debug/pprof/profile?seconds=" + strconv.Itoa(n)
			if p, ok := pf.fetch(ctx, hc, url, pf.nodes[i], "cpu"); ok {
				pf.mu.Lock()
				pf.cpu = append(pf.cpu, p)
				pf.mu.Unlock()
			}
		}()
	}
	return pf
}

// nodeID is gateway i's node ID from its stats ("gw<i>" when they cannot be read).
func (c *coord) nodeID(ctx context.Context, i int) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := fetchStats(ctx, c.http, c.cfg.GatewayHTTP[i], false)
	if err != nil || st.Node == "" {
		return "gw" + strconv.Itoa(i)
	}
	return st.Node
}

// finish takes the heap profiles at the phase end, waits for the CPU profiles, and returns
// every profile written, the CPU ones first, each kind in the order of the gateways.
func (pf *profiler) finish(ctx context.Context) []results.Profile {
	if pf == nil {
		return nil
	}
	hc := &http.Client{Transport: pf.c.http.Transport, Timeout: 30 * time.Second}
	heap := make([]*results.Profile, len(pf.c.cfg.GatewayAdmin))
	var wg sync.WaitGroup
	for i, admin := range pf.c.cfg.GatewayAdmin {
		wg.Add(1)
		go func() {
			defer wg.Done()
			node := pf.c.nodeID(ctx, i)
			if p, ok := pf.fetch(ctx, hc, admin+"/debug/pprof/heap", node, "heap"); ok {
				heap[i] = &p
			}
		}()
	}
	wg.Wait()
	pf.wg.Wait() // each CPU fetch ends within its N seconds + profileSlack
	var out []results.Profile
	for _, node := range pf.nodes {
		for _, p := range pf.cpu {
			if p.Node == node {
				out = append(out, p)
			}
		}
	}
	for _, p := range heap {
		if p != nil {
			out = append(out, *p)
		}
	}
	return out
}

// fetch gets one profile from url and writes it; ok false (logged) when it failed.
func (pf *profiler) fetch(ctx context.Context, hc *http.Client, url, node, kind string) (results.Profile, bool) {
	b, err := getProfile(ctx, hc, url)
	if err == nil {
		path := filepath.Join(pf.dir, profileFile(pf.phase, node, kind))
		if err = os.WriteFile(path, b, 0o644); err == nil {
			return results.Profile{Node: node, Kind: kind, Path: path}, true
		}
	}
	pf.c.log.Warn(pf.phase+": "+kind+" profile not saved", "node", node, "err", err)
	return results.Profile{}, false
}

// getProfile reads a pprof profile from url: a gzip-compressed protocol buffer, checked by its
// magic bytes.
func getProfile(ctx context.Context, hc *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxProfileBytes))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(string(b[:min(len(b), 200)])))
	}
	if !isPprof(b) {
		return nil, fmt.Errorf("%s: not a gzip-compressed profile (%d bytes)", url, len(b))
	}
	return b, nil
}

// isPprof says whether b starts as a pprof file does: the gzip magic.
func isPprof(b []byte) bool {
	return bytes.HasPrefix(b, []byte{0x1f, 0x8b})
}

// profileFile is the file name of a profile: <phase>-<node>-<kind>.pprof, each part reduced to
// letters, digits, '.', '_' and '-' (a capacity step "push@1500" gives "push_at_1500"), never
// starting with a dot.
func profileFile(phase, node, kind string) string {
	return safeName(phase) + "-" + safeName(node) + "-" + kind + ".pprof"
}

func safeName(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			b.WriteRune(r)
		case r == '@':
			b.WriteString("_at_")
		default:
			b.WriteByte('_')
		}
	}
	out := strings.TrimLeft(b.String(), ".")
	if out == "" {
		out = "_"
	}
	return out
}
