package frame_test

import (
	"testing"

	"github.com/pushwire/pushwire/core/frame"
)

// benchFrame is a typical PUSH: two meta entries and a 256-byte body.
func benchFrame() frame.Frame {
	body := make([]byte, 256)
	for i := range body {
		body[i] = byte(i)
	}
	return mk(frame.TypePush, frame.FlagAck, 0, 9, 1234, []kv{{"id", "m-0123456789"}, {"group", "room-42"}}, body)
}

// cycle is an endless reader repeating buf, which holds whole frames.
type cycle struct {
	buf []byte
	off int
}

func (c *cycle) Read(p []byte) (int, error) {
	n := copy(p, c.buf[c.off:])
	c.off = (c.off + n) % len(c.buf)
	return n, nil
}

// TestZeroAllocs proves that the hot paths do not allocate.
func TestZeroAllocs(t *testing.T) {
	f := benchFrame()
	wire := encode(f)
	dst := make([]byte, 0, 4096)

	// The reader over an endless stream of frames: after its buffer is sized, Next is free.
	var stream []byte
	for range 50 {
		stream = append(stream, wire...)
	}
	r := frame.NewReader(&cycle{buf: stream}, frame.Limits{})
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"Decode", func() {
			g, n, err := frame.Decode(wire, frame.Limits{})
			if err != nil || n != len(wire) || len(g.Body) != 256 {
				t.Fatal("decode failed")
			}
		}},
		{"ParseHeader", func() {
			if _, err := frame.ParseHeader(wire, frame.Limits{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"Decode error", func() {
			if _, _, err := frame.Decode(wire[1:], frame.Limits{}); err == nil {
				t.Fatal("no error")
			}
		}},
		{"Append", func() {
			if b := frame.Append(dst[:0], &f); len(b) != len(wire) {
				t.Fatal("append failed")
			}
		}},
		{"AppendHeader", func() { _ = frame.AppendHeader(dst[:0], f.Header) }},
		{"Meta.Get", func() {
			if v, ok := f.Meta.Get("group"); !ok || len(v) != 7 {
				t.Fatal("get failed")
			}
		}},
		{"Meta.Validate", func() {
			if err := f.Meta.Validate(); err != nil {
				t.Fatal(err)
			}
		}},
		{"Meta.Validate many keys", func() { _ = many.Validate() }},
		{"Check", func() {
			if err := frame.Check(&f, frame.Limits{}); err != nil {
				t.Fatal(err)
			}
		}},
		{"Reader.Next", func() {
			if g, err := r.Next(); err != nil || len(g.Body) != 256 {
				t.Fatal("next failed")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if a := testing.AllocsPerRun(1000, tc.fn); a != 0 {
				t.Fatalf("%v allocations per run, want 0", a)
			}
		})
	}
}

// many is the costliest meta to validate: as many distinct 2-byte keys as fit.
var many = minEntries(frame.MaxMetaLen / 5)

func BenchmarkDecode(b *testing.B) {
	wire := encode(benchFrame())
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := frame.Decode(wire, frame.Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppend(b *testing.B) {
	f := benchFrame()
	dst := make([]byte, 0, 4096)
	b.SetBytes(int64(frame.HeaderLen + len(f.Meta) + len(f.Body)))
	b.ReportAllocs()
	for b.Loop() {
		dst = frame.Append(dst[:0], &f)
	}
}

func BenchmarkReaderNext(b *testing.B) {
	wire := encode(benchFrame())
	var stream []byte
	for range 50 {
		stream = append(stream, wire...)
	}
	r := frame.NewReader(&cycle{buf: stream}, frame.Limits{})
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.Next(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMetaGet(b *testing.B) {
	f := mk(frame.TypeLogin, 0, 0, 0, 1, []kv{
		{"token", "eyJhcHAiOiJkZW1vIn0.c2ln"}, {"device", "dev-42"}, {"app", "demo"},
		{"platform", "native"}, {"sdk", "go/1.0.0"}, {"net", "wifi"},
	}, nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := f.Meta.Get("net"); !ok { // the last key: the longest scan
			b.Fatal("missing")
		}
	}
}

// BenchmarkMetaValidate measures the typical meta and the costliest one, 819 distinct 2-byte keys
// (it cost about 2 ms with a pairwise duplicate check).
func BenchmarkMetaValidate(b *testing.B) {
	for _, bc := range []struct {
		name string
		m    frame.Meta
	}{
		{"login", encodeMeta(samples()[0].meta)},
		{"worst", many},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := bc.m.Validate(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func encodeMeta(es []kv) frame.Meta {
	var m frame.Meta
	for _, e := range es {
		m = frame.AppendMetaString(m, e.k, e.v)
	}
	return m
}
