package gateway

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/pushwire/pushwire/route"
)

func busSamples() []*busMsg {
	return []*busMsg{
		{Kind: busPush, Origin: "n0", Request: 7, App: "app", ID: "n0-1", Biz: 1, Flags: 1, TTLMs: 60000, Target: targetConns,
			Conns: []connRef{{1, 2}, {1 << 40, 1 << 62}}, Payload: []byte("hi"), ReportTo: "n0"},
		{Kind: busPush, Origin: "n1", App: "app", ID: "x", Biz: 65535, Target: targetDevices, Devices: []string{"a", "", "ccc"}},
		{Kind: busPush, Origin: "n1", App: "app", ID: "x", Biz: 2, Target: targetUsers, Users: []string{"u"}, Payload: []byte{0, 1, 2}},
		{Kind: busPush, Origin: "n1", App: "app", ID: "x", Biz: 2, Target: targetGroup, Group: "room"},
		{Kind: busPush, Origin: "n1", App: "app", ID: "x", Biz: 2, Target: targetAll},
		{Kind: busReport, Origin: "n2", Request: 9, Delivered: 10_000, Offline: 1, Stale: 2, Failed: 3},
		{Kind: busKick, Origin: "n2", App: "app", Device: "d", Conn: connRef{Conn: 5, Gen: 1_700_000_000_000_000_000}},
		{Kind: busMembership, Origin: "n0", App: "app", Group: "g", In: true, Devices: []string{"d1", "d2"}},
		{Kind: busMembership, Origin: "n0", App: "app", Group: "g", Devices: []string{"d1"}},
	}
}

func TestBusMessageRoundTrip(t *testing.T) {
	for _, m := range busSamples() {
		data := encodeBus(m)
		got, err := decodeBus(data)
		if err != nil {
			t.Fatalf("%+v: %v", m, err)
		}
		if len(got.Payload) == 0 {
			got.Payload = nil
		}
		if !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
		// Every truncation is an error, never a panic.
		for i := range data {
			if _, err := decodeBus(data[:i]); !errors.Is(err, errBusMsg) {
				t.Fatalf("%+v cut at %d: %v", m, i, err)
			}
		}
		if _, err := decodeBus(append(bytes.Clone(data), 0)); !errors.Is(err, errBusMsg) {
			t.Fatalf("trailing byte accepted: %v", err)
		}
	}
}

func TestBusMessageRefuses(t *testing.T) {
	cases := map[string][]byte{
		"empty":       nil,
		"version":     {2, busReport, 0, 0, 0, 0, 0, 0},
		"kind":        {busVersion, 99, 0, 0},
		"huge string": {busVersion, busReport, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"huge list":   append([]byte{busVersion, busMembership, 0, 0, 0, 0, 1}, 0xff, 0xff, 0xff, 0xff, 0x0f),
		"target":      append(encodeBus(&busMsg{Kind: busPush, Biz: 1})[:11:11], 9),
		"biz 0":       encodeBus(&busMsg{Kind: busPush, Target: targetAll}),
		"in 2":        {busVersion, busMembership, 0, 0, 0, 0, 2, 0},
	}
	for name, data := range cases {
		if _, err := decodeBus(data); !errors.Is(err, errBusMsg) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestPendingData(t *testing.T) {
	n := newNode(t, Config{})
	msg := n.newMessage("id1", 3, "room", []byte("body"), true, time.Minute)
	p := route.Pending{App: "app", Device: "d", ID: "id1", Data: encodePending(msg), Expires: time.Unix(0, msg.exp)}
	got, ok := n.decodePending(&p)
	if !ok || got.biz != 3 || got.flags != msg.flags || !bytes.Equal(got.tail, msg.tail) || got.metaN != msg.metaN || got.bodyN != 4 {
		t.Fatalf("%+v %v", got, ok)
	}
	for _, bad := range [][]byte{nil, {0, 1, 0, 0xff, 0xff}} {
		if _, ok := n.decodePending(&route.Pending{Data: bad}); ok {
			t.Fatalf("%x decoded", bad)
		}
	}
}

// FuzzBusMessage: decoding any bytes never panics, and what decodes encodes back to a message
// that decodes the same.
func FuzzBusMessage(f *testing.F) {
	for _, m := range busSamples() {
		f.Add(encodeBus(m))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := decodeBus(data)
		if err != nil {
			return
		}
		again, err := decodeBus(encodeBus(m))
		if err != nil {
			t.Fatalf("re-encoded message refused: %v", err)
		}
		if len(m.Payload) == 0 {
			m.Payload, again.Payload = nil, nil
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("re-encoded differs:\n%+v\n%+v", again, m)
		}
	})
}
