package frame_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/pushwire/pushwire/core/frame"
)

// seeds returns real frames of every type, each also split in two at several points (both halves
// are seeds: a partial frame, and a stream that starts mid-frame), and pairs of frames coalesced.
func seeds() [][]byte {
	var out [][]byte
	ss := samples()
	for i, s := range ss {
		b := encode(s.f)
		out = append(out, b)
		for _, cut := range []int{1, 2, 3, frame.HeaderLen - 1, frame.HeaderLen, frame.HeaderLen + 1, len(b) / 2, len(b) - 1} {
			if cut > 0 && cut < len(b) {
				out = append(out, slices2(b[:cut]), slices2(b[cut:]))
			}
		}
		next := encode(ss[(i+1)%len(ss)].f)
		out = append(out, append(slices2(b), next...))
		out = append(out, append(slices2(b), next[:len(next)/2]...))
	}
	// Violations, each after a good frame so the stream loop reaches them.
	ping := encode(mk(frame.TypePing, 0, 0, 0, 1, nil, nil))
	for _, bad := range [][]byte{
		withLens(0, 0xFFFFFFFF),
		withLens(frame.MaxMetaLen+1, 0),
		rawHeader('P', 'W', 2, 1),
		rawHeader('P', 'W', 1, 0x0D),
		header(frame.Header{Type: frame.TypePush, Flags: 0x80}),
		frameWithMeta([]byte{0, 0, 0}),
		frameWithMeta([]byte{1, 'k', 0, 9, 'v'}),
		frameWithMeta(metaOf("id", "id")),
		frameWithMeta(metaOf(append(manyKeys(40), "k0007")...)),
		encode(frame.Frame{Header: frame.Header{Type: frame.TypeRequest, Biz: 1}, Meta: many}),
	} {
		out = append(out, append(slices2(ping), bad...))
	}
	return out
}

// decodeAll decodes b as a stream, checking every frame. It returns the frames, how many bytes
// are left, and the error that stopped it (ErrShort when b ends in a partial frame or at a frame
// boundary).
func decodeAll(t *testing.T, b []byte, lim frame.Limits) ([]frame.Frame, int, error) {
	var fs []frame.Frame
	rest := b
	for {
		f, n, err := frame.Decode(rest, lim)
		if err != nil {
			if n != 0 {
				t.Fatalf("Decode returned n=%d with %v", n, err)
			}
			if errors.Is(err, frame.ErrShort) {
				if len(rest) >= frame.HeaderLen {
					// Short only if the header is good and claims more than there is.
					h, herr := frame.ParseHeader(rest, lim)
					if herr != nil || h.Len() <= len(rest) {
						t.Fatalf("ErrShort with %d bytes, header %+v, %v", len(rest), h, herr)
					}
				}
				return fs, len(rest), err
			}
			var fe *frame.Error
			if !errors.As(err, &fe) {
				t.Fatalf("Decode error %v (%T) is not an *Error", err, err)
			}
			return fs, len(rest), err
		}
		if n != f.Len() || n > len(rest) || n < frame.HeaderLen {
			t.Fatalf("consumed %d, Header.Len %d, input %d", n, f.Len(), len(rest))
		}
		if int(f.MetaLen) != len(f.Meta) || int(f.BodyLen) != len(f.Body) {
			t.Fatalf("header lengths %d/%d, meta %d body %d", f.MetaLen, f.BodyLen, len(f.Meta), len(f.Body))
		}
		if re := frame.Append(nil, &f); !bytes.Equal(re, rest[:n]) {
			t.Fatalf("re-encoded\n% x\nconsumed\n% x", re, rest[:n])
		}
		if err := f.Meta.Validate(); err != nil {
			t.Fatalf("decoded meta does not validate: %v", err)
		}
		if err := frame.Check(&f, lim); err != nil {
			t.Fatalf("decoded frame does not pass Check: %v", err)
		}
		// Meta rebuilt entry by entry is the same bytes, and Get finds every entry.
		var m frame.Meta
		f.Meta.Range(func(k, v []byte) bool {
			m = frame.AppendMeta(m, string(k), v)
			if got, ok := f.Meta.Get(string(k)); !ok || !bytes.Equal(got, v) {
				t.Fatalf("Get(%q) = %q, %v; Range gave %q", k, got, ok, v)
			}
			return true
		})
		if !bytes.Equal(m, f.Meta) {
			t.Fatalf("meta rebuilt from Range differs")
		}
		fs = append(fs, f)
		rest = rest[n:]
	}
}

// refValidate is a plain, map-based statement of Meta.Validate: the wire code it must give.
func refValidate(m []byte) frame.Code {
	if len(m) > frame.MaxMetaLen {
		return frame.CodeFrameTooLarge
	}
	seen := map[string]bool{}
	dup := false
	for len(m) > 0 {
		kl := int(m[0])
		if kl == 0 || len(m) < 1+kl+2 {
			return frame.CodeBadFrame
		}
		key := string(m[1 : 1+kl])
		vl := int(m[1+kl])<<8 | int(m[2+kl])
		if len(m) < 3+kl+vl {
			return frame.CodeBadFrame
		}
		dup = dup || seen[key]
		seen[key] = true
		m = m[3+kl+vl:]
	}
	if dup {
		return frame.CodeBadFrame
	}
	return frame.CodeOK
}

func checkValidate(t *testing.T, m frame.Meta) {
	err := m.Validate()
	want := refValidate(m)
	if want == frame.CodeOK {
		if err != nil {
			t.Fatalf("Validate(% x) = %v, want nil", []byte(m), err)
		}
		return
	}
	wantCode(t, err, want)
}

func FuzzDecode(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		_, _, _ = decodeAll(t, data, frame.Limits{})
		// The input is also meta, as the codec sees it once a header has passed.
		checkValidate(t, frame.Meta(data))
		if len(data) > frame.HeaderLen {
			checkValidate(t, frame.Meta(data[frame.HeaderLen:]))
		}
	})
}

// FuzzReader feeds the input a byte at a time through a Reader, which must see what Decode sees:
// the same frames, then io.EOF at a frame boundary, io.ErrUnexpectedEOF inside a frame, or the
// same protocol error.
func FuzzReader(f *testing.F) {
	for _, s := range seeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		lim := frame.Limits{}
		want, left, derr := decodeAll(t, data, lim)
		r := frame.NewReader(iotest.OneByteReader(bytes.NewReader(data)), lim)
		for i := 0; ; i++ {
			got, err := r.Next()
			if err != nil {
				if i != len(want) {
					t.Fatalf("Reader stopped after %d frames with %v, Decode found %d", i, err, len(want))
				}
				switch {
				case errors.Is(derr, frame.ErrShort) && left == 0:
					if err != io.EOF {
						t.Fatalf("Reader: %v, want io.EOF", err)
					}
				case errors.Is(derr, frame.ErrShort):
					if err != io.ErrUnexpectedEOF {
						t.Fatalf("Reader: %v, want io.ErrUnexpectedEOF", err)
					}
				default:
					var fe *frame.Error
					errors.As(derr, &fe)
					wantCode(t, err, fe.Code)
				}
				break
			}
			if i >= len(want) {
				t.Fatalf("Reader returned frame %d, Decode found %d", i, len(want))
			}
			if d := sameFrame(got, want[i]); d != "" {
				t.Fatalf("frame %d: %s", i, d)
			}
		}
		if c := r.BufCap(); c > lim.MaxFrame() {
			t.Fatalf("reader buffer grew to %d", c)
		}
	})
}
