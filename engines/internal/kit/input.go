package kit

import (
	"fmt"
	"sync"

	"github.com/pushwire/pushwire/engines"
)

// Reader offers connections' input to the handler under the seam's rules, the same on every
// engine:
//
//   - OnData is offered at most MaxFrame bytes at a time. When it consumes part of a full
//     window, the rest is offered at once; when it consumes nothing of MaxFrame bytes, the
//     connection is closed with engines.ErrFrameTooLarge. A partial frame therefore never
//     reaches MaxFrame bytes.
//   - A consumed count outside 0..len(in) closes the connection with engines.ErrBadConsume.
//   - What the handler leaves is kept in the connection's Input and offered again, followed by
//     the new bytes, on the next call.
//
// The Input's buffer (one growth and shrink rule): it starts at Size bytes (or the pending tail's
// length, if larger), doubles when full up to MaxFrame, and goes back to Size once a frame larger
// than Size has been consumed and what is left fits in Size. Buffers of Size bytes are pooled,
// so an engine that reads into a buffer of its library (Feed) holds none while no partial frame
// is pending; an engine that reads into the Input itself (Space, Commit) sets Keep.
type Reader struct {
	H        engines.Handler
	MaxFrame int
	Size     int
	// Keep leaves an emptied buffer with its Input (the engine reads into it) instead of giving
	// it back to the pool.
	Keep bool
	pool sync.Pool // *[]byte of capacity Size
}

// NewReader returns the reader for an engine's cfg (MaxFrame, and ReadBufferSize as Size).
func NewReader(cfg engines.Config, h engines.Handler) *Reader {
	cfg = cfg.WithDefaults()
	return &Reader{H: h, MaxFrame: cfg.MaxFrame, Size: cfg.ReadBufferSize}
}

// Input is one connection's unconsumed input: nothing while no partial frame is pending (unless
// the Reader keeps its buffers). It is not safe for concurrent use: the engine calls the Reader
// for one connection at a time, as it calls the handler.
type Input struct{ p *[]byte }

// Pending is the number of bytes kept.
func (in *Input) Pending() int {
	if in.p == nil {
		return 0
	}
	return len(*in.p)
}

// Offer offers data (valid only during the call) to the handler in windows of at most MaxFrame
// bytes, and returns how many bytes it consumed. It moves on to the next window only when the
// handler consumed part of a full one and stopped (if not nil) reports false.
func (r *Reader) Offer(c engines.Conn, data []byte, stopped func() bool) (int, error) {
	off := 0
	for off < len(data) {
		win := data[off:]
		cut := len(win) > r.MaxFrame
		if cut {
			win = win[:r.MaxFrame]
		}
		n, err := r.H.OnData(c, win)
		if err != nil {
			return off, err
		}
		if n < 0 || n > len(win) {
			return off, fmt.Errorf("%w: %d of %d bytes", engines.ErrBadConsume, n, len(win))
		}
		if n == 0 && len(win) >= r.MaxFrame {
			return off, engines.ErrFrameTooLarge
		}
		off += n
		if !cut || (stopped != nil && stopped()) {
			break
		}
	}
	return off, nil
}

// Feed offers data (valid only during the call; typically the library's read buffer) after what
// in holds, and keeps what the handler leaves. Without a pending frame data is offered as it
// is, and only an unconsumed tail is copied.
func (r *Reader) Feed(c engines.Conn, in *Input, data []byte, stopped func() bool) error {
	for len(data) > 0 {
		if in.p == nil {
			n, err := r.Offer(c, data, stopped)
			if err != nil {
				return err
			}
			if rest := data[n:]; len(rest) > 0 && (stopped == nil || !stopped()) {
				r.Hold(in, rest)
			}
			return nil
		}
		buf := *in.p
		take := min(r.MaxFrame-len(buf), len(data))
		buf = r.ensure(in, len(buf)+take)
		buf = append(buf, data[:take]...)
		*in.p = buf
		data = data[take:]
		n, err := r.Offer(c, buf, stopped)
		if err != nil {
			return err
		}
		r.consumed(in, n)
		if stopped != nil && stopped() {
			return nil
		}
	}
	return nil
}

// Hold copies rest, the unconsumed tail of input the engine offered itself (Offer), into in,
// which must be empty.
func (r *Reader) Hold(in *Input, rest []byte) {
	buf := r.ensure(in, len(rest))
	*in.p = append(buf[:0], rest...)
}

// Space returns the free room at the end of in's buffer, for an engine that reads into it; the
// buffer is allocated, or grown (doubling, up to MaxFrame) when full. Commit offers what was read.
func (r *Reader) Space(in *Input) []byte {
	if in.p == nil {
		r.ensure(in, 0)
	}
	buf := *in.p
	if len(buf) == cap(buf) {
		buf = r.ensure(in, len(buf)+1)
	}
	return buf[len(buf):cap(buf)]
}

// Commit adds the n bytes just read into Space to in and offers everything in holds.
func (r *Reader) Commit(c engines.Conn, in *Input, n int, stopped func() bool) error {
	buf := (*in.p)[:len(*in.p)+n]
	*in.p = buf
	consumed, err := r.Offer(c, buf, stopped)
	if err != nil {
		return err
	}
	r.consumed(in, consumed)
	return nil
}

// Release gives in's buffer back (the connection is done).
func (r *Reader) Release(in *Input) {
	if in.p != nil {
		r.put(in.p)
		in.p = nil
	}
}

// consumed drops the first n bytes of in's buffer and applies the shrink rule.
func (r *Reader) consumed(in *Input, n int) {
	buf := *in.p
	rest := len(buf) - n
	switch {
	case rest == 0 && !r.Keep:
		r.Release(in)
	case cap(buf) > r.Size && rest <= r.Size:
		// A large frame has gone: give its buffer back.
		p := r.get(r.Size)
		*p = append((*p)[:0], buf[n:]...)
		r.put(in.p)
		in.p = p
	default:
		*in.p = buf[:copy(buf, buf[n:])]
	}
}

// ensure makes in's buffer hold at least need bytes, growing it by doubling up to MaxFrame, and
// returns it.
func (r *Reader) ensure(in *Input, need int) []byte {
	if in.p == nil {
		in.p = r.get(need)
		return *in.p
	}
	buf := *in.p
	if need <= cap(buf) {
		return buf
	}
	p := r.get(min(max(2*cap(buf), need), max(r.MaxFrame, need)))
	*p = append((*p)[:0], buf...)
	r.put(in.p)
	in.p = p
	return *p
}

// get returns an empty buffer of at least n bytes: a pooled one of Size bytes when n fits.
func (r *Reader) get(n int) *[]byte {
	if n <= r.Size {
		if p, _ := r.pool.Get().(*[]byte); p != nil {
			*p = (*p)[:0]
			return p
		}
		b := make([]byte, 0, r.Size)
		return &b
	}
	b := make([]byte, 0, n)
	return &b
}

func (r *Reader) put(p *[]byte) {
	if cap(*p) == r.Size {
		*p = (*p)[:0]
		r.pool.Put(p)
	}
}
