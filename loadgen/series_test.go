package loadgen

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/pushwire/pushwire/results"
)

// stats is a gateway's /v1/stats with the given levels and counts, GC pauses in buckets bounded
// 0, 1e-5, 1e-4, 1e-3, +Inf.
func stats(sessions int, rss, heap, gc uint64, cpu float64, pauses ...uint64) instanceStats {
	st := instanceStats{Sessions: sessions, RSSBytes: rss, HeapObjectBytes: heap, GCCycles: gc, CPUSeconds: cpu}
	st.GCPauses.Bounds = []float64{0, 1e-5, 1e-4, 1e-3, 1e308}
	st.GCPauses.Counts = pauses
	return st
}

func TestSampleGateways(t *testing.T) {
	prev := []instanceStats{stats(10, 1000, 500, 3, 1.5, 4, 2, 0, 0), stats(20, 2000, 700, 7, 2.0, 1, 0, 0, 0)}
	cur := []instanceStats{stats(11, 1100, 600, 5, 1.75, 4, 3, 1, 0), stats(21, 2100, 800, 8, 2.5, 1, 1, 0, 0)}
	var s results.Sample
	sampleGateways(&s, prev, []bool{true, true}, cur, []bool{true, true})
	want := results.Sample{Conns: 32, RSSBytes: 3200, HeapBytes: 1400, GCCount: 3, CPUSeconds: 0.75, GCPauseMax: 1e-3}
	if s != want {
		t.Errorf("sample\n %+v, want\n %+v", s, want)
	}

	// The second gateway did not answer: its level as last seen, none of its counts.
	s = results.Sample{}
	sampleGateways(&s, prev, []bool{true, true}, cur, []bool{true, false})
	want = results.Sample{Conns: 31, RSSBytes: 3100, HeapBytes: 1300, GCCount: 2, CPUSeconds: 0.25, GCPauseMax: 1e-3}
	if s != want {
		t.Errorf("one unread\n %+v, want\n %+v", s, want)
	}

	// No previous reading of the first gateway: its levels, no counts.
	s = results.Sample{}
	sampleGateways(&s, prev, []bool{false, true}, cur, []bool{true, true})
	want = results.Sample{Conns: 32, RSSBytes: 3200, HeapBytes: 1400, GCCount: 1, CPUSeconds: 0.5, GCPauseMax: 1e-4}
	if s != want {
		t.Errorf("no previous\n %+v, want\n %+v", s, want)
	}

	// A gateway that restarted (counts going back) adds nothing rather than a huge number.
	s = results.Sample{}
	sampleGateways(&s, prev[:1], []bool{true}, []instanceStats{stats(0, 10, 10, 0, 0.1, 0, 0, 0, 0)}, []bool{true})
	if s.GCCount != 0 || s.CPUSeconds != 0 || s.GCPauseMax != 0 {
		t.Errorf("restart: %+v", s)
	}
}

func TestPauseMax(t *testing.T) {
	a := stats(0, 0, 0, 0, 0, 5, 5, 5, 0)
	if got := pauseMax(a, a); got != 0 {
		t.Errorf("no pause: %v", got)
	}
	if got := pauseMax(a, stats(0, 0, 0, 0, 0, 6, 5, 5, 0)); got != 1e-5 {
		t.Errorf("one short pause: %v", got)
	}
	// the open top bucket reports its lower bound
	if got := pauseMax(a, stats(0, 0, 0, 0, 0, 5, 5, 5, 1)); got != 1e-3 {
		t.Errorf("a pause in the top bucket: %v", got)
	}
	if got := pauseMax(a, stats(0, 0, 0, 0, 0, 6, 6)); got != 0 {
		t.Errorf("buckets that do not match: %v", got)
	}
}

func TestSampleWorkers(t *testing.T) {
	prev := []workerStatus{{Connected: 10, Delivered: 100, Requests: 50}, {Connected: 5, Delivered: 40, Requests: 20}}
	cur := []workerStatus{{Connected: 15, Delivered: 130, Requests: 80}, {Connected: 9, Delivered: 50, Requests: 30}}
	for _, tc := range []struct {
		by              sentBy
		sent, delivered int64
	}{{sentCalls, 0, 40}, {sentConnects, 9, 40}, {sentRequests, 40, 40}} {
		var s results.Sample
		sampleWorkers(&s, tc.by, prev, []bool{true, true}, cur, []bool{true, true})
		if s.Sent != tc.sent || s.Delivered != tc.delivered {
			t.Errorf("by %d: sent %d delivered %d, want %d %d", tc.by, s.Sent, s.Delivered, tc.sent, tc.delivered)
		}
	}
	var s results.Sample
	sampleWorkers(&s, sentConnects, prev, []bool{true, false}, cur, []bool{true, true})
	if s.Sent != 5 || s.Delivered != 30 {
		t.Errorf("one without a previous reading: %+v", s)
	}
}

func TestSentKind(t *testing.T) {
	for name, want := range map[string]sentBy{"ramp": sentConnects, "connect@2000": sentConnects, "upstream": sentRequests,
		"upstream@500": sentRequests, "push": sentCalls, "batch@100": sentCalls, "group-all": sentCalls, "idle": sentCalls} {
		if got := sentKind(name); got != want {
			t.Errorf("%s: %d, want %d", name, got, want)
		}
	}
}

func TestCPUDelta(t *testing.T) {
	got := cpuDelta(map[int]float64{1: 1, 2: 3}, map[int]float64{1: 1.5, 2: 3.25, 3: 9})
	if got != 0.75 {
		t.Errorf("delta %v, want 0.75 (a process not read before counts nothing)", got)
	}
}

// The series of a phase with real worker processes (the gateway is not up: its figures stay
// zero, the sampling goes on): one sample a second from the phase start, the coordinator's
// push API calls counted in their second, the load generator's CPU read, and the last partial
// second kept with its real T.
func TestSeriesSampling(t *testing.T) {
	c := testCoord(t, 4, 2)
	defer c.stopWorkers()
	c.cfg.Drain = time.Second
	t0 := time.Now()
	o := c.observe(context.Background(), "push", t0, 2*time.Second)
	c.pushCalls.Add(7) // before the first sample: counted in the first second
	deadline := time.Now().Add(10 * time.Second)
	for {
		<-time.After(20 * time.Millisecond)
		if time.Since(t0) > 1500*time.Millisecond || time.Now().After(deadline) {
			break
		}
	}
	c.pushCalls.Add(3)
	var p results.Phase
	p.Name, p.Offered, p.Achieved = "push", 10, 10
	o.setTimes(time.Now(), time.Now())
	o.end(context.Background(), &p)
	if len(p.Series) != 2 {
		t.Fatalf("series %+v, want 2 samples", p.Series)
	}
	first, last := p.Series[0], p.Series[1]
	if first.T < 1 || first.T > 1.5 || last.T < 1.5 || last.T >= 2 {
		t.Errorf("T %v, %v: want about 1 and the real end (1.5 to 2)", first.T, last.T)
	}
	if first.Sent != 7 || last.Sent != 3 {
		t.Errorf("sent %d, %d: want 7, 3", first.Sent, last.Sent)
	}
	if first.Delivered != 0 || first.Conns != 0 || first.P50 != 0 {
		t.Errorf("first sample %+v: nothing delivered, no gateway", first)
	}
	if first.LoadgenCPU < 0 || last.LoadgenCPU < 0 {
		t.Errorf("loadgen cpu %v %v", first.LoadgenCPU, last.LoadgenCPU)
	}
	if p.Saturated {
		t.Errorf("saturated: %q", p.Saturation)
	}
	// The workers' tick was reset and read: a fresh one is empty.
	var ans tickAns
	if err := c.call(context.Background(), c.workers[0], http.MethodGet, "/tick", nil, &ans); err != nil || ans.Hist == nil {
		t.Fatalf("tick %+v, %v", ans, err)
	}
}
