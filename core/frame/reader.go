package frame

import (
	"errors"
	"io"
)

const readerMinBuf = 4 << 10

// Reader reads frames from a byte stream, keeping partial frames between reads. It grows its
// buffer to a frame's length only after that frame's header has been validated, so a peer cannot
// make it allocate in proportion to an unchecked length claim.
type Reader struct {
	r          io.Reader
	lim        Limits
	buf        []byte
	start, end int // buf[start:end] is read but not yet returned
}

// NewReader returns a Reader over r with the given limits.
func NewReader(r io.Reader, lim Limits) *Reader {
	return &Reader{r: r, lim: lim}
}

// Next returns the next frame. The frame's Meta and Body are valid until the next call. At the end
// of the stream it returns io.EOF, or io.ErrUnexpectedEOF inside a frame; a protocol violation is
// an *Error.
func (r *Reader) Next() (Frame, error) {
	for {
		f, n, err := Decode(r.buf[r.start:r.end], r.lim)
		if err == nil {
			r.start += n
			if r.start == r.end {
				r.start, r.end = 0, 0
			}
			return f, nil
		}
		if !errors.Is(err, ErrShort) {
			return Frame{}, err
		}
		need := HeaderLen
		if r.end-r.start >= HeaderLen {
			h, _ := ParseHeader(r.buf[r.start:r.end], r.lim) // validated by Decode above
			need = h.Len()
		}
		r.ensure(need)
		m, rerr := r.r.Read(r.buf[r.end:])
		r.end += m
		if rerr != nil && m == 0 {
			if errors.Is(rerr, io.EOF) && r.end > r.start {
				return Frame{}, io.ErrUnexpectedEOF
			}
			return Frame{}, rerr
		}
	}
}

// Buffered is the number of bytes read from the stream but not yet returned as frames.
func (r *Reader) Buffered() int { return r.end - r.start }

// ensure makes room for a frame of need bytes starting at r.start.
func (r *Reader) ensure(need int) {
	if need < readerMinBuf {
		need = readerMinBuf
	}
	if len(r.buf)-r.start >= need && r.end < len(r.buf) {
		return
	}
	if len(r.buf) >= need {
		copy(r.buf, r.buf[r.start:r.end])
		r.end -= r.start
		r.start = 0
		return
	}
	nb := make([]byte, need)
	r.end = copy(nb, r.buf[r.start:r.end])
	r.start = 0
	r.buf = nb
}
