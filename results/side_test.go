package results

import (
	"strings"
	"testing"
)

func TestSideBySide(t *testing.T) {
	run := func(engine string, rss, deliveries float64, missing int64) *Result {
		return &Result{Engine: engine, Phases: []Phase{
			{Name: PhaseRamp, Conns: 100, Target: 100, ConnectRate: 500},
			{Name: PhaseIdle, Conns: 100, Gateway: Gateway{RSSBytes: 1 << 20, RSSPerConn: rss, HeapBytes: 1 << 20, HeapPerConn: rss / 2, Goroutines: 10}},
			{Name: PhasePush, Sent: 10, Delivered: 10 - missing, Missing: missing, Deliveries: deliveries,
				Latency: &Latency{Count: 10, P99: 2}},
		}}
	}
	var b strings.Builder
	if err := SideBySide(&b, []*Result{run("gnet", 500, 900, 0), run("std", 10000, 1000, 0), run("nbio", 600, 1100, 1)}, "std"); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"std", "gnet", "nbio",
		"500 (0.05x)",  // gnet's RSS/conn over std's
		"1.1k (1.10x)", // nbio's deliveries/s
		"10.0k",        // std's own figure has no ratio
		"over std's;",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in\n%s", want, out)
		}
	}
	if strings.Contains(out, "10.0k (") {
		t.Errorf("the base run shows a ratio to itself:\n%s", out)
	}
	if err := SideBySide(&b, nil, "std"); err == nil {
		t.Error("no runs: want an error")
	}
}
