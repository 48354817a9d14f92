package loadgen

import (
	"context"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pushwire/pushwire/results"
)

// The per-second series of a phase.
//
// One goroutine per phase reads, every second from the phase start, every gateway's /v1/stats
// (never with a forced collection), every worker's GET /tick (its counts and the latency of the
// deliveries since its last tick) and the CPU time of the load generator's processes, and
// appends a results.Sample of that second. The phase's end takes one last sample, of the
// partial second, with its real T. A source that does not answer within sampleTimeout is
// skipped in that sample: its counts land in the next one.
//
// Sample.Sent counts, by phase (a capacity step by its workload):
//   - ramp, connect: connections the workers completed (their Connected count's increase);
//   - upstream: requests the workers sent (their Requests count's increase);
//   - every other phase: push API calls the coordinator sent (coord.pushCalls' increase).

// sampleTimeout bounds each HTTP call of a sample, so that a busy gateway delays its own
// figures, not the series.
const sampleTimeout = 800 * time.Millisecond

// sentBy is what Sample.Sent counts in a phase.
type sentBy int

const (
	sentCalls    sentBy = iota // the coordinator's push API calls
	sentConnects               // the workers' completed connections
	sentRequests               // the workers' upstream requests
)

func sentKind(name string) sentBy {
	switch phaseKind(&results.Phase{Name: name}) {
	case results.PhaseRamp, results.WorkloadConnect:
		return sentConnects
	case results.PhaseUpstream:
		return sentRequests
	}
	return sentCalls
}

// seriesState is the sources' readings at the previous sample.
type seriesState struct {
	gw     []instanceStats
	gwOK   []bool
	wk     []workerStatus
	wkOK   []bool
	cpu    map[int]float64 // the load generator's processes, by pid
	sent   int64           // the coordinator's push API calls
	hist   *hdrhistogram.Histogram
	sentBy sentBy
}

// sampleGateways fills s's gateway figures from each gateway's stats now (cur, ok where read)
// and at the previous sample (prev, have where read): levels (sessions, RSS, heap objects) from
// the latest reading of each gateway, counts (GC cycles, CPU, GC pauses) from the increase
// since the previous one. The GC pause is the upper bound of the highest bucket a pause of the
// second fell in, across the gateways.
func sampleGateways(s *results.Sample, prev []instanceStats, have []bool, cur []instanceStats, ok []bool) {
	for i := range cur {
		st := cur[i]
		if !ok[i] {
			if !have[i] {
				continue
			}
			st = prev[i] // not read this second: its level as last seen, no counts
		}
		s.Conns += st.Sessions
		s.RSSBytes += st.RSSBytes
		s.HeapBytes += st.HeapObjectBytes
		if !ok[i] || !have[i] {
			continue
		}
		p := prev[i]
		if st.GCCycles > p.GCCycles {
			s.GCCount += st.GCCycles - p.GCCycles
		}
		s.CPUSeconds += max(st.CPUSeconds-p.CPUSeconds, 0)
		s.GCPauseMax = max(s.GCPauseMax, pauseMax(p, st))
	}
}

// pauseMax is the upper bound of the highest gc_pauses bucket that grew from a to b (0: none).
func pauseMax(a, b instanceStats) float64 {
	bc, ac := b.GCPauses.Counts, a.GCPauses.Counts
	if len(bc) != len(ac) || len(b.GCPauses.Bounds) != len(bc)+1 {
		return 0
	}
	d := make([]uint64, len(bc))
	for j := range bc {
		if bc[j] > ac[j] {
			d[j] = bc[j] - ac[j]
		}
	}
	return histQuantile(b.GCPauses.Bounds, d, 1)
}

// sampleWorkers fills s's delivery figures from each worker's counts now (cur, ok where read)
// and at the previous sample (prev, have where read), and Sent when the workers count it.
func sampleWorkers(s *results.Sample, by sentBy, prev []workerStatus, have []bool, cur []workerStatus, ok []bool) {
	for i := range cur {
		if !ok[i] || !have[i] {
			continue
		}
		delivered := max(cur[i].Delivered-prev[i].Delivered, 0)
		connected := max(cur[i].Connected-prev[i].Connected, 0)
		s.Delivered += delivered
		switch by {
		case sentConnects:
			s.Sent += connected
		case sentRequests:
			s.Sent += max(cur[i].Requests-prev[i].Requests, 0)
		case sentCalls: // the coordinator counts them
		}
	}
}

// readGateways reads every gateway's /v1/stats at once; ok says which answered.
func (c *coord) readGateways(ctx context.Context) ([]instanceStats, []bool) {
	n := len(c.cfg.GatewayHTTP)
	st, ok := make([]instanceStats, n), make([]bool, n)
	var wg sync.WaitGroup
	for i, base := range c.cfg.GatewayHTTP {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			st[i], err = fetchStats(ctx, c.http, base, false)
			ok[i] = err == nil
			if err != nil {
				c.log.Debug("series: gateway stats", "err", err)
			}
		}()
	}
	wg.Wait()
	return st, ok
}

// readTicks takes every worker's tick at once, merging the answered histograms into h.
func (c *coord) readTicks(ctx context.Context, h *hdrhistogram.Histogram) ([]workerStatus, []bool) {
	n := len(c.workers)
	st, ok := make([]workerStatus, n), make([]bool, n)
	ans := make([]tickAns, n)
	var wg sync.WaitGroup
	for i, w := range c.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := c.call(ctx, w, http.MethodGet, "/tick", nil, &ans[i])
			ok[i] = err == nil
			if err != nil {
				c.log.Debug("series: worker tick", "err", err)
			}
		}()
	}
	wg.Wait()
	for i, a := range ans {
		if !ok[i] {
			continue
		}
		st[i] = a.workerStatus
		if h != nil && a.Hist != nil {
			h.Merge(hdrhistogram.Import(a.Hist))
		}
	}
	return st, ok
}

// loadgenPIDs are the coordinator's and its workers' process IDs.
func (c *coord) loadgenPIDs() []int {
	pids := []int{os.Getpid()}
	for _, w := range c.workers {
		if w != nil && w.cmd != nil && w.cmd.Process != nil {
			pids = append(pids, w.cmd.Process.Pid)
		}
	}
	return pids
}

// loadgenCPU reads the CPU seconds of every process of the load generator.
func (c *coord) loadgenCPU() map[int]float64 {
	m := map[int]float64{}
	for _, pid := range c.loadgenPIDs() {
		if cpu, _, err := procCPU(pid); err == nil {
			m[pid] = cpu
		}
	}
	return m
}

// cpuDelta is the CPU the processes in both readings used between them.
func cpuDelta(prev, cur map[int]float64) float64 {
	var d float64
	for pid, v := range cur {
		if p, ok := prev[pid]; ok {
			d += max(v-p, 0)
		}
	}
	return d
}

// startSeries takes the readings the first sample counts from; the workers' ticks are reset
// (the tick's histogram is discarded).
func (o *phaseObs) startSeries(ctx context.Context) *seriesState {
	c := o.c
	ctx, cancel := context.WithTimeout(ctx, 2*sampleTimeout)
	defer cancel()
	st := &seriesState{sentBy: sentKind(o.name), hist: newHist()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		st.wk, st.wkOK = c.readTicks(ctx, nil)
	}()
	st.gw, st.gwOK = c.readGateways(ctx)
	wg.Wait()
	st.cpu = c.loadgenCPU()
	st.sent = o.c.pushCalls.Load()
	return st
}

// sample reads every source and returns the sample of the time since the previous one.
func (o *phaseObs) sample(ctx context.Context, st *seriesState) results.Sample {
	c := o.c
	s := results.Sample{T: roundMS(time.Since(o.t0).Seconds())}
	// The coordinator's own figures first, at T: the HTTP reads below take some milliseconds.
	sent := c.pushCalls.Load()
	cpu := c.loadgenCPU()
	ctx, cancel := context.WithTimeout(ctx, sampleTimeout)
	defer cancel()
	var wk []workerStatus
	var wkOK []bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		wk, wkOK = c.readTicks(ctx, st.hist)
	}()
	gw, gwOK := c.readGateways(ctx)
	wg.Wait()

	sampleGateways(&s, st.gw, st.gwOK, gw, gwOK)
	sampleWorkers(&s, st.sentBy, st.wk, st.wkOK, wk, wkOK)
	if st.sentBy == sentCalls {
		s.Sent = sent - st.sent
	}
	s.LoadgenCPU = roundMS(cpuDelta(st.cpu, cpu))
	s.CPUSeconds = roundMS(s.CPUSeconds)
	if st.hist.TotalCount() > 0 {
		s.P50 = float64(st.hist.ValueAtQuantile(50)) / 1000
		s.P99 = float64(st.hist.ValueAtQuantile(99)) / 1000
		st.hist.Reset()
	}

	for i := range gw {
		if gwOK[i] {
			st.gw[i], st.gwOK[i] = gw[i], true
		}
	}
	for i := range wk {
		if wkOK[i] {
			st.wk[i], st.wkOK[i] = wk[i], true
		}
	}
	for pid, v := range cpu {
		st.cpu[pid] = v
	}
	st.sent = sent
	return s
}

// runSeries samples, from the readings st, every second from t0 until stop is closed (then one last sample), ctx
// ends, or limit has passed.
func (o *phaseObs) runSeries(ctx context.Context, st *seriesState, limit time.Duration) {
	defer close(o.done)
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for n := 1; ; n++ {
		t := time.NewTimer(time.Until(o.t0.Add(time.Duration(n) * time.Second)))
		select {
		case <-t.C:
			o.series = append(o.series, o.sample(ctx, st))
		case <-o.stop:
			t.Stop()
			o.series = append(o.series, o.sample(ctx, st))
			return
		case <-ctx.Done():
			t.Stop()
			return
		case <-deadline.C:
			t.Stop()
			o.c.log.Warn(o.name+": series: the phase did not end; sampling stopped", "after", limit)
			return
		}
	}
}

// roundMS rounds seconds to the millisecond.
func roundMS(s float64) float64 {
	return float64(int64(s*1000+0.5)) / 1000
}
