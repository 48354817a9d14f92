package frame_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/pushwire/pushwire/core/frame"
)

func TestRoundTrip(t *testing.T) {
	for _, tc := range samples() {
		t.Run(tc.name, func(t *testing.T) {
			if err := frame.Check(&tc.f, frame.Limits{}); err != nil {
				t.Fatalf("Check: %v", err)
			}
			b := encode(tc.f)
			if want := frame.HeaderLen + len(tc.f.Meta) + len(tc.f.Body); len(b) != want {
				t.Fatalf("encoded %d bytes, want %d", len(b), want)
			}
			if b[0] != 'P' || b[1] != 'W' || b[2] != frame.Version {
				t.Fatalf("prefix % x", b[:3])
			}

			h, err := frame.ParseHeader(b, frame.Limits{})
			if err != nil {
				t.Fatalf("ParseHeader: %v", err)
			}
			if h.Len() != len(b) {
				t.Fatalf("Header.Len = %d, want %d", h.Len(), len(b))
			}

			got, n, err := frame.Decode(b, frame.Limits{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if n != len(b) {
				t.Fatalf("Decode consumed %d, want %d", n, len(b))
			}
			if got.Header != h {
				t.Fatalf("Decode header %+v, ParseHeader %+v", got.Header, h)
			}
			if d := sameFrame(got, tc.f); d != "" {
				t.Fatal(d)
			}
			if e := entries(got.Meta); !slices.Equal(e, tc.meta) {
				t.Fatalf("meta entries %q, want %q", e, tc.meta)
			}
			for _, e := range tc.meta {
				v, ok := got.Meta.Get(e.k)
				if !ok || string(v) != e.v {
					t.Fatalf("Get(%q) = %q, %v; want %q", e.k, v, ok, e.v)
				}
				if s := got.Meta.GetString(e.k); s != e.v {
					t.Fatalf("GetString(%q) = %q, want %q", e.k, s, e.v)
				}
			}
			if v, ok := got.Meta.Get("absent"); ok || v != nil {
				t.Fatalf("Get(absent) = %q, %v", v, ok)
			}
			// Decode aliases its input and re-encodes to the same bytes.
			if again := frame.Append(nil, &got); !bytes.Equal(again, b) {
				t.Fatalf("re-encoded % x, want % x", again, b)
			}
			if len(got.Body) > 0 && &got.Body[0] != &b[len(b)-len(got.Body)] {
				t.Fatal("Body does not alias the input")
			}
		})
	}
}

// hdr is a valid header to break one field at a time.
var hdr = frame.Header{Type: frame.TypePush, Flags: frame.FlagAck, Biz: 1, Seq: 1}

// rawHeader returns 18 header bytes with magic, version and type as given and the rest of hdr.
func rawHeader(m0, m1, ver, typ byte) []byte {
	b := header(hdr)
	b[0], b[1], b[2], b[3] = m0, m1, ver, typ
	return b
}

// withLens returns hdr's bytes with the given meta and body length claims.
func withLens(meta uint16, body uint32) []byte {
	h := hdr
	h.MetaLen, h.BodyLen = meta, body
	return header(h)
}

// frameWithMeta returns a whole REQUEST frame whose meta section is raw.
func frameWithMeta(raw []byte) []byte {
	b := header(frame.Header{Type: frame.TypeRequest, Biz: 1, MetaLen: uint16(len(raw)), BodyLen: 2})
	b = append(b, raw...)
	return append(b, "hi"...)
}

func TestDecodeErrors(t *testing.T) {
	ff := byte(0xFF)
	tests := []struct {
		name string
		in   []byte
		lim  frame.Limits
		code frame.Code
		is   error // the sentinel, when it matters
	}{
		{"bad magic 0", rawHeader('X', 'W', 1, 7), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMagic},
		{"bad magic 1", rawHeader('P', 'X', 1, 7), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMagic},
		{"bad magic swapped", rawHeader('W', 'P', 1, 7), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMagic},
		{"bad magic 1 byte", []byte("G"), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMagic},
		{"bad magic 2 bytes", []byte("PX"), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMagic},
		{"bad magic http", []byte("GET / HTTP/1.1\r\n"), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMagic},
		{"bad magic 17 bytes", rawHeader('X', 'W', 1, 7)[:17], frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMagic},
		{"version 0", rawHeader('P', 'W', 0, 7), frame.Limits{}, frame.CodeUnsupportedVersion, frame.ErrVersion},
		{"version 2", rawHeader('P', 'W', 2, 7), frame.Limits{}, frame.CodeUnsupportedVersion, frame.ErrVersion},
		{"version 255", rawHeader('P', 'W', 255, 7), frame.Limits{}, frame.CodeUnsupportedVersion, frame.ErrVersion},
		{"version 2 short", []byte{'P', 'W', 2}, frame.Limits{}, frame.CodeUnsupportedVersion, frame.ErrVersion},
		{"type 0", rawHeader('P', 'W', 1, 0), frame.Limits{}, frame.CodeBadFrame, frame.ErrUnknownType},
		{"type 0x0D", rawHeader('P', 'W', 1, 0x0D), frame.Limits{}, frame.CodeBadFrame, frame.ErrUnknownType},
		{"type 0xFF", rawHeader('P', 'W', 1, ff), frame.Limits{}, frame.CodeBadFrame, frame.ErrUnknownType},
		{"flag 0x02", header(frame.Header{Type: frame.TypePush, Flags: 0x02}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadFlags},
		{"flag 0x80", header(frame.Header{Type: frame.TypePing, Flags: 0x80}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadFlags},
		{"flags 0xFF", header(frame.Header{Type: frame.TypePush, Flags: 0xFF}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadFlags},
		{"meta 4097", withLens(frame.MaxMetaLen+1, 0), frame.Limits{}, frame.CodeFrameTooLarge, frame.ErrMetaTooLarge},
		{"meta 0xFFFF", withLens(0xFFFF, 0), frame.Limits{}, frame.CodeFrameTooLarge, frame.ErrMetaTooLarge},
		{"body default+1", withLens(0, frame.DefaultMaxBody+1), frame.Limits{}, frame.CodeFrameTooLarge, frame.ErrBodyTooLarge},
		{"body custom+1", withLens(0, 101), frame.Limits{MaxBody: 100}, frame.CodeFrameTooLarge, frame.ErrBodyTooLarge},
		{"body over clamp", withLens(0, frame.MaxBodyLimit+1), frame.Limits{MaxBody: 1 << 30}, frame.CodeFrameTooLarge, frame.ErrBodyTooLarge},
		{"body 0xFFFFFFFF header only", withLens(0, 0xFFFFFFFF), frame.Limits{}, frame.CodeFrameTooLarge, frame.ErrBodyTooLarge},
		{"body 0xFFFFFFFF max limit", withLens(0, 0xFFFFFFFF), frame.Limits{MaxBody: frame.MaxBodyLimit}, frame.CodeFrameTooLarge, frame.ErrBodyTooLarge},
		{"meta zero key length", frameWithMeta([]byte{0, 0, 0}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta zero key length after entry", frameWithMeta(append(frame.AppendMetaString(nil, "a", "b"), 0, 0, 0)), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta key overruns", frameWithMeta([]byte{5, 'a', 'b'}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta no value length", frameWithMeta([]byte{3, 'a', 'b', 'c'}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta truncated value length", frameWithMeta([]byte{3, 'a', 'b', 'c', 0}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta value overruns", frameWithMeta([]byte{1, 'k', 0, 5, 'v', 'v'}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta value overruns by one", frameWithMeta([]byte{1, 'k', 0, 2, 'v'}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta value length 0xFFFF", frameWithMeta([]byte{1, 'k', ff, ff, 'v'}), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta trailing byte", frameWithMeta(append(frame.AppendMetaString(nil, "a", "b"), 1)), frame.Limits{}, frame.CodeBadFrame, frame.ErrBadMeta},
		{"meta duplicate key", frameWithMeta(frame.AppendMetaString(frame.AppendMetaString(nil, "id", "1"), "id", "2")), frame.Limits{}, frame.CodeBadFrame, frame.ErrDuplicateMeta},
		{"meta duplicate key same value", frameWithMeta(frame.AppendMetaString(frame.AppendMetaString(nil, "id", "1"), "id", "1")), frame.Limits{}, frame.CodeBadFrame, frame.ErrDuplicateMeta},
		{"meta duplicate key not adjacent", frameWithMeta(metaOf("a", "b", "c", "b")), frame.Limits{}, frame.CodeBadFrame, frame.ErrDuplicateMeta},
		{"meta duplicate key among many", frameWithMeta(metaOf(append(manyKeys(200), "k0042")...)), frame.Limits{}, frame.CodeBadFrame, frame.ErrDuplicateMeta},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, n, err := frame.Decode(tc.in, tc.lim)
			if errors.Is(err, frame.ErrShort) {
				t.Fatalf("Decode = ErrShort, want an *Error with code %v", tc.code)
			}
			wantCode(t, err, tc.code)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if n != 0 || f.Meta != nil || f.Body != nil || f.Header != (frame.Header{}) {
				t.Fatalf("Decode returned n=%d frame %+v with an error", n, f)
			}
			if !strings.HasPrefix(err.Error(), "frame: "+tc.code.String()+": ") {
				t.Fatalf("Error() = %q", err.Error())
			}
		})
	}
}

// metaOf builds meta whose keys are as given, each with a short value.
func metaOf(keys ...string) frame.Meta {
	var m frame.Meta
	for i, k := range keys {
		m = frame.AppendMetaString(m, k, fmt.Sprint(i))
	}
	return m
}

// manyKeys returns n distinct keys.
func manyKeys(n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%04d", i)
	}
	return keys
}

// TestHeaderOnlyErrors checks that header violations are reported from the header alone, whatever
// follows it (or does not).
func TestHeaderOnlyErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    []byte
		lim  frame.Limits
		code frame.Code
	}{
		{"body 0xFFFFFFFF", withLens(0, 0xFFFFFFFF), frame.Limits{}, frame.CodeFrameTooLarge},
		{"body 0x80000000", withLens(0, 0x80000000), frame.Limits{}, frame.CodeFrameTooLarge},
		{"meta 0xFFFF body 0xFFFFFFFF", withLens(0xFFFF, 0xFFFFFFFF), frame.Limits{}, frame.CodeFrameTooLarge},
		{"type 0xFF", rawHeader('P', 'W', 1, 0xFF), frame.Limits{}, frame.CodeBadFrame},
		{"version 9", rawHeader('P', 'W', 9, 1), frame.Limits{}, frame.CodeUnsupportedVersion},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.h) != frame.HeaderLen {
				t.Fatalf("test header is %d bytes", len(tc.h))
			}
			_, err := frame.ParseHeader(tc.h, tc.lim)
			wantCode(t, err, tc.code)
			_, _, err = frame.Decode(tc.h, tc.lim)
			wantCode(t, err, tc.code)
			// Trailing bytes change nothing.
			_, _, err = frame.Decode(append(slices.Clip(tc.h), make([]byte, 100)...), tc.lim)
			wantCode(t, err, tc.code)
		})
	}
}

func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		name    string
		lim     frame.Limits
		maxBody uint32
	}{
		{"zero", frame.Limits{}, frame.DefaultMaxBody},
		{"negative", frame.Limits{MaxBody: -1}, frame.DefaultMaxBody},
		{"custom", frame.Limits{MaxBody: 100}, 100},
		{"one", frame.Limits{MaxBody: 1}, 1},
		{"max", frame.Limits{MaxBody: frame.MaxBodyLimit}, frame.MaxBodyLimit},
		{"clamped", frame.Limits{MaxBody: frame.MaxBodyLimit * 4}, frame.MaxBodyLimit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := tc.lim.MaxFrame(), frame.HeaderLen+frame.MaxMetaLen+int(tc.maxBody); got != want {
				t.Fatalf("MaxFrame = %d, want %d", got, want)
			}
			// At the limit: the header is accepted, and the frame decodes once whole.
			h, err := frame.ParseHeader(withLens(frame.MaxMetaLen, tc.maxBody), tc.lim)
			if err != nil {
				t.Fatalf("ParseHeader at the limit: %v", err)
			}
			if h.Len() != tc.lim.MaxFrame() {
				t.Fatalf("Len = %d, want %d", h.Len(), tc.lim.MaxFrame())
			}
			if _, _, err := frame.Decode(withLens(0, tc.maxBody), tc.lim); !errors.Is(err, frame.ErrShort) {
				t.Fatalf("Decode of a header at the limit = %v, want ErrShort", err)
			}
			f := mk(frame.TypeRequest, 0, 0, 1, 1, nil, make([]byte, tc.maxBody))
			if err := frame.Check(&f, tc.lim); err != nil {
				t.Fatalf("Check at the limit: %v", err)
			}
			b := encode(f)
			if _, n, err := frame.Decode(b, tc.lim); err != nil || n != len(b) {
				t.Fatalf("Decode at the limit = %d, %v", n, err)
			}
			// One byte over.
			_, err = frame.ParseHeader(withLens(0, tc.maxBody+1), tc.lim)
			wantCode(t, err, frame.CodeFrameTooLarge)
			f.Body = append(f.Body, 0)
			wantCode(t, frame.Check(&f, tc.lim), frame.CodeFrameTooLarge)
			_, _, err = frame.Decode(encode(f), tc.lim)
			wantCode(t, err, frame.CodeFrameTooLarge)
		})
	}
}

func TestMaxMeta(t *testing.T) {
	m := fillMeta(frame.MaxMetaLen)
	if len(m) != frame.MaxMetaLen {
		t.Fatalf("meta is %d bytes", len(m))
	}
	f := frame.Frame{Header: frame.Header{Type: frame.TypeRequest, Biz: 1}, Meta: m}
	if err := frame.Check(&f, frame.Limits{}); err != nil {
		t.Fatalf("Check: %v", err)
	}
	got, _, err := frame.Decode(encode(f), frame.Limits{})
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if !bytes.Equal(got.Meta, m) {
		t.Fatal("meta differs")
	}
	f.Meta = append(f.Meta, 0)
	wantCode(t, frame.Check(&f, frame.Limits{}), frame.CodeFrameTooLarge)
	wantCode(t, f.Meta.Validate(), frame.CodeFrameTooLarge)
	_, _, err = frame.Decode(encode(f), frame.Limits{})
	wantCode(t, err, frame.CodeFrameTooLarge)
}

// fillMeta returns well-formed meta of exactly n bytes (n ≥ 4): one entry padded by its value.
func fillMeta(n int) frame.Meta {
	m := frame.AppendMetaString(nil, "pad", "")
	return frame.AppendMeta(nil, "pad", make([]byte, n-len(m)))
}

// TestPartial checks that every proper prefix of a frame is ErrShort, for Decode and (up to the
// header's length) ParseHeader.
func TestPartial(t *testing.T) {
	for _, tc := range samples() {
		t.Run(tc.name, func(t *testing.T) {
			b := encode(tc.f)
			for i := range len(b) {
				f, n, err := frame.Decode(b[:i], frame.Limits{})
				if !errors.Is(err, frame.ErrShort) || n != 0 || f.Meta != nil || f.Body != nil {
					t.Fatalf("Decode(%d of %d bytes) = %d, %v; want 0, ErrShort", i, len(b), n, err)
				}
				_, err = frame.ParseHeader(b[:i], frame.Limits{})
				if i < frame.HeaderLen && !errors.Is(err, frame.ErrShort) {
					t.Fatalf("ParseHeader(%d bytes) = %v, want ErrShort", i, err)
				}
				if i >= frame.HeaderLen && err != nil {
					t.Fatalf("ParseHeader(%d bytes) = %v", i, err)
				}
			}
		})
	}
}

// TestCoalesced checks that frames back to back decode one at a time, whatever the split.
func TestCoalesced(t *testing.T) {
	ss := samples()
	for i := range ss {
		a, b := ss[i], ss[(i+1)%len(ss)]
		t.Run(a.name+"+"+b.name, func(t *testing.T) {
			buf := append(encode(a.f), encode(b.f)...)
			got, n, err := frame.Decode(buf, frame.Limits{})
			if err != nil {
				t.Fatalf("first: %v", err)
			}
			if d := sameFrame(got, a.f); d != "" {
				t.Fatalf("first: %s", d)
			}
			if n != len(encode(a.f)) {
				t.Fatalf("first consumed %d", n)
			}
			got, n2, err := frame.Decode(buf[n:], frame.Limits{})
			if err != nil {
				t.Fatalf("second: %v", err)
			}
			if d := sameFrame(got, b.f); d != "" {
				t.Fatalf("second: %s", d)
			}
			if n+n2 != len(buf) {
				t.Fatalf("consumed %d+%d of %d", n, n2, len(buf))
			}
			if _, _, err := frame.Decode(buf[n+n2:], frame.Limits{}); !errors.Is(err, frame.ErrShort) {
				t.Fatalf("after both: %v, want ErrShort", err)
			}
			// The first frame and part of the second: the first decodes, then ErrShort.
			for cut := n + 1; cut < len(buf); cut++ {
				if _, m, err := frame.Decode(buf[:cut], frame.Limits{}); err != nil || m != n {
					t.Fatalf("cut %d: first = %d, %v", cut, m, err)
				}
				if _, _, err := frame.Decode(buf[n:cut], frame.Limits{}); !errors.Is(err, frame.ErrShort) {
					t.Fatalf("cut %d: second = %v, want ErrShort", cut, err)
				}
			}
		})
	}
}

func TestCheck(t *testing.T) {
	ok := mk(frame.TypePush, frame.FlagAck, 0, 1, 1, []kv{{"id", "1"}}, []byte("x"))
	for _, tc := range []struct {
		name string
		edit func(f *frame.Frame)
		code frame.Code // CodeOK: no error
	}{
		{"ok", func(*frame.Frame) {}, frame.CodeOK},
		{"type 0", func(f *frame.Frame) { f.Type = 0 }, frame.CodeBadFrame},
		{"type 0x0D", func(f *frame.Frame) { f.Type = frame.NumTypes }, frame.CodeBadFrame},
		{"flags", func(f *frame.Frame) { f.Flags = 0x40 }, frame.CodeBadFrame},
		{"meta too large", func(f *frame.Frame) { f.Meta = fillMeta(frame.MaxMetaLen + 1) }, frame.CodeFrameTooLarge},
		{"body too large", func(f *frame.Frame) { f.Body = make([]byte, frame.DefaultMaxBody+1) }, frame.CodeFrameTooLarge},
		{"bad meta", func(f *frame.Frame) { f.Meta = frame.Meta{1, 'k', 0} }, frame.CodeBadFrame},
		{"duplicate meta", func(f *frame.Frame) { f.Meta = metaOf("id", "id") }, frame.CodeBadFrame},
		// Check ignores the length fields: Append takes them from Meta and Body.
		{"stale lengths", func(f *frame.Frame) { f.MetaLen, f.BodyLen = 9999, 1<<30 }, frame.CodeOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ok
			tc.edit(&f)
			err := frame.Check(&f, frame.Limits{})
			if tc.code == frame.CodeOK {
				if err != nil {
					t.Fatalf("Check = %v", err)
				}
				return
			}
			wantCode(t, err, tc.code)
		})
	}
}

func TestMetaValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    frame.Meta
		err  error
	}{
		{"nil", nil, nil},
		{"one", metaOf("a"), nil},
		{"prefix keys", metaOf("a", "ab", "abc", "b"), nil},
		{"case differs", metaOf("id", "ID", "Id"), nil},
		{"16 distinct", metaOf(manyKeys(16)...), nil},
		{"17 distinct", metaOf(manyKeys(17)...), nil},
		{"300 distinct", metaOf(manyKeys(300)...), nil},
		{"dup first and 17th", metaOf(append(manyKeys(16), "k0000")...), frame.ErrDuplicateMeta},
		{"dup at 17 and 18", metaOf(append(manyKeys(16), "x", "x")...), frame.ErrDuplicateMeta},
		{"dup late", metaOf(append(manyKeys(300), "k0299")...), frame.ErrDuplicateMeta},
		{"dup then malformed", append(metaOf("a", "a"), 0), frame.ErrDuplicateMeta},
		{"many then malformed", append(metaOf(manyKeys(100)...), 0), frame.ErrBadMeta},
		{"most entries", minEntries(frame.MaxMetaLen / 5), nil},
		{"too large", fillMeta(frame.MaxMetaLen + 1), frame.ErrMetaTooLarge},
		{"key 255", metaOf(strings.Repeat("k", 255)), nil},
		{"same long keys", metaOf(strings.Repeat("k", 255), strings.Repeat("k", 255)), frame.ErrDuplicateMeta},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.m.Validate(); err != tc.err {
				t.Fatalf("Validate = %v, want %v", err, tc.err)
			}
		})
	}
}

// minEntries returns meta of n entries of the smallest size with distinct keys: a 2-byte key and
// an empty value, 5 bytes each.
func minEntries(n int) frame.Meta {
	var m frame.Meta
	for i := range n {
		m = frame.AppendMeta(m, string([]byte{byte(0x21 + i/90), byte(0x21 + i%90)}), nil)
	}
	return m
}

func TestMetaAccessors(t *testing.T) {
	m := frame.AppendMeta(metaOf("a", "b"), "bin", []byte{0, 1, 0xFF})
	if v, ok := m.Get("bin"); !ok || !bytes.Equal(v, []byte{0, 1, 0xFF}) {
		t.Fatalf("Get(bin) = %q, %v", v, ok)
	}
	if v, ok := m.Get(""); ok || v != nil {
		t.Fatalf("Get(\"\") = %q, %v", v, ok)
	}
	if s := m.GetString("nope"); s != "" {
		t.Fatalf("GetString(nope) = %q", s)
	}
	var seen []string
	m.Range(func(k, _ []byte) bool {
		seen = append(seen, string(k))
		return len(seen) < 2
	})
	if !slices.Equal(seen, []string{"a", "b"}) {
		t.Fatalf("Range stopped after %q", seen)
	}
	// On malformed meta, Get and Range see the well-formed prefix and stop.
	bad := append(metaOf("a"), 3, 'x')
	if _, ok := bad.Get("a"); !ok {
		t.Fatal("Get before the malformed entry failed")
	}
	if _, ok := bad.Get("x"); ok {
		t.Fatal("Get found a key in the malformed entry")
	}
	if e := entries(bad); len(e) != 1 {
		t.Fatalf("Range on malformed meta: %q", e)
	}
}

func TestAppendMetaPanics(t *testing.T) {
	for _, tc := range []struct {
		name string
		fn   func()
	}{
		{"empty key", func() { frame.AppendMeta(nil, "", nil) }},
		{"key 256", func() { frame.AppendMeta(nil, strings.Repeat("k", 256), nil) }},
		{"value 65536", func() { frame.AppendMeta(nil, "k", make([]byte, 1<<16)) }},
		{"string empty key", func() { frame.AppendMetaString(nil, "", "") }},
		{"string key 256", func() { frame.AppendMetaString(nil, strings.Repeat("k", 256), "") }},
		{"string value 65536", func() { frame.AppendMetaString(nil, "k", strings.Repeat("v", 1<<16)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Fatal("no panic")
				}
			}()
			tc.fn()
		})
	}
	// The largest entry is accepted.
	m := frame.AppendMeta(nil, strings.Repeat("k", 255), make([]byte, 0xFFFF))
	if len(m) != 1+255+2+0xFFFF || binary.BigEndian.Uint16(m[256:]) != 0xFFFF {
		t.Fatalf("largest entry encoded to %d bytes", len(m))
	}
}

func TestAppendHeader(t *testing.T) {
	h := frame.Header{Type: frame.TypeResponse, Flags: 0, Code: frame.CodeSlowConsumer, Biz: 0x0102, Seq: 0x03040506, MetaLen: 0x0708, BodyLen: 0x090A0B0C}
	want := []byte{'P', 'W', 1, 0x06, 0, 16, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	if got := frame.AppendHeader([]byte("x"), h); !bytes.Equal(got, append([]byte("x"), want...)) {
		t.Fatalf("AppendHeader = % x, want % x", got, want)
	}
}

func TestTypeString(t *testing.T) {
	want := map[frame.Type]string{
		0x01: "LOGIN", 0x02: "LOGIN_ACK", 0x03: "PING", 0x04: "PONG", 0x05: "REQUEST",
		0x06: "RESPONSE", 0x07: "PUSH", 0x08: "PUSH_ACK", 0x09: "JOIN", 0x0A: "LEAVE",
		0x0B: "GOAWAY", 0x0C: "ERROR",
		0x00: "Type(0x00)", 0x0D: "Type(0x0d)", 0xFF: "Type(0xff)",
	}
	for typ, name := range want {
		t.Run(name, func(t *testing.T) {
			if got := typ.String(); got != name {
				t.Fatalf("Type(%d).String() = %q, want %q", typ, got, name)
			}
			if typ.Valid() != !strings.HasPrefix(name, "Type(") {
				t.Fatalf("Type(%d).Valid() = %v", typ, typ.Valid())
			}
		})
	}
}

func TestCodeString(t *testing.T) {
	want := []string{
		"OK", "BAD_FRAME", "UNSUPPORTED_VERSION", "FRAME_TOO_LARGE", "NOT_LOGGED_IN",
		"AUTH_FAILED", "UNKNOWN_BIZ", "BUSY", "BACKEND_ERROR", "BACKEND_TIMEOUT", "RATE_LIMITED",
		"FORBIDDEN", "LOGIN_TIMEOUT", "IDLE_TIMEOUT", "EVICTED", "SHUTTING_DOWN", "SLOW_CONSUMER",
		"OVERLOADED",
	}
	if len(want) != frame.NumCodes {
		t.Fatalf("%d names for %d codes", len(want), frame.NumCodes)
	}
	for i, name := range want {
		if got := frame.Code(i).String(); got != name {
			t.Errorf("Code(%d).String() = %q, want %q", i, got, name)
		}
	}
	for _, c := range []frame.Code{frame.NumCodes, 200, 255} {
		if got, w := c.String(), fmt.Sprintf("Code(%d)", uint8(c)); got != w {
			t.Errorf("Code(%d).String() = %q, want %q", c, got, w)
		}
	}
}
