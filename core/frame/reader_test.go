package frame_test

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"

	"github.com/pushwire/pushwire/core/frame"
)

// stream returns the frames of samples() back to back, and the frames.
func stream() ([]byte, []frame.Frame) {
	var buf []byte
	var fs []frame.Frame
	for _, s := range samples() {
		buf = frame.Append(buf, &s.f)
		fs = append(fs, s.f)
	}
	return buf, fs
}

// readAll reads frames from r until an error, checking each against want in order, and returns
// the error and how many frames it read.
func readAll(t *testing.T, r *frame.Reader, want []frame.Frame) (int, error) {
	t.Helper()
	for i := 0; ; i++ {
		f, err := r.Next()
		if err != nil {
			return i, err
		}
		if i >= len(want) {
			t.Fatalf("frame %d: unexpected %v", i, f.Type)
		}
		if d := sameFrame(f, want[i]); d != "" {
			t.Fatalf("frame %d: %s", i, d)
		}
	}
}

func TestReader(t *testing.T) {
	buf, want := stream()
	for _, tc := range []struct {
		name string
		r    func() io.Reader
	}{
		{"whole", func() io.Reader { return bytes.NewReader(buf) }},
		{"one byte", func() io.Reader { return iotest.OneByteReader(bytes.NewReader(buf)) }},
		{"half", func() io.Reader { return iotest.HalfReader(bytes.NewReader(buf)) }},
		{"data with EOF", func() io.Reader { return iotest.DataErrReader(bytes.NewReader(buf)) }},
		{"one byte with EOF", func() io.Reader { return iotest.DataErrReader(iotest.OneByteReader(bytes.NewReader(buf))) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := frame.NewReader(tc.r(), frame.Limits{})
			n, err := readAll(t, r, want)
			if err != io.EOF {
				t.Fatalf("after %d frames: %v, want io.EOF", n, err)
			}
			if n != len(want) {
				t.Fatalf("read %d frames, want %d", n, len(want))
			}
			if r.Buffered() != 0 {
				t.Fatalf("Buffered = %d at EOF", r.Buffered())
			}
			// EOF is sticky.
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("Next after EOF = %v", err)
			}
		})
	}
}

func TestReader100Frames(t *testing.T) {
	var buf []byte
	var want []frame.Frame
	for i := range 100 {
		f := mk(frame.TypePush, frame.FlagAck, 0, 9, uint32(i), []kv{{"id", string(rune('a' + i%26))}}, bytes.Repeat([]byte{byte(i)}, i*7))
		buf = frame.Append(buf, &f)
		want = append(want, f)
	}
	r := frame.NewReader(bytes.NewReader(buf), frame.Limits{})
	n, err := readAll(t, r, want)
	if err != io.EOF || n != 100 {
		t.Fatalf("read %d frames, then %v; want 100, io.EOF", n, err)
	}
}

func TestReaderLargest(t *testing.T) {
	f := frame.Frame{
		Header: frame.Header{Type: frame.TypePush, Biz: 1, Seq: 7},
		Meta:   fillMeta(frame.MaxMetaLen),
		Body:   bytes.Repeat([]byte("0123456789abcdef"), frame.DefaultMaxBody/16),
	}
	largest := encode(f)
	if len(largest) != (frame.Limits{}).MaxFrame() {
		t.Fatalf("largest frame is %d bytes, want %d", len(largest), (frame.Limits{}).MaxFrame())
	}
	over := f
	over.Body = append(over.Body[:len(over.Body):len(over.Body)], 'x')
	tooLarge := encode(over)

	for _, tc := range []struct {
		name string
		r    func(b []byte) io.Reader
	}{
		{"whole", func(b []byte) io.Reader { return bytes.NewReader(b) }},
		{"one byte", func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Twice, so the second frame reuses the buffer the first one grew.
			r := frame.NewReader(tc.r(append(slices2(largest), largest...)), frame.Limits{})
			n, err := readAll(t, r, []frame.Frame{f, f})
			if err != io.EOF || n != 2 {
				t.Fatalf("read %d frames, then %v; want 2, io.EOF", n, err)
			}
			if c := r.BufCap(); c > len(largest) {
				t.Fatalf("buffer grew to %d bytes for a %d-byte frame", c, len(largest))
			}

			r = frame.NewReader(tc.r(tooLarge), frame.Limits{})
			_, err = r.Next()
			wantCode(t, err, frame.CodeFrameTooLarge)
			if c := r.BufCap(); c > 4<<10 {
				t.Fatalf("buffer grew to %d bytes for a rejected frame", c)
			}
		})
	}
}

// slices2 returns a copy of b with no spare capacity.
func slices2(b []byte) []byte { return append([]byte(nil), b...) }

func TestReaderEOF(t *testing.T) {
	ping := encode(mk(frame.TypePing, 0, 0, 0, 1, nil, nil))
	push := encode(mk(frame.TypePush, 0, 0, 9, 2, []kv{{"id", "x"}}, []byte("payload")))
	for _, tc := range []struct {
		name   string
		in     []byte
		frames int
		err    error
	}{
		{"empty", nil, 0, io.EOF},
		{"one frame", ping, 1, io.EOF},
		{"one byte", push[:1], 0, io.ErrUnexpectedEOF},
		{"half header", push[:9], 0, io.ErrUnexpectedEOF},
		{"header", push[:frame.HeaderLen], 0, io.ErrUnexpectedEOF},
		{"mid meta", push[:frame.HeaderLen+2], 0, io.ErrUnexpectedEOF},
		{"mid body", push[:len(push)-1], 0, io.ErrUnexpectedEOF},
		{"frame then partial", append(slices2(ping), push[:len(push)-3]...), 1, io.ErrUnexpectedEOF},
		{"frame then header", append(slices2(ping), push[:frame.HeaderLen]...), 1, io.ErrUnexpectedEOF},
	} {
		for _, one := range []bool{false, true} {
			name := tc.name
			if one {
				name += "/one byte"
			}
			t.Run(name, func(t *testing.T) {
				var src io.Reader = bytes.NewReader(tc.in)
				if one {
					src = iotest.OneByteReader(src)
				}
				r := frame.NewReader(src, frame.Limits{})
				n := 0
				var err error
				for ; ; n++ {
					if _, err = r.Next(); err != nil {
						break
					}
				}
				if n != tc.frames || err != tc.err {
					t.Fatalf("read %d frames, then %v; want %d, %v", n, err, tc.frames, tc.err)
				}
			})
		}
	}
}

func TestReaderErrors(t *testing.T) {
	ping := encode(mk(frame.TypePing, 0, 0, 0, 1, nil, nil))
	boom := errors.New("boom")
	t.Run("read error", func(t *testing.T) {
		r := frame.NewReader(io.MultiReader(bytes.NewReader(ping), iotest.ErrReader(boom)), frame.Limits{})
		if _, err := r.Next(); err != nil {
			t.Fatalf("first: %v", err)
		}
		if _, err := r.Next(); err != boom {
			t.Fatalf("second: %v, want %v", err, boom)
		}
	})
	t.Run("read error mid frame", func(t *testing.T) {
		r := frame.NewReader(io.MultiReader(bytes.NewReader(ping[:5]), iotest.ErrReader(boom)), frame.Limits{})
		if _, err := r.Next(); err != boom {
			t.Fatalf("Next = %v, want %v", err, boom)
		}
	})
	t.Run("transient error then data", func(t *testing.T) {
		// A read error is returned as is, and the reader goes on if the stream does.
		r := frame.NewReader(&script{
			{data: ping[:7]}, {err: iotest.ErrTimeout}, {data: ping[7:]}, {err: io.EOF},
		}, frame.Limits{})
		if _, err := r.Next(); err != iotest.ErrTimeout {
			t.Fatalf("first: %v, want ErrTimeout", err)
		}
		if r.Buffered() != 7 {
			t.Fatalf("Buffered = %d after the error, want 7", r.Buffered())
		}
		if _, err := r.Next(); err != nil {
			t.Fatalf("second: %v", err)
		}
		if _, err := r.Next(); err != io.EOF {
			t.Fatalf("third: %v, want io.EOF", err)
		}
	})
	for _, tc := range []struct {
		name string
		in   []byte
		code frame.Code
	}{
		{"bad magic", []byte("GET / HTTP/1.1\r\n\r\n"), frame.CodeBadFrame},
		{"bad version after a frame", append(slices2(ping), 'P', 'W', 9), frame.CodeUnsupportedVersion},
		{"bad type", rawHeader('P', 'W', 1, 0xFF), frame.CodeBadFrame},
		{"duplicate meta", encode(mk(frame.TypeJoin, 0, 0, 1, 1, []kv{{"group", "a"}, {"group", "b"}}, nil)), frame.CodeBadFrame},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := frame.NewReader(iotest.OneByteReader(bytes.NewReader(tc.in)), frame.Limits{})
			var err error
			for err == nil {
				_, err = r.Next()
			}
			wantCode(t, err, tc.code)
			// The error is sticky: the reader does not skip past a violation.
			_, err = r.Next()
			wantCode(t, err, tc.code)
		})
	}
}

// script is a reader that plays its steps in order, one per Read, then returns io.EOF.
type script []struct {
	data []byte
	err  error
}

func (s *script) Read(p []byte) (int, error) {
	if len(*s) == 0 {
		return 0, io.EOF
	}
	st := &(*s)[0]
	n := copy(p, st.data)
	st.data = st.data[n:]
	if len(st.data) > 0 {
		return n, nil
	}
	*s = (*s)[1:]
	return n, st.err
}

// endless yields hdr, then zeros forever.
type endless struct {
	hdr []byte
}

func (e *endless) Read(p []byte) (int, error) {
	n := copy(p, e.hdr)
	e.hdr = e.hdr[n:]
	clear(p[n:])
	return len(p), nil
}

// TestReaderHugeClaim checks that a length claim over the limits is rejected from the header, and
// that the reader's buffer never grows past what the limits allow.
func TestReaderHugeClaim(t *testing.T) {
	for _, tc := range []struct {
		name   string
		hdr    []byte
		lim    frame.Limits
		code   frame.Code // CodeOK: the claim is within the limits
		maxCap int
	}{
		{"body 0xFFFFFFFF", withLens(0, 0xFFFFFFFF), frame.Limits{}, frame.CodeFrameTooLarge, 4 << 10},
		{"body default+1", withLens(0, frame.DefaultMaxBody+1), frame.Limits{}, frame.CodeFrameTooLarge, 4 << 10},
		{"meta 0xFFFF", withLens(0xFFFF, 0), frame.Limits{}, frame.CodeFrameTooLarge, 4 << 10},
		{"body 16 MiB+1 at max limit", withLens(0, frame.MaxBodyLimit+1), frame.Limits{MaxBody: frame.MaxBodyLimit}, frame.CodeFrameTooLarge, 4 << 10},
		{"body 101 over custom", withLens(0, 101), frame.Limits{MaxBody: 100}, frame.CodeFrameTooLarge, 4 << 10},
		// A claim within the limits may make the reader grow to that frame, and no more.
		{"body at limit", withLens(frame.MaxMetaLen, frame.DefaultMaxBody), frame.Limits{}, frame.CodeOK, (frame.Limits{}).MaxFrame()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := &endless{hdr: tc.hdr}
			r := frame.NewReader(src, tc.lim)
			_, err := r.Next()
			if tc.code != frame.CodeOK {
				wantCode(t, err, tc.code)
			} else if err == nil || errors.Is(err, frame.ErrShort) {
				// An endless stream of zeros after a valid header: the frame decodes, and
				// then the zeros are a bad magic.
				_, err = r.Next()
				wantCode(t, err, frame.CodeBadFrame)
			}
			if c := r.BufCap(); c > tc.maxCap {
				t.Fatalf("buffer grew to %d bytes, bound %d", c, tc.maxCap)
			}
		})
	}

	// The same, measured in allocations: a rejected claim costs the reader and one small buffer.
	hdr := withLens(0, 0xFFFFFFFF)
	allocs := testing.AllocsPerRun(100, func() {
		r := frame.NewReader(bytes.NewReader(hdr), frame.Limits{})
		if _, err := r.Next(); err == nil {
			t.Fatal("no error")
		}
	})
	if allocs > 3 {
		t.Fatalf("%v allocations for a rejected claim", allocs)
	}
}
