// Package frame is the pushwire wire codec, protocol version 1.
//
// Every frame is an 18-byte big-endian header, then meta (key/value pairs), then an opaque body:
//
//	offset size field
//	0      2    magic       0x50 0x57 ("PW")
//	2      1    version     1
//	3      1    type        Type
//	4      1    flags       bit 0 FlagAck; other bits 0
//	5      1    code        Code (replies); 0 in requests
//	6      2    biz         business ID; 0 = the connection itself
//	8      4    seq         a reply carries its request's seq
//	12     2    meta length at most MaxMetaLen
//	14     4    body length at most the receiver's max body (DefaultMaxBody)
//	18     …    meta        entries: key len (1 byte, 1..255), key, value len (2 bytes), value
//	…      …    body
//
// The read path never allocates: Decode returns a Frame whose Meta and Body alias the input, and
// the header is validated before a single byte of meta or body is looked at, so a length claim
// that exceeds the limits is rejected before anything is buffered for it.
package frame

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// Wire constants.
const (
	HeaderLen      = 18       // bytes before meta
	Magic0         = 0x50     // 'P'
	Magic1         = 0x57     // 'W'
	Version        = 1        // the only version this codec speaks
	MaxMetaLen     = 4096     // largest meta section
	DefaultMaxBody = 64 << 10 // default largest body (a gateway setting)
	MaxBodyLimit   = 16 << 20 // largest max-body a receiver may configure
	FlagAck        = 0x01     // PUSH: the client must answer with PUSH_ACK
	knownFlags     = FlagAck  // every other flag bit must be 0
	maxKeyLen      = 255      // meta key length fits one byte
	maxValueLen    = 0xFFFF   // meta value length fits two bytes
	maxMetaEntries = MaxMetaLen / 4
)

// Type is a frame type.
type Type uint8

// Frame types (docs/protocol.md "Frame types").
const (
	TypeLogin    Type = 0x01 // client → gateway; meta token (required), device, app, platform, sdk, net
	TypeLoginAck Type = 0x02 // gateway → client; meta conn, hb, node; msg on failure
	TypePing     Type = 0x03 // client → gateway
	TypePong     Type = 0x04 // gateway → client
	TypeRequest  Type = 0x05 // client → gateway; biz ≠ 0; body is the payload
	TypeResponse Type = 0x06 // gateway → client; same biz and seq as the request
	TypePush     Type = 0x07 // gateway → client; biz ≠ 0; meta id, group
	TypePushAck  Type = 0x08 // client → gateway; meta id
	TypeJoin     Type = 0x09 // client → gateway; meta group
	TypeLeave    Type = 0x0A // client → gateway; meta group
	TypeGoaway   Type = 0x0B // gateway → client; meta reason, retry_ms
	TypeError    Type = 0x0C // gateway → client; meta msg; the gateway closes after it

	// NumTypes bounds Type values: every known type is below it.
	NumTypes = 0x0D
)

var typeNames = [NumTypes]string{
	"INVALID", "LOGIN", "LOGIN_ACK", "PING", "PONG", "REQUEST", "RESPONSE",
	"PUSH", "PUSH_ACK", "JOIN", "LEAVE", "GOAWAY", "ERROR",
}

// Valid reports whether t is a type of protocol version 1.
func (t Type) Valid() bool { return t >= TypeLogin && t < NumTypes }

func (t Type) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("Type(0x%02x)", uint8(t))
}

// Code is a status carried in replies.
type Code uint8

// Codes (docs/protocol.md "Codes").
const (
	CodeOK                 Code = 0
	CodeBadFrame           Code = 1
	CodeUnsupportedVersion Code = 2
	CodeFrameTooLarge      Code = 3
	CodeNotLoggedIn        Code = 4
	CodeAuthFailed         Code = 5
	CodeUnknownBiz         Code = 6
	CodeBusy               Code = 7
	CodeBackendError       Code = 8
	CodeBackendTimeout     Code = 9
	CodeRateLimited        Code = 10
	CodeForbidden          Code = 11
	CodeLoginTimeout       Code = 12
	CodeIdleTimeout        Code = 13
	CodeEvicted            Code = 14
	CodeShuttingDown       Code = 15
	CodeSlowConsumer       Code = 16
	CodeOverloaded         Code = 17 // pushwire addition: GOAWAY to a connection over the instance's cap

	// NumCodes bounds Code values: every known code is below it.
	NumCodes = 18
)

var codeNames = [NumCodes]string{
	"OK", "BAD_FRAME", "UNSUPPORTED_VERSION", "FRAME_TOO_LARGE", "NOT_LOGGED_IN", "AUTH_FAILED",
	"UNKNOWN_BIZ", "BUSY", "BACKEND_ERROR", "BACKEND_TIMEOUT", "RATE_LIMITED", "FORBIDDEN",
	"LOGIN_TIMEOUT", "IDLE_TIMEOUT", "EVICTED", "SHUTTING_DOWN", "SLOW_CONSUMER", "OVERLOADED",
}

func (c Code) String() string {
	if c < NumCodes {
		return codeNames[c]
	}
	return fmt.Sprintf("Code(%d)", uint8(c))
}

// Header is the fixed 18-byte frame header, decoded.
type Header struct {
	Type    Type
	Flags   uint8
	Code    Code
	Biz     uint16
	Seq     uint32
	MetaLen uint16
	BodyLen uint32
}

// Len is the whole frame's length on the wire.
func (h Header) Len() int { return HeaderLen + int(h.MetaLen) + int(h.BodyLen) }

// Frame is one decoded frame. After Decode, Meta and Body alias the decoded bytes.
type Frame struct {
	Header
	Meta Meta
	Body []byte
}

// Error is a protocol violation detected while decoding; Code is what goes on the wire in ERROR.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return "frame: " + e.Code.String() + ": " + e.Msg }

// Decoding errors. Each is an *Error, so errors.As yields the wire code.
var (
	ErrBadMagic      = &Error{CodeBadFrame, "bad magic"}
	ErrVersion       = &Error{CodeUnsupportedVersion, "unsupported version"}
	ErrUnknownType   = &Error{CodeBadFrame, "unknown frame type"}
	ErrBadFlags      = &Error{CodeBadFrame, "unknown flag bits"}
	ErrMetaTooLarge  = &Error{CodeFrameTooLarge, "meta length over limit"}
	ErrBodyTooLarge  = &Error{CodeFrameTooLarge, "body length over limit"}
	ErrBadMeta       = &Error{CodeBadFrame, "malformed meta"}
	ErrDuplicateMeta = &Error{CodeBadFrame, "duplicate meta key"}
)

// ErrShort means the input holds no whole frame yet: read more and call again.
var ErrShort = errors.New("frame: need more bytes")

// Limits are the receiver's size limits. The zero value means MaxMetaLen and DefaultMaxBody.
type Limits struct {
	MaxBody int // largest body accepted; default DefaultMaxBody, at most MaxBodyLimit
}

func (l Limits) maxBody() uint32 {
	switch {
	case l.MaxBody <= 0:
		return DefaultMaxBody
	case l.MaxBody > MaxBodyLimit:
		return MaxBodyLimit
	}
	return uint32(l.MaxBody)
}

// MaxFrame is the longest frame these limits accept.
func (l Limits) MaxFrame() int { return HeaderLen + MaxMetaLen + int(l.maxBody()) }

// ParseHeader decodes and validates the header at the start of b. It returns ErrShort when b is
// shorter than HeaderLen, and an *Error for a malformed header or a length over the limits. It
// looks at the header bytes only.
func ParseHeader(b []byte, lim Limits) (Header, error) {
	if len(b) < HeaderLen {
		// Reject a bad prefix as early as possible: garbage need not wait for 18 bytes.
		if len(b) > 0 && b[0] != Magic0 || len(b) > 1 && b[1] != Magic1 {
			return Header{}, ErrBadMagic
		}
		if len(b) > 2 && b[2] != Version {
			return Header{}, ErrVersion
		}
		return Header{}, ErrShort
	}
	_ = b[HeaderLen-1]
	if b[0] != Magic0 || b[1] != Magic1 {
		return Header{}, ErrBadMagic
	}
	if b[2] != Version {
		return Header{}, ErrVersion
	}
	h := Header{
		Type:    Type(b[3]),
		Flags:   b[4],
		Code:    Code(b[5]),
		Biz:     binary.BigEndian.Uint16(b[6:]),
		Seq:     binary.BigEndian.Uint32(b[8:]),
		MetaLen: binary.BigEndian.Uint16(b[12:]),
		BodyLen: binary.BigEndian.Uint32(b[14:]),
	}
	if !h.Type.Valid() {
		return Header{}, ErrUnknownType
	}
	if h.Flags&^knownFlags != 0 {
		return Header{}, ErrBadFlags
	}
	if h.MetaLen > MaxMetaLen {
		return Header{}, ErrMetaTooLarge
	}
	if h.BodyLen > lim.maxBody() {
		return Header{}, ErrBodyTooLarge
	}
	return h, nil
}

// Decode decodes the first frame in b. It returns the frame, whose Meta and Body alias b, and the
// number of bytes it occupies. It returns ErrShort when b holds only part of a frame (after
// validating the header if b holds one), and an *Error for a protocol violation.
func Decode(b []byte, lim Limits) (Frame, int, error) {
	h, err := ParseHeader(b, lim)
	if err != nil {
		return Frame{}, 0, err
	}
	n := h.Len()
	if len(b) < n {
		return Frame{}, 0, ErrShort
	}
	meta := Meta(b[HeaderLen : HeaderLen+int(h.MetaLen) : HeaderLen+int(h.MetaLen)])
	if err := meta.Validate(); err != nil {
		return Frame{}, 0, err
	}
	body := b[HeaderLen+int(h.MetaLen) : n : n]
	return Frame{Header: h, Meta: meta, Body: body}, n, nil
}

// AppendHeader appends h's 18 bytes to dst. It takes MetaLen and BodyLen as given.
func AppendHeader(dst []byte, h Header) []byte {
	return append(dst, Magic0, Magic1, Version, byte(h.Type), h.Flags, byte(h.Code),
		byte(h.Biz>>8), byte(h.Biz),
		byte(h.Seq>>24), byte(h.Seq>>16), byte(h.Seq>>8), byte(h.Seq),
		byte(h.MetaLen>>8), byte(h.MetaLen),
		byte(h.BodyLen>>24), byte(h.BodyLen>>16), byte(h.BodyLen>>8), byte(h.BodyLen))
}

// Append appends the encoding of f to dst, taking the lengths from f.Meta and f.Body. It does not
// validate: callers build Meta with AppendMeta and keep within the limits (see Check).
func Append(dst []byte, f *Frame) []byte {
	h := f.Header
	h.MetaLen = uint16(len(f.Meta))
	h.BodyLen = uint32(len(f.Body))
	dst = AppendHeader(dst, h)
	dst = append(dst, f.Meta...)
	return append(dst, f.Body...)
}

// Check reports whether f can be encoded within lim: a known type, known flags, meta within
// MaxMetaLen and well formed, body within the limit.
func Check(f *Frame, lim Limits) error {
	if !f.Type.Valid() {
		return ErrUnknownType
	}
	if f.Flags&^knownFlags != 0 {
		return ErrBadFlags
	}
	if len(f.Meta) > MaxMetaLen {
		return ErrMetaTooLarge
	}
	if uint64(len(f.Body)) > uint64(lim.maxBody()) {
		return ErrBodyTooLarge
	}
	return f.Meta.Validate()
}

// Meta is the raw meta section of a frame: a sequence of entries, each a key length (1 byte,
// 1..255), the key, a value length (2 bytes, big-endian) and the value.
type Meta []byte

// AppendMeta appends one entry to m. It panics on an empty key or one over 255 bytes, or a value
// over 65535 bytes: those are programming errors, never input.
func AppendMeta(m Meta, key string, value []byte) Meta {
	if len(key) == 0 || len(key) > maxKeyLen || len(value) > maxValueLen {
		panic("frame: meta entry out of range")
	}
	m = append(m, byte(len(key)))
	m = append(m, key...)
	m = append(m, byte(len(value)>>8), byte(len(value)))
	return append(m, value...)
}

// AppendMetaString is AppendMeta with a string value.
func AppendMetaString(m Meta, key, value string) Meta {
	if len(key) == 0 || len(key) > maxKeyLen || len(value) > maxValueLen {
		panic("frame: meta entry out of range")
	}
	m = append(m, byte(len(key)))
	m = append(m, key...)
	m = append(m, byte(len(value)>>8), byte(len(value)))
	return append(m, value...)
}

// next splits the entry at the start of m. ok is false when m is malformed.
func (m Meta) next() (key, value, rest []byte, ok bool) {
	if len(m) < 1 {
		return nil, nil, nil, false
	}
	kl := int(m[0])
	if kl == 0 || len(m) < 1+kl+2 {
		return nil, nil, nil, false
	}
	key = m[1 : 1+kl]
	vl := int(binary.BigEndian.Uint16(m[1+kl:]))
	start := 1 + kl + 2
	if len(m) < start+vl {
		return nil, nil, nil, false
	}
	return key, m[start : start+vl], m[start+vl:], true
}

// Validate checks that m is a well-formed sequence of entries with unique keys. It does not
// allocate, and its cost grows as n log n in the number of entries, so a hostile 4 KiB meta of
// hundreds of tiny keys costs microseconds, not milliseconds.
func (m Meta) Validate() error {
	if len(m) > MaxMetaLen {
		return ErrMetaTooLarge
	}
	n := 0
	for rest := m; len(rest) > 0; n++ {
		key, _, r, ok := rest.next()
		if !ok {
			return ErrBadMeta
		}
		if n < smallMeta {
			// The usual meta has a handful of keys: a scan of the entries already seen is the
			// cheapest duplicate check. Past smallMeta entries, uniqueSorted checks them all.
			for seen := m[:len(m)-len(rest)]; len(seen) > 0; {
				k, _, r2, _ := seen.next()
				if string(k) == string(key) {
					return ErrDuplicateMeta
				}
				seen = r2
			}
		}
		rest = r
	}
	if n > maxMetaEntries {
		return ErrBadMeta
	}
	if n > smallMeta {
		return m.uniqueSorted()
	}
	return nil
}

// smallMeta is the number of entries up to which Validate checks keys pairwise.
const smallMeta = 16

// uniqueSorted reports ErrDuplicateMeta if two keys of the well-formed m are equal. It sorts the
// entries' offsets (at most maxMetaEntries, each below MaxMetaLen) in an array on the stack.
func (m Meta) uniqueSorted() error {
	var buf [maxMetaEntries]uint16
	offs := buf[:0]
	for off := 0; off < len(m); {
		offs = append(offs, uint16(off))
		kl := int(m[off])
		off += 1 + kl + 2 + int(binary.BigEndian.Uint16(m[off+1+kl:]))
	}
	slices.SortFunc(offs, func(a, b uint16) int { return bytes.Compare(m.keyAt(a), m.keyAt(b)) })
	for i := 1; i < len(offs); i++ {
		if bytes.Equal(m.keyAt(offs[i-1]), m.keyAt(offs[i])) {
			return ErrDuplicateMeta
		}
	}
	return nil
}

// keyAt returns the key of the entry at offset off of the well-formed m.
func (m Meta) keyAt(off uint16) []byte { return m[int(off)+1 : int(off)+1+int(m[off])] }

// Get returns the value of key. The value aliases m.
func (m Meta) Get(key string) ([]byte, bool) {
	for rest := m; len(rest) > 0; {
		k, v, r, ok := rest.next()
		if !ok {
			return nil, false
		}
		if string(k) == key {
			return v, true
		}
		rest = r
	}
	return nil, false
}

// GetString returns the value of key as a string ("" when absent). It allocates the string.
func (m Meta) GetString(key string) string {
	v, _ := m.Get(key)
	return string(v)
}

// Range calls fn for every entry in order until fn returns false. Key and value alias m.
func (m Meta) Range(fn func(key, value []byte) bool) {
	for rest := m; len(rest) > 0; {
		k, v, r, ok := rest.next()
		if !ok || !fn(k, v) {
			return
		}
		rest = r
	}
}
