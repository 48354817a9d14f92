// Package wsproto is pushwire's WebSocket (RFC 6455) codec, for both sides: frame headers,
// masking, close payloads, the server's incremental parse of the HTTP/1.1 upgrade request and its
// answers, and a client (Client) that turns a net.Conn into a byte stream of binary messages.
//
// It uses the standard library only, so that every engine, the layer engines/ws and every client
// share one codec.
package wsproto

import (
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"unicode/utf8"
)

// Opcodes (RFC 6455 §5.2).
const (
	OpContinuation, OpText, OpBinary byte = 0x0, 0x1, 0x2
	OpClose, OpPing, OpPong          byte = 0x8, 0x9, 0xA
)

// Close status codes (RFC 6455 §7.4.1).
const (
	CloseNormal           = 1000
	CloseGoingAway        = 1001
	CloseProtocolError    = 1002
	CloseUnsupportedData  = 1003
	CloseNoStatus         = 1005 // never sent: a close frame without a payload
	CloseInvalidPayload   = 1007
	ClosePolicyViolation  = 1008
	CloseTooBig           = 1009
	CloseInternalError    = 1011
	MaxControlPayload     = 125 // largest payload of a control frame
	MaxCloseReason        = 123 // largest reason in a close frame
	MaxHeaderLen          = 14  // largest frame header (64-bit length and a mask)
	maxLength64           = 1<<63 - 1
	finBit, rsvBits, mask = 0x80, 0x70, 0x80
)

// Header is one frame's header.
type Header struct {
	Fin    bool
	Rsv    byte // the three RSV bits, 0..7
	Op     byte
	Masked bool
	Mask   [4]byte
	Length int64
}

// IsControl reports whether op is a control opcode (close, ping, pong and the reserved 0xB..0xF).
func IsControl(op byte) bool { return op&0x8 != 0 }

// IsReserved reports whether op is a reserved opcode (0x3..0x7, 0xB..0xF).
func IsReserved(op byte) bool {
	switch op {
	case OpContinuation, OpText, OpBinary, OpClose, OpPing, OpPong:
		return false
	}
	return true
}

// Header errors.
var (
	ErrNonMinimalLength = errors.New("wsproto: frame length not in its minimal encoding")
	ErrLengthTopBit     = errors.New("wsproto: 64-bit frame length with the top bit set")
)

// ParseHeader decodes the header at the start of b. n == 0 with a nil error: b holds only part
// of a header. A malformed header (non-minimal length, length with the top bit set) is an error.
func ParseHeader(b []byte) (h Header, n int, err error) {
	if len(b) < 2 {
		return h, 0, nil
	}
	h.Fin = b[0]&finBit != 0
	h.Rsv = (b[0] & rsvBits) >> 4
	h.Op = b[0] & 0x0F
	h.Masked = b[1]&mask != 0
	n = 2
	switch l := b[1] & 0x7F; l {
	case 126:
		if len(b) < 4 {
			return Header{}, 0, nil
		}
		h.Length = int64(binary.BigEndian.Uint16(b[2:4]))
		if h.Length < 126 {
			return Header{}, 0, ErrNonMinimalLength
		}
		n = 4
	case 127:
		if len(b) < 10 {
			return Header{}, 0, nil
		}
		u := binary.BigEndian.Uint64(b[2:10])
		if u > maxLength64 {
			return Header{}, 0, ErrLengthTopBit
		}
		if u <= 0xFFFF {
			return Header{}, 0, ErrNonMinimalLength
		}
		h.Length = int64(u)
		n = 10
	default:
		h.Length = int64(l)
	}
	if h.Masked {
		if len(b) < n+4 {
			return Header{}, 0, nil
		}
		copy(h.Mask[:], b[n:n+4])
		n += 4
	}
	return h, n, nil
}

// AppendHeader appends h encoded (its length in the minimal encoding).
func AppendHeader(dst []byte, h Header) []byte {
	b0 := h.Op&0x0F | (h.Rsv&7)<<4
	if h.Fin {
		b0 |= finBit
	}
	var m byte
	if h.Masked {
		m = mask
	}
	switch {
	case h.Length < 126:
		dst = append(dst, b0, m|byte(h.Length))
	case h.Length <= 0xFFFF:
		dst = append(dst, b0, m|126)
		dst = binary.BigEndian.AppendUint16(dst, uint16(h.Length))
	default:
		dst = append(dst, b0, m|127)
		dst = binary.BigEndian.AppendUint64(dst, uint64(h.Length))
	}
	if h.Masked {
		dst = append(dst, h.Mask[:]...)
	}
	return dst
}

// HeaderLen is the encoded size of a header for a payload of n bytes, masked or not.
func HeaderLen(n int, masked bool) int {
	l := 2
	switch {
	case n < 126:
	case n <= 0xFFFF:
		l += 2
	default:
		l += 8
	}
	if masked {
		l += 4
	}
	return l
}

// MaskBytes XORs b in place with key, starting at key offset pos; returns the next offset.
func MaskBytes(key [4]byte, pos int, b []byte) int {
	pos &= 3
	i := 0
	// Align the key to pos 0, then XOR eight bytes at a time.
	for ; i < len(b) && pos != 0; i++ {
		b[i] ^= key[pos]
		pos = (pos + 1) & 3
	}
	if len(b)-i >= 8 {
		k32 := uint64(binary.LittleEndian.Uint32(key[:]))
		k64 := k32 | k32<<32
		for ; len(b)-i >= 8; i += 8 {
			v := binary.LittleEndian.Uint64(b[i:])
			binary.LittleEndian.PutUint64(b[i:], v^k64)
		}
	}
	for ; i < len(b); i++ {
		b[i] ^= key[pos]
		pos = (pos + 1) & 3
	}
	return pos
}

const acceptGUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

// AcceptKey is Sec-WebSocket-Accept for a Sec-WebSocket-Key.
func AcceptKey(key string) string {
	s := sha1.New()
	s.Write([]byte(key))
	s.Write([]byte(acceptGUID))
	var sum [sha1.Size]byte
	return base64.StdEncoding.EncodeToString(s.Sum(sum[:0]))
}

// AppendClosePayload appends a close frame's payload: the status code and reason, cut to
// MaxCloseReason bytes (at a UTF-8 boundary).
func AppendClosePayload(dst []byte, code uint16, reason string) []byte {
	if len(reason) > MaxCloseReason {
		cut := MaxCloseReason
		for cut > 0 && reason[cut]&0xC0 == 0x80 {
			cut--
		}
		reason = reason[:cut]
	}
	dst = binary.BigEndian.AppendUint16(dst, code)
	return append(dst, reason...)
}

// ValidCloseCode reports whether code may be sent in a close frame (RFC 6455 §7.4).
func ValidCloseCode(code uint16) bool {
	switch {
	case code < 1000 || code >= 5000:
		return false
	case code >= 3000:
		return true
	}
	switch code {
	case 1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014:
		return true
	}
	return false
}

// ErrBadClosePayload is a close frame payload of one byte, or a code that may not be sent, or a
// reason that is not UTF-8.
var ErrBadClosePayload = errors.New("wsproto: invalid close frame payload")

// ParseClosePayload decodes a close frame's payload: an empty payload is CloseNoStatus.
func ParseClosePayload(p []byte) (code uint16, reason string, err error) {
	if len(p) == 0 {
		return CloseNoStatus, "", nil
	}
	if len(p) == 1 {
		return 0, "", ErrBadClosePayload
	}
	code = binary.BigEndian.Uint16(p)
	if !ValidCloseCode(code) || !utf8.Valid(p[2:]) {
		return 0, "", ErrBadClosePayload
	}
	return code, string(p[2:]), nil
}

// AppendFrame appends one whole unmasked frame (fin set) of op carrying payload: a server's frame.
func AppendFrame(dst []byte, op byte, payload []byte) []byte {
	dst = AppendHeader(dst, Header{Fin: true, Op: op, Length: int64(len(payload))})
	return append(dst, payload...)
}

// AppendMaskedFrame appends one whole masked frame (fin set) of op carrying payload with key: a
// client's frame. payload is not modified.
func AppendMaskedFrame(dst []byte, op byte, key [4]byte, payload []byte) []byte {
	dst = AppendHeader(dst, Header{Fin: true, Op: op, Masked: true, Mask: key, Length: int64(len(payload))})
	start := len(dst)
	dst = append(dst, payload...)
	MaskBytes(key, 0, dst[start:])
	return dst
}
