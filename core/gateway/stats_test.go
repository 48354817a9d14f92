package gateway

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

// /v1/stats serves the instance's figures and the process's (procstats.Process, embedded) as one
// flat object, in the order the load generator and the dashboards have always read.
func TestStatsJSON(t *testing.T) {
	n := newNode(t, Config{Node: "gw1"})
	for _, gc := range []bool{false, true} {
		st := n.Stats(gc)
		if st.Node != "gw1" || st.State != "serving" || st.Goroutines == 0 || st.AllocObjects == 0 ||
			len(st.GCPauses.Bounds) == 0 || st.CPUSeconds <= 0 {
			t.Fatalf("gc=%v: %+v", gc, st)
		}
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		if _, err := dec.Token(); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				t.Fatal(err)
			}
			keys = append(keys, k.(string))
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
		}
		want := []string{"node", "engine", "transport", "state", "uptime_s", "conns", "sessions",
			"rss_bytes", "heap_object_bytes", "heap_live_bytes", "stack_bytes", "go_mem_bytes", "goroutines",
			"gc_cycles", "gc_cpu_seconds", "cpu_seconds", "gc_pauses", "alloc_objects", "alloc_bytes"}
		if !slices.Equal(keys, want) {
			t.Fatalf("gc=%v: keys %v, want %v", gc, keys, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		want string // "" = valid; else a part of the error, naming the setting
	}{
		{"defaults", Config{}, ""},
		{"max body over limit", Config{MaxBody: 1 << 30}, "max body"},
		{"idle shorter than heartbeat", Config{Heartbeat: time.Minute, IdleTimeout: time.Second}, "idle timeout"},
		{"tick longer than login timeout", Config{WheelTick: time.Minute, LoginTimeout: time.Second}, "wheel tick"},
		{"business without backend", Config{Businesses: map[uint16]Business{3: {}}}, "biz 3: backend_url is required"},
		{"bad slow-consumer policy", Config{Businesses: map[uint16]Business{2: {Biz: bizAt("http://127.0.0.1:1/"), SlowConsumer: "kick"}}},
			`biz 2: slow_consumer "kick"`},
		{"bad notify URL", Config{Businesses: map[uint16]Business{2: {Biz: forwardBiz("http://127.0.0.1:1/", "x")}}}, "notify_url"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n, err := New(tc.cfg, testKey, oneApp{})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("New: %v", err)
			case tc.want == "":
				_ = n.Stop(t.Context())
			case err == nil:
				t.Fatalf("New accepted %+v", tc.cfg)
			case !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not name %q", err, tc.want)
			}
		})
	}
	if err := ValidateBusinesses(map[uint16]Business{1: {Biz: bizAt("http://127.0.0.1:1/"), SlowConsumer: SlowConsumerDrop}}); err != nil {
		t.Fatal(err)
	}
	if err := ValidateBusinesses(map[uint16]Business{0: {Biz: bizAt("http://127.0.0.1:1/")}}); err == nil {
		t.Fatal("biz 0 accepted")
	}
}
