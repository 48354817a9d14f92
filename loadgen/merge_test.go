package loadgen

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/pushwire/pushwire/results"
)

// Histograms recorded by several workers, shipped as JSON snapshots and merged, give the
// percentiles of one histogram of all the samples — not an average of the workers' percentiles.
func TestMergeCollectedHistograms(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	all, allU := newHist(), newHist()
	var ans []collectAns
	for w := range 3 {
		h, hu := newHist(), newHist()
		n := 1000 * (w + 1)
		for range n {
			// each worker its own distribution: averaging their p99s would be far off
			v := int64(r.ExpFloat64()*float64(200*(w*w+1))) + 1
			_ = h.RecordValue(v)
			_ = all.RecordValue(v)
			// the uncorrected latency leaves out a wait before the send: shorter, distributed apart
			u := max(v-int64(r.ExpFloat64()*float64(50*(w+1))), 1)
			_ = hu.RecordValue(u)
			_ = allU.RecordValue(u)
		}
		b, err := json.Marshal(collectAns{workerStatus: workerStatus{Delivered: int64(n), Dups: 1, Disconnects: int64(w), Requests: 5},
			LastRecvNS: int64(w + 10), Errors: map[string]int64{"timeout": 1}, Hist: h.Export(), HistUncorrected: hu.Export()})
		if err != nil {
			t.Fatal(err)
		}
		var a collectAns
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatal(err)
		}
		ans = append(ans, a)
	}
	got := mergeCollected(ans)
	if got.hist.TotalCount() != all.TotalCount() || got.Delivered != 6000 || got.Dups != 3 || got.Disconnects != 3 ||
		got.errors["timeout"] != 3 || got.lastRecv.UnixNano() != 12 {
		t.Fatalf("merged counts: hist %d delivered %d dups %d disconnects %d errors %v last %d",
			got.hist.TotalCount(), got.Delivered, got.Dups, got.Disconnects, got.errors, got.lastRecv.UnixNano())
	}
	for _, q := range []float64{50, 90, 99, 99.9, 100} {
		if a, b := got.hist.ValueAtQuantile(q), all.ValueAtQuantile(q); a != b {
			t.Errorf("p%v: merged %d, one histogram of all samples %d", q, a, b)
		}
	}
	if got.hist.Mean() != all.Mean() || got.hist.Max() != all.Max() {
		t.Errorf("mean %v max %d, want %v %d", got.hist.Mean(), got.hist.Max(), all.Mean(), all.Max())
	}
	if got.histU.TotalCount() != allU.TotalCount() || got.Requests != 15 {
		t.Fatalf("uncorrected: %d samples, want %d; requests %d, want 15", got.histU.TotalCount(), allU.TotalCount(), got.Requests)
	}
	for _, q := range []float64{50, 90, 99, 99.9, 100} {
		if a, b := got.histU.ValueAtQuantile(q), allU.ValueAtQuantile(q); a != b {
			t.Errorf("uncorrected p%v: merged %d, one histogram of all samples %d", q, a, b)
		}
		if got.histU.ValueAtQuantile(q) > got.hist.ValueAtQuantile(q) {
			t.Errorf("p%v: uncorrected %d above corrected %d", q, got.histU.ValueAtQuantile(q), got.hist.ValueAtQuantile(q))
		}
	}
	if empty := mergeCollected(nil); empty.hist.TotalCount() != 0 || empty.histU.TotalCount() != 0 || !empty.lastRecv.IsZero() {
		t.Errorf("no workers: %+v", empty)
	}
}

// An answer that reports an online target offline or stale (locally or from a remote instance)
// is counted, and the phase then fails its check even though the counts add up.
func TestTallyOnlineReportedOffline(t *testing.T) {
	c := &coord{errors: map[string]int64{}, log: discard()}
	var tl tally
	tl.add(c, 1, pushAnswer{Targets: 1, Delivered: 1}, nil)
	var remote pushAnswer
	remote.Targets, remote.Forwarded = 3, 3
	remote.Remote = &struct {
		Instances int64 `json:"instances"`
		Reported  int64 `json:"reported"`
		Delivered int64 `json:"delivered"`
		Offline   int64 `json:"offline"`
		Stale     int64 `json:"stale"`
		Failed    int64 `json:"failed"`
	}{Instances: 2, Reported: 2, Delivered: 1, Offline: 1, Stale: 1}
	tl.add(c, 3, remote, nil)
	tl.add(c, 2, pushAnswer{}, errTest)
	p := results.Phase{Name: results.PhasePush, Target: 10}
	expect := tl.fill(&p)
	if p.Sent != 6 || p.Pushes != 3 || p.Forwarded != 3 || p.Offline != 2 || p.Failed != 2 || p.OnlineOffline != 2 || expect != 2 {
		t.Fatalf("tally: %+v expect %d", p, expect)
	}
	if p.Remote == nil || p.Remote.Stale != 1 || p.Remote.Instances != 2 {
		t.Fatalf("remote: %+v", p.Remote)
	}
	if e := c.takeErrors(); e["push_api"] != 1 || e["answer_targets_mismatch"] != 0 {
		t.Errorf("errors %v", e)
	}
	p.Delivered = 2
	p.Missing = p.Unaccounted()
	r := &results.Result{Engine: "std", Transport: "tcp", Phases: []results.Phase{{Name: results.PhaseRamp, Target: 1, Conns: 1}, p}}
	err := r.Check()
	if err == nil || !contains(err.Error(), "2 targets that were online reported offline or stale") {
		t.Fatalf("Check: %v", err)
	}
}

func TestConfigWorkers(t *testing.T) {
	base := Config{ControlURL: "http://127.0.0.1:1", GatewayHTTP: []string{"http://127.0.0.1:2"}, App: "a", Secret: "s", PushKey: "k"}
	for _, tc := range []struct {
		conns, workers int
		want           string // error substring; "" = valid
		wantWorkers    int
	}{
		{100_000, 0, "", 7},
		{15_000, 0, "", 1},
		{15_001, 0, "", 2},
		{600, 2, "", 2},
		{20_500, 1, "workers 1: 20500 connections each, at most 15000 per worker process (its open-file limit); use at least 2", 0},
		{10, 11, "workers 11: more than the 10 connections", 0},
		{10, -1, "workers -1: must be positive", 0},
	} {
		c := base
		c.Conns, c.Workers = tc.conns, tc.workers
		err := c.setDefaults()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%d conns, %d workers: %v", tc.conns, tc.workers, err)
		case tc.want == "" && c.Workers != tc.wantWorkers:
			t.Errorf("%d conns: %d workers, want %d", tc.conns, c.Workers, tc.wantWorkers)
		case tc.want != "" && (err == nil || !contains(err.Error(), tc.want)):
			t.Errorf("%d conns, %d workers: error %v, want %q", tc.conns, tc.workers, err, tc.want)
		}
	}
}

func TestWorkerSources(t *testing.T) {
	all := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	for _, tc := range []struct {
		i, n int
		want []string
	}{
		{0, 2, []string{"127.0.0.2", "127.0.0.4"}},
		{1, 2, []string{"127.0.0.3"}},
		{3, 5, []string{"127.0.0.2"}}, // more workers than addresses: one shared
		{0, 1, all},
	} {
		if got := workerSources(all, tc.i, tc.n); !equal(got, tc.want) {
			t.Errorf("worker %d of %d: %v, want %v", tc.i, tc.n, got, tc.want)
		}
	}
	if got := workerSources(nil, 0, 2); got != nil {
		t.Errorf("no sources: %v", got)
	}
}

func TestWorkerSpecValidate(t *testing.T) {
	ok := WorkerSpec{Lo: 0, Hi: 10, ControlURL: "http://x", App: "a", Secret: "s", DevicePrefix: "p-"}
	if err := ok.validate(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mod  func(*WorkerSpec)
		want string
	}{
		{func(s *WorkerSpec) { s.Hi = 0 }, "device slice [0, 0) is empty"},
		{func(s *WorkerSpec) { s.Hi = MaxConnsPerWorker + 1 }, "15001 devices, at most 15000"},
		{func(s *WorkerSpec) { s.Secret = "" }, "required"},
		{func(s *WorkerSpec) { s.Sources = []string{"nope"} }, `source address "nope" is not an IP`},
	} {
		s := ok
		tc.mod(&s)
		if err := s.validate(); err == nil || !contains(err.Error(), tc.want) {
			t.Errorf("error %v, want %q", err, tc.want)
		}
	}
}
