package loadgen

import (
	"math"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pushwire/pushwire/results"
)

func TestParsePayload(t *testing.T) {
	at := time.Unix(1_700_000_000, 123_456_789)
	tests := []struct {
		name     string
		in       string
		seq      int
		intended int64
		actual   int64
		err      string // part of the error; "" parses
	}{
		{"written by payload", payload(42, at, at.Add(time.Millisecond)), 42, at.UnixNano(), at.Add(time.Millisecond).UnixNano(), ""},
		{"sequence zero", "pwlg:0:1:2", 0, 1, 2, ""},
		{"sent before it was meant to", "pwlg:7:200:100", 7, 200, 100, ""},
		{"the older three-part format", "pwlg:3:1700000000123456789", 0, 0, 0, "want pwlg:<seq>:<intended ns>:<actual ns>"},
		{"no times", "pwlg:3", 0, 0, 0, "want pwlg:"},
		{"a fourth time", "pwlg:3:1:2:3", 0, 0, 0, "actual time"},
		{"negative sequence", "pwlg:-1:1:2", 0, 0, 0, "seq"},
		{"sequence too large", "pwlg:99999999999:1:2", 0, 0, 0, "seq"},
		{"intended not a number", "pwlg:1:x:2", 0, 0, 0, "intended time"},
		{"intended zero", "pwlg:1:0:2", 0, 0, 0, "intended time"},
		{"actual negative", "pwlg:1:1:-2", 0, 0, 0, "actual time"},
		{"actual empty", "pwlg:1:1:", 0, 0, 0, "actual time"},
		{"no prefix", "1:2:3", 0, 0, 0, "prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq, in, ac, err := parsePayload([]byte(tt.in))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("parsePayload(%q) = %d %d %d, %v; want an error with %q", tt.in, seq, in, ac, err, tt.err)
				}
				return
			}
			if err != nil || seq != tt.seq || in != tt.intended || ac != tt.actual {
				t.Fatalf("parsePayload(%q) = %d %d %d, %v; want %d %d %d", tt.in, seq, in, ac, err, tt.seq, tt.intended, tt.actual)
			}
		})
	}
}

// FuzzParsePayload: a payload is outside input to the worker. Whatever it is, the parse does not
// panic, accepts only a sequence number and two positive times, and reads back what payload
// writes of them.
func FuzzParsePayload(f *testing.F) {
	at := time.Unix(1_700_000_000, 5)
	for _, s := range []string{payload(0, at, at), payload(123456, at, at.Add(time.Second)), "pwlg:1:2", "pwlg:1:2:3:4",
		"pwlg::1:2", "pwlg:1:+2:3", "pwlg:1:2:99999999999999999999", "x"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, in, ac, err := parsePayload(b)
		if err != nil {
			return
		}
		if seq < 0 || in <= 0 || ac <= 0 {
			t.Fatalf("accepted %q as %d %d %d", b, seq, in, ac)
		}
		again := payload(seq, time.Unix(0, in), time.Unix(0, ac))
		if s2, in2, ac2, err := parsePayload([]byte(again)); err != nil || s2 != seq || in2 != in || ac2 != ac {
			t.Fatalf("%q read as %d %d %d; written again as %q, read as %d %d %d, %v", b, seq, in, ac, again, s2, in2, ac2, err)
		}
	})
}

func TestCostOf(t *testing.T) {
	g := results.Gateway{CPUSeconds: 2, Allocs: 40_000, AllocBytes: 4_000_000}
	tests := []struct {
		name       string
		op         string
		ops, deliv int64
		g          results.Gateway
		want       *results.Cost
	}{
		{"connects", opConnect, 1000, 0, g, &results.Cost{Op: "connect", Ops: 1000, CPUPerOp: 2000, AllocsPerOp: 40, AllocBytesPerOp: 4000}},
		{"requests answered", opRequest, 4000, 4000, g, &results.Cost{Op: "request", Ops: 4000, CPUPerOp: 500, AllocsPerOp: 10,
			AllocBytesPerOp: 1000, Deliveries: 4000, CPUPerDelivery: 500, AllocsPerDelivery: 10}},
		{"group pushes", opPush, 20, 20_000, g, &results.Cost{Op: "push", Ops: 20, CPUPerOp: 100_000, AllocsPerOp: 2000,
			AllocBytesPerOp: 200_000, Deliveries: 20_000, CPUPerDelivery: 100, AllocsPerDelivery: 2}},
		{"nothing delivered", opPush, 10, 0, g, &results.Cost{Op: "push", Ops: 10, CPUPerOp: 200_000, AllocsPerOp: 4000, AllocBytesPerOp: 400_000}},
		{"idle gateways", opPush, 10, 10, results.Gateway{}, &results.Cost{Op: "push", Ops: 10, Deliveries: 10}},
		{"no operations", opPush, 0, 5, g, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := costOf(tt.op, tt.ops, tt.deliv, tt.g)
			if (got == nil) != (tt.want == nil) || got != nil && *got != *tt.want {
				t.Fatalf("costOf = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestGatewayFiguresAllocations(t *testing.T) {
	st := func(objs, bytes uint64) instanceStats {
		return instanceStats{AllocObjects: objs, AllocBytes: bytes, Sessions: 1}
	}
	g, _ := gatewayFigures(nil, snapshot{st(100, 1000), st(50, 500)}, snapshot{st(300, 5000), st(60, 700)})
	if g.Allocs != 210 || g.AllocBytes != 4200 {
		t.Errorf("allocs %d, bytes %d: want 210, 4200 (summed deltas)", g.Allocs, g.AllocBytes)
	}
	// a restarted instance's counters start again from zero: no wrap-around
	g, _ = gatewayFigures(nil, snapshot{st(100, 1000)}, snapshot{st(10, 100)})
	if g.Allocs != 0 || g.AllocBytes != 0 {
		t.Errorf("counters that went back: allocs %d, bytes %d; want 0", g.Allocs, g.AllocBytes)
	}
}

func TestAchievedRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	tests := []struct {
		name    string
		n       int64
		last    time.Duration // after t0; <0: nothing sent
		offered float64
		want    float64
	}{
		{"kept up", 1000, 999 * time.Millisecond, 1000, 1000},
		{"two messages a second apart", 2, time.Second, 1, 1},
		{"fell behind", 20_000, 4*time.Second - 50*time.Microsecond, 20_000, 5000},
		{"nothing sent", 0, -1, 100, 0},
		{"no offered rate", 10, 2 * time.Second, 0, 5},
		{"one, at once", 1, 0, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var last time.Time
			if tt.last >= 0 {
				last = t0.Add(tt.last)
			}
			got := achievedRate(tt.n, t0, last, tt.offered)
			if math.Abs(got-tt.want) > 1e-6*max(tt.want, 1) {
				t.Fatalf("achievedRate = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestSendClock(t *testing.T) {
	var total atomic.Int64
	sc := sendClock{total: &total}
	before := time.Now()
	for range 3 {
		sc.mark()
	}
	var pr phaseRun
	sc.note(&pr)
	if pr.sent != 3 || total.Load() != 3 || pr.lastSent.Before(before) || pr.lastSent.After(time.Now()) {
		t.Fatalf("sent %d, total %d, last %v (started %v)", pr.sent, total.Load(), pr.lastSent, before)
	}
}

// The load generator's spend is read from /proc for the coordinator and every worker process.
func TestLoadgenSpend(t *testing.T) {
	c := &coord{}
	s0 := c.loadgenSpend()
	if s0.procs != 1 || s0.rss == 0 {
		t.Fatalf("coordinator alone: %+v", s0)
	}
	deadline := time.Now().Add(10 * time.Second)
	x := 0
	for c.loadgenSpend().cpu <= s0.cpu && time.Now().Before(deadline) { // burn CPU until a tick shows
		for i := range 1_000_000 {
			x += i
		}
	}
	l := loadgenFigures(s0, c.loadgenSpend())
	if l.Processes != 1 || l.CPUSeconds <= 0 || l.RSSBytes == 0 {
		t.Fatalf("figures %+v (%d)", l, x)
	}
	if l := loadgenFigures(spend{procs: 2, cpu: 5}, spend{procs: 1, cpu: 3, rss: 1}); l.CPUSeconds != 0 {
		t.Errorf("a worker that exited made the CPU negative: %+v", l)
	}
}

func TestRampAchieved(t *testing.T) {
	s := int64(1_000_000_000)
	tests := []struct {
		name    string
		answers []rampAns
		offered float64
		want    float64
	}{
		{"one worker on schedule", []rampAns{{Connected: 600, StartNS: s, LastSentNS: s + 999_000_000}}, 600, 600 / (0.999 + 1.0/600)},
		{"two workers, earliest start and latest send", []rampAns{
			{Connected: 300, StartNS: s, LastSentNS: s + 900_000_000},
			{Connected: 300, StartNS: s + 5_000_000, LastSentNS: s + 999_000_000}}, 600, 600 / (0.999 + 1.0/600)},
		{"half the rate", []rampAns{{Connected: 300, StartNS: s, LastSentNS: s + 999_000_000}}, 600, 300 / (0.999 + 1.0/600)},
		{"nothing said", []rampAns{{Connected: 300}}, 600, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rampAchieved(tt.answers, tt.offered); math.Abs(got-tt.want) > 1e-6 {
				t.Fatalf("rampAchieved = %v, want %v", got, tt.want)
			}
		})
	}
}
