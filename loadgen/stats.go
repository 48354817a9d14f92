package loadgen

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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
