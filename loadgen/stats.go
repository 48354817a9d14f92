package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/pushwire/pushwire/results"
)

// instanceStats mirrors the JSON of a gateway's GET /v1/stats.
type instanceStats struct {
	Node            string  `json:"node"`
	Engine          string  `json:"engine"`
	State           string  `json:"state"`
	Conns           int64   `json:"conns"`
	Sessions        int     `json:"sessions"`
	RSSBytes        uint64  `json:"rss_bytes"`
	HeapObjectBytes uint64  `json:"heap_object_bytes"`
	HeapLiveBytes   uint64  `json:"heap_live_bytes"`
	Goroutines      int     `json:"goroutines"`
	GCCycles        uint64  `json:"gc_cycles"`
	GCCPUSeconds    float64 `json:"gc_cpu_seconds"`
	CPUSeconds      float64 `json:"cpu_seconds"`
	AllocObjects    uint64  `json:"alloc_objects"` // heap allocations since start
	AllocBytes      uint64  `json:"alloc_bytes"`
	GCPauses        struct {
		Bounds []float64 `json:"bounds"`
		Counts []uint64  `json:"counts"`
	} `json:"gc_pauses"`
}

// snapshot is every instance's stats at one moment.
type snapshot []instanceStats

// fetchStats reads a gateway's /v1/stats at base; with gc, base must be the gateway's admin
// listener, the only one that forces a collection.
func fetchStats(ctx context.Context, hc *http.Client, base string, gc bool) (instanceStats, error) {
	url := base + "/v1/stats"
	if gc {
		url += "?gc=1"
	}
	var st instanceStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return st, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return st, fmt.Errorf("loadgen: stats %s: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("loadgen: stats %s: status %s", base, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return st, fmt.Errorf("loadgen: stats %s: %w", base, err)
	}
	return st, nil
}

func (c *coord) snapshot(ctx context.Context, gc bool) (snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	snap := make(snapshot, len(c.cfg.GatewayHTTP))
	for i, base := range c.cfg.GatewayHTTP {
		forced := gc && len(c.cfg.GatewayAdmin) > 0
		if forced {
			base = c.cfg.GatewayAdmin[i]
		}
		st, err := fetchStats(ctx, c.http, base, forced)
		if err != nil {
			return nil, err
		}
		snap[i] = st
	}
	return snap, nil
}

// gatewayFigures summarizes a phase from the snapshots at its start and end, with memory per
// connection measured against the baseline taken before the first connection.
func gatewayFigures(base, start, end snapshot) (results.Gateway, int) {
	var g results.Gateway
	g.Instances = len(end)
	sessions := 0
	var baseRSS, baseHeap uint64
	var pauses []float64
	var counts []uint64
	var cpu, gcCPU float64
	for i, e := range end {
		sessions += e.Sessions
		g.RSSBytes += e.RSSBytes
		g.HeapBytes += e.HeapLiveBytes
		g.Goroutines += e.Goroutines
		if i < len(base) {
			baseRSS += base[i].RSSBytes
			baseHeap += base[i].HeapLiveBytes
		}
		if i < len(start) {
			s := start[i]
			g.GCCount += e.GCCycles - s.GCCycles
			cpu += e.CPUSeconds - s.CPUSeconds
			g.Allocs += delta(s.AllocObjects, e.AllocObjects)
			g.AllocBytes += delta(s.AllocBytes, e.AllocBytes)
			gcCPU += e.GCCPUSeconds - s.GCCPUSeconds
			if pauses == nil {
				pauses = e.GCPauses.Bounds
				counts = make([]uint64, len(e.GCPauses.Counts))
			}
			if len(e.GCPauses.Counts) == len(counts) && len(s.GCPauses.Counts) == len(counts) {
				for j := range counts {
					counts[j] += e.GCPauses.Counts[j] - s.GCPauses.Counts[j]
				}
			}
		}
	}
	// The gateways subtract what their measurement-forced collections cost, from the runtime's
	// estimates: rounding can leave a quiet phase a hair below zero.
	cpu, gcCPU = max(cpu, 0), max(gcCPU, 0)
	g.CPUSeconds = cpu
	if cpu > 0 {
		g.GCCPUShare = gcCPU / cpu
	}
	if sessions > 0 {
		g.RSSPerConn = float64(int64(g.RSSBytes)-int64(baseRSS)) / float64(sessions)
		g.HeapPerConn = float64(int64(g.HeapBytes)-int64(baseHeap)) / float64(sessions)
	}
	g.GCPauseP50 = histQuantile(pauses, counts, 0.50)
	g.GCPauseP99 = histQuantile(pauses, counts, 0.99)
	g.GCPauseMax = histQuantile(pauses, counts, 1)
	return g, sessions
}

// delta is end - start of a cumulative counter, 0 when it went backwards (a restarted process).
func delta(start, end uint64) uint64 {
	if end < start {
		return 0
	}
	return end - start
}

// costOf is what one operation of a phase cost the gateways g: their CPU time and allocations over
// the phase divided by ops (connects, requests or push API calls made), and per delivery when the
// phase delivered anything. nil when the phase made no operation.
func costOf(op string, ops, deliveries int64, g results.Gateway) *results.Cost {
	if ops <= 0 {
		return nil
	}
	c := &results.Cost{
		Op:              op,
		Ops:             ops,
		CPUPerOp:        g.CPUSeconds * 1e6 / float64(ops),
		AllocsPerOp:     float64(g.Allocs) / float64(ops),
		AllocBytesPerOp: float64(g.AllocBytes) / float64(ops),
	}
	if deliveries > 0 {
		c.Deliveries = deliveries
		c.CPUPerDelivery = g.CPUSeconds * 1e6 / float64(deliveries)
		c.AllocsPerDelivery = float64(g.Allocs) / float64(deliveries)
	}
	return c
}

// Operations a phase's cost counts (results.Cost.Op).
const (
	opConnect = "connect" // a connect and login
	opRequest = "request" // an upstream REQUEST
	opPush    = "push"    // one push API call (unicast, batch, group, broadcast)
)

// spend is what the load generator's processes had used at one moment.
type spend struct {
	procs int     // processes read
	cpu   float64 // CPU seconds (user + system) since each started, summed
	rss   uint64  // resident set sizes, summed
}

// loadgenSpend reads the CPU time and RSS of the coordinator (this process) and of every worker
// process still running, from /proc/<pid>/stat.
func (c *coord) loadgenSpend() spend {
	var s spend
	add := func(pid int) {
		cpu, rss, err := procCPU(pid)
		if err != nil {
			return // a worker that has exited: the phase fails on it anyway
		}
		s.procs++
		s.cpu += cpu
		s.rss += rss
	}
	add(os.Getpid())
	for _, w := range c.workers {
		if w != nil && w.cmd != nil && w.cmd.Process != nil {
			add(w.cmd.Process.Pid)
		}
	}
	return s
}

// loadgenFigures is what the load generator spent between start and end: the CPU seconds used
// in between, and the RSS at end.
func loadgenFigures(start, end spend) *results.Loadgen {
	return &results.Loadgen{Processes: end.procs, CPUSeconds: max(end.cpu-start.cpu, 0), RSSBytes: end.rss}
}

// histQuantile returns the upper bound of the bucket holding quantile q (0 when empty).
func histQuantile(bounds []float64, counts []uint64, q float64) float64 {
	var total uint64
	for _, c := range counts {
		total += c
	}
	if total == 0 || len(bounds) != len(counts)+1 {
		return 0
	}
	rank := uint64(q*float64(total) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for i, c := range counts {
		seen += c
		if seen >= rank {
			up := bounds[i+1]
			if up > 1e300 { // the open top bucket: report its lower bound
				up = bounds[i]
			}
			return up
		}
	}
	return 0
}
