package backend_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/pushwire/pushwire/backend"
	"github.com/pushwire/pushwire/core/forward"
)

// FuzzDecodeBatch feeds /notify's decoder arbitrary bodies. It is seeded with real batches as a
// forward.Notifier posts them (testdata/fuzz/FuzzDecodeBatch holds more, malformed ones
// included). A batch it accepts must hold only valid events and survive a round trip.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(batch(ev("connect", "d-1", 1<<60), ev("disconnect", "d-1", 1<<60))))
	f.Add([]byte(`{"events":[]}`))
	f.Add([]byte(`{"events":[{"type":"disconnect","app":"demo","device":"d","user":"u","conn":7,"node":"gw","gen":18446744073709551615,"reason":"IDLE_TIMEOUT","at":1700000000000,"extra":{"x":[1,2]}}]}`))
	f.Add([]byte(`{"events":[{"type":"connect","app":"\u00e9","device":"\ud800"}]} `))
	f.Fuzz(func(t *testing.T, data []byte) {
		events, err := backend.DecodeBatch(data)
		if err != nil {
			if events != nil {
				t.Fatal("events returned with an error")
			}
			return
		}
		if len(events) > backend.MaxBatchEvents {
			t.Fatalf("%d events accepted", len(events))
		}
		for i, e := range events {
			if e.Type != forward.EventConnect && e.Type != forward.EventDisconnect || e.App == "" || e.Device == "" || e.At < 0 {
				t.Fatalf("invalid event %d accepted: %+v", i, e)
			}
		}
		again, err := json.Marshal(forward.Batch{Events: events})
		if err != nil {
			t.Fatal(err)
		}
		back, err := backend.DecodeBatch(again)
		if err != nil {
			t.Fatalf("re-encoded batch refused: %v\n%s", err, again)
		}
		if !slices.Equal(events, back) {
			t.Fatalf("round trip changed the batch:\n%+v\n%+v", events, back)
		}
	})
}

// TestCorpusPresent keeps the seed corpus from disappearing unnoticed.
func TestCorpusPresent(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecodeBatch", "*"))
	if len(files) < 5 {
		t.Fatalf("%d corpus files in testdata/fuzz/FuzzDecodeBatch", len(files))
	}
	for _, name := range files {
		if b, err := os.ReadFile(name); err != nil || len(b) == 0 {
			t.Fatalf("%s: %v", name, err)
		}
	}
}
