package loadgen

import (
	"strings"
	"testing"

	"github.com/pushwire/pushwire/results"
)

// seriesP50 is a series of one-second samples, each with deliveries and the given p50.
func seriesP50(p50 ...float64) []results.Sample {
	out := make([]results.Sample, len(p50))
	for i, v := range p50 {
		out[i] = results.Sample{T: float64(i + 1), Delivered: 100, P50: v, P99: 2 * v}
	}
	return out
}

func TestSaturation(t *testing.T) {
	steady := seriesP50(5, 6, 5, 5, 6, 5, 5, 6, 5, 5)
	cases := []struct {
		name  string
		p     results.Phase
		t     sendTimes
		want  []string // substrings of the reasons, in order; none: not saturated
		extra bool     // more reasons than want are allowed
	}{
		{name: "steady", p: results.Phase{Name: "push", Offered: 1000, Achieved: 998, Duration: 10.05, Series: steady},
			t: sendTimes{SendEnd: 9.999, LastRecv: 10.02}},
		{name: "achieved 80%", p: results.Phase{Name: "push", Offered: 1000, Achieved: 800, Duration: 10.05, Series: steady},
			t: sendTimes{SendEnd: 9.999, LastRecv: 10.02}, want: []string{"sent 800/s of the 1000/s offered"}},
		{name: "95% is enough", p: results.Phase{Name: "push", Offered: 1000, Achieved: 950, Duration: 10, Series: steady},
			t: sendTimes{SendEnd: 9.9, LastRecv: 9.95}},
		{name: "latency doubling 5 to 60 ms", p: results.Phase{Name: "push", Offered: 1000, Achieved: 1000, Duration: 9.2,
			Series: seriesP50(5, 5, 6, 10, 20, 30, 55, 60, 65)}, t: sendTimes{SendEnd: 9, LastRecv: 9.2},
			want: []string{"latency grew from 5 ms to 60 ms"}},
		{name: "3 ms to 7 ms is under 10 ms", p: results.Phase{Name: "push", Offered: 1000, Achieved: 1000, Duration: 9.2,
			Series: seriesP50(3, 3, 3, 4, 5, 6, 7, 7, 7)}, t: sendTimes{SendEnd: 9, LastRecv: 9.2}},
		{name: "deliveries trailing by 3 s", p: results.Phase{Name: "group", Offered: 10, Achieved: 10, Duration: 13, Series: steady},
			t: sendTimes{SendEnd: 9.9, LastRecv: 12.9}, want: []string{"deliveries trailed the sends by 3.0 s"}},
		{name: "trailing 0.9 s of a short phase", p: results.Phase{Name: "broadcast", Offered: 1, Achieved: 1, Duration: 2.9},
			t: sendTimes{SendEnd: 2, LastRecv: 2.9}},
		{name: "trailing 8% of a long window", p: results.Phase{Name: "push", Offered: 100, Achieved: 100, Duration: 108},
			t: sendTimes{SendEnd: 100, LastRecv: 108}},
		{name: "trail from the duration when the last delivery is not known", p: results.Phase{Name: "push", Offered: 100, Achieved: 100, Duration: 12},
			t: sendTimes{SendEnd: 10}, want: []string{"deliveries trailed the sends by 2.0 s"}},
		{name: "idle never", p: results.Phase{Name: "idle", Offered: 1000, Achieved: 1, Duration: 30, Series: seriesP50(1, 1, 1, 100, 100, 100)},
			t: sendTimes{SendEnd: 1, LastRecv: 30}},
		{name: "ramp: the connect rate reached", p: results.Phase{Name: "ramp", Offered: 2000, ConnectRate: 1500, Duration: 20,
			Series: seriesP50(1, 1, 1, 100, 100, 100)}, t: sendTimes{SendEnd: 1, LastRecv: 30},
			want: []string{"sent 1500/s of the 2000/s offered"}},
		{name: "connect step judged on its rate only", p: results.Phase{Name: "connect@500", Workload: results.WorkloadConnect, Offered: 500, Achieved: 499,
			Series: seriesP50(1, 1, 1, 100, 100, 100)}, t: sendTimes{SendEnd: 1, LastRecv: 30}},
		{name: "capacity step by its name", p: results.Phase{Name: "push@2000.5", Offered: 2000.5, Achieved: 1000, Duration: 5},
			t: sendTimes{SendEnd: 4.9, LastRecv: 5}, want: []string{"sent 1000/s of the 2001/s offered"}},
		{name: "small rates keep a decimal", p: results.Phase{Name: "group", Offered: 10, Achieved: 7.25, Duration: 5},
			t: sendTimes{SendEnd: 4.9, LastRecv: 5}, want: []string{"sent 7.2/s of the 10.0/s offered"}},
		{name: "achieved not measured", p: results.Phase{Name: "push", Offered: 1000, Duration: 10}, t: sendTimes{SendEnd: 10, LastRecv: 10}},
		{name: "every reason", p: results.Phase{Name: "push", Offered: 1000, Achieved: 500, Duration: 20,
			Series: seriesP50(5, 5, 5, 50, 100, 200)}, t: sendTimes{SendEnd: 10, LastRecv: 20},
			want: []string{"sent 500/s", "trailed the sends by 10.0 s", "latency grew from 5 ms to 150 ms"}},
		{name: "seconds without deliveries are left out", p: results.Phase{Name: "push", Offered: 10, Achieved: 10, Duration: 5,
			Series: []results.Sample{{Delivered: 10, P50: 4}, {}, {}, {Delivered: 5, P50: 4}, {Delivered: 5, P50: 5}, {}}},
			t: sendTimes{SendEnd: 5, LastRecv: 5}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := saturation(&tc.p, tc.t)
			if len(got) != len(tc.want) {
				t.Fatalf("reasons %q, want %d like %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("reason %d: %q, want it to say %q", i, got[i], w)
				}
			}
		})
	}
}

func TestLatencyGrowth(t *testing.T) {
	if _, _, ok := latencyGrowth(seriesP50(1, 100)); ok {
		t.Error("two seconds judged")
	}
	a, b, ok := latencyGrowth(seriesP50(1, 3, 2, 50, 50, 50, 10, 40, 20))
	if !ok || a != 2 || b != 20 {
		t.Errorf("first %v last %v ok %v, want 2, 20", a, b, ok)
	}
	// the upstream phase of a short run: three steady seconds, then a 30 ms sliver holding the
	// last three answers
	tail := append(seriesP50(7.1, 8.1, 8.2), results.Sample{T: 3.03, Delivered: 3, P50: 17.3})
	if a, b, ok := latencyGrowth(tail); !ok || a != 7.1 || b != 8.2 {
		t.Errorf("with a sliver: first %v last %v ok %v, want 7.1, 8.2", a, b, ok)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median %v", m)
	}
}
