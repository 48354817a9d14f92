// Package token issues and verifies pushwire connection tokens.
//
// The control layer signs a token for every successful connect; every gateway verifies it on
// LOGIN without calling the control layer, using the same keys. A token is four dot-separated
// ASCII fields:
//
//	pw1.<kid>.<payload>.<mac>
//
//	pw1      format version; a new layout gets a new prefix
//	kid      the signing key's ID, 1..32 of [A-Za-z0-9_-] (key rotation: verifiers hold several)
//	payload  base64url without padding (strict) of the binary claims below
//	mac      base64url without padding (strict) of HMAC-SHA256(key secret, "pw1.<kid>.<payload>"),
//	         always 43 characters
//
// The claims are a fixed binary layout, big-endian:
//
//	offset size       field
//	0      8          issued at, unix seconds (int64)
//	8      8          expires at, unix seconds (int64)
//	16     1          app length A (1..255)
//	17     A          app
//	17+A   1          device length D (1..255)
//	18+A   D          device
//	18+A+D 1          user length U (0..255)
//	19+A+D U          user
//
// Nothing may follow the user. The encoding is canonical: a given set of claims has exactly one
// token per key, so re-signing verified claims reproduces the token byte for byte.
//
// Verify bounds the token to MaxLen before looking at it, checks the MAC (hmac.Equal) before
// decoding the payload, and never panics on any input.
package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"
)

// Limits and tolerances.
const (
	// MaxLen is the longest token Verify looks at and Sign produces, in bytes.
	MaxLen = 1024
	// MaxSkew is how far in the future a token's IssuedAt may lie (clock differences between
	// the control layer and a gateway) before Verify rejects it.
	MaxSkew = time.Minute
	// MinSecretLen is the shortest accepted key secret, in bytes.
	MinSecretLen = 16
	// MaxKeyIDLen is the longest key ID.
	MaxKeyIDLen = 32
	// MaxFieldLen is the longest App, Device or User a token can carry, in bytes.
	MaxFieldLen = 255
)

const (
	prefix     = "pw1."
	macLen     = sha256.Size                                        // 32
	macB64Len  = (macLen*8 + 5) / 6                                 // 43
	fixedLen   = 8 + 8 + 1 + 1 + 1                                  // timestamps and three lengths
	maxPayload = (MaxLen - len(prefix) - 1 - 1 - macB64Len) * 3 / 4 // decoded payload upper bound
)

// Errors returned by Verify (ErrMalformed, ErrUnknownKey, ErrBadSignature, ErrExpired,
// ErrNotYetValid), by NewSigner and NewVerifier (ErrInvalidKey) and by Sign (ErrInvalidClaims).
var (
	ErrMalformed     = errors.New("token: malformed")
	ErrUnknownKey    = errors.New("token: unknown key")
	ErrBadSignature  = errors.New("token: bad signature")
	ErrExpired       = errors.New("token: expired")
	ErrNotYetValid   = errors.New("token: issued in the future")
	ErrInvalidKey    = errors.New("token: invalid key")
	ErrInvalidClaims = errors.New("token: invalid claims")
)

// b64 is the strict (canonical: unused trailing bits must be zero) unpadded base64url encoding.
var b64 = base64.RawURLEncoding.Strict()

// Key is a signing key. Secret must be at least MinSecretLen bytes; ID names the key inside the
// token so verifiers can hold several keys during a rotation.
type Key struct {
	ID     string // 1..MaxKeyIDLen characters of [A-Za-z0-9_-]
	Secret []byte // at least MinSecretLen bytes
}

// Validate reports whether k is usable, wrapping ErrInvalidKey.
func (k Key) Validate() error {
	if len(k.ID) == 0 || len(k.ID) > MaxKeyIDLen {
		return fmt.Errorf("key id %q: want 1..%d characters: %w", k.ID, MaxKeyIDLen, ErrInvalidKey)
	}
	for i := 0; i < len(k.ID); i++ {
		if !isB64URL(k.ID[i]) {
			return fmt.Errorf("key id %q: only A-Z a-z 0-9 _ - allowed: %w", k.ID, ErrInvalidKey)
		}
	}
	if len(k.Secret) < MinSecretLen {
		return fmt.Errorf("key %q: secret is %d bytes, want at least %d: %w",
			k.ID, len(k.Secret), MinSecretLen, ErrInvalidKey)
	}
	return nil
}

// Claims is what a token asserts. Times have unix-second precision: Sign truncates them and
// Verify returns them in UTC.
type Claims struct {
	App       string    // required, at most MaxFieldLen bytes
	Device    string    // required, at most MaxFieldLen bytes
	User      string    // optional (anonymous device), at most MaxFieldLen bytes
	IssuedAt  time.Time // required
	ExpiresAt time.Time // required, after IssuedAt
}

// Signer issues tokens with one key. It is safe for concurrent use.
type Signer struct {
	kid    string
	secret []byte
}

// NewSigner returns a Signer for k. The error wraps ErrInvalidKey.
func NewSigner(k Key) (*Signer, error) {
	if err := k.Validate(); err != nil {
		return nil, err
	}
	return &Signer{kid: k.ID, secret: append([]byte(nil), k.Secret...)}, nil
}

// KeyID is the ID of the key s signs with.
func (s *Signer) KeyID() string { return s.kid }

// Sign returns the token for c. The error wraps ErrInvalidClaims (a missing or over-long field,
// a zero IssuedAt, ExpiresAt not after IssuedAt at second precision, a token over MaxLen) or
// ErrInvalidKey for a zero Signer.
func (s *Signer) Sign(c Claims) (string, error) {
	if s == nil || len(s.secret) == 0 {
		return "", fmt.Errorf("sign: zero Signer: %w", ErrInvalidKey)
	}
	switch {
	case c.App == "":
		return "", fmt.Errorf("app: empty: %w", ErrInvalidClaims)
	case c.Device == "":
		return "", fmt.Errorf("device: empty: %w", ErrInvalidClaims)
	case len(c.App) > MaxFieldLen:
		return "", fmt.Errorf("app: %d bytes, at most %d: %w", len(c.App), MaxFieldLen, ErrInvalidClaims)
	case len(c.Device) > MaxFieldLen:
		return "", fmt.Errorf("device: %d bytes, at most %d: %w", len(c.Device), MaxFieldLen, ErrInvalidClaims)
	case len(c.User) > MaxFieldLen:
		return "", fmt.Errorf("user: %d bytes, at most %d: %w", len(c.User), MaxFieldLen, ErrInvalidClaims)
	case c.IssuedAt.IsZero():
		return "", fmt.Errorf("issued at: zero: %w", ErrInvalidClaims)
	case c.ExpiresAt.Unix() <= c.IssuedAt.Unix():
		return "", fmt.Errorf("expires at %d not after issued at %d: %w",
			c.ExpiresAt.Unix(), c.IssuedAt.Unix(), ErrInvalidClaims)
	}

	payload := make([]byte, 0, fixedLen+len(c.App)+len(c.Device)+len(c.User))
	payload = binary.BigEndian.AppendUint64(payload, uint64(c.IssuedAt.Unix()))
	payload = binary.BigEndian.AppendUint64(payload, uint64(c.ExpiresAt.Unix()))
	for _, f := range [...]string{c.App, c.Device, c.User} {
		payload = append(payload, byte(len(f)))
		payload = append(payload, f...)
	}

	n := len(prefix) + len(s.kid) + 1 + b64.EncodedLen(len(payload)) + 1 + macB64Len
	if n > MaxLen {
		return "", fmt.Errorf("token would be %d bytes, at most %d: %w", n, MaxLen, ErrInvalidClaims)
	}
	tok := make([]byte, 0, n)
	tok = append(tok, prefix...)
	tok = append(tok, s.kid...)
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, payload)
	mac := hmac.New(sha256.New, s.secret)
	mac.Write(tok)
	var sum [macLen]byte
	tok = append(tok, '.')
	tok = b64.AppendEncode(tok, mac.Sum(sum[:0]))
	return string(tok), nil
}

// Verifier checks tokens against a set of keys, chosen by the token's key ID. It is safe for
// concurrent use.
type Verifier struct {
	keys map[string]*verifyKey
}

type verifyKey struct {
	scratch sync.Pool // *scratch
}

// scratch is the per-call working memory of Verify, pooled per key so a verify does not
// allocate beyond the claims' strings.
type scratch struct {
	mac     hash.Hash
	tok     [MaxLen]byte
	sum     [macLen]byte
	given   [macLen]byte
	payload [maxPayload]byte
}

// NewVerifier returns a Verifier accepting tokens signed with any of keys. Key IDs must be
// unique. The error wraps ErrInvalidKey.
func NewVerifier(keys ...Key) (*Verifier, error) {
	if len(keys) == 0 {
		return nil, fmt.Errorf("no keys: %w", ErrInvalidKey)
	}
	v := &Verifier{keys: make(map[string]*verifyKey, len(keys))}
	for _, k := range keys {
		if err := k.Validate(); err != nil {
			return nil, err
		}
		if _, dup := v.keys[k.ID]; dup {
			return nil, fmt.Errorf("key id %q: duplicate: %w", k.ID, ErrInvalidKey)
		}
		secret := append([]byte(nil), k.Secret...)
		v.keys[k.ID] = &verifyKey{scratch: sync.Pool{New: func() any {
			return &scratch{mac: hmac.New(sha256.New, secret)}
		}}}
	}
	return v, nil
}

// Verify checks tok and returns its claims. The error is ErrMalformed, ErrUnknownKey,
// ErrBadSignature, ErrExpired (ExpiresAt <= now) or ErrNotYetValid (IssuedAt more than MaxSkew
// after now). Claims are only returned with a nil error.
func (v *Verifier) Verify(tok string, now time.Time) (Claims, error) {
	if len(tok) > MaxLen || len(tok) < len(prefix) || tok[:len(prefix)] != prefix {
		return Claims{}, ErrMalformed
	}
	// Split "pw1.<kid>.<payload>.<mac>" and check every character before any decoding:
	// the base64 decoder alone would skip '\r' and '\n'.
	kidEnd, payEnd := -1, -1
	for i := len(prefix); i < len(tok); i++ {
		c := tok[i]
		if c == '.' {
			switch {
			case kidEnd < 0:
				kidEnd = i
			case payEnd < 0:
				payEnd = i
			default:
				return Claims{}, ErrMalformed
			}
			continue
		}
		if !isB64URL(c) {
			return Claims{}, ErrMalformed
		}
	}
	if payEnd < 0 {
		return Claims{}, ErrMalformed
	}
	kid := tok[len(prefix):kidEnd]
	payLen := payEnd - kidEnd - 1
	if len(kid) == 0 || len(kid) > MaxKeyIDLen || payLen < b64.EncodedLen(fixedLen+2) ||
		len(tok)-payEnd-1 != macB64Len {
		return Claims{}, ErrMalformed
	}
	if v == nil || v.keys == nil {
		return Claims{}, ErrUnknownKey
	}
	key := v.keys[kid]
	if key == nil {
		return Claims{}, ErrUnknownKey
	}

	sc := key.scratch.Get().(*scratch)
	defer key.scratch.Put(sc)
	b := sc.tok[:copy(sc.tok[:], tok)]

	// MAC first: nothing of the payload is decoded before the signature holds.
	n, err := b64.Decode(sc.given[:], b[payEnd+1:])
	if err != nil || n != macLen {
		return Claims{}, ErrMalformed
	}
	sc.mac.Reset()
	sc.mac.Write(b[:payEnd])
	if !hmac.Equal(sc.mac.Sum(sc.sum[:0]), sc.given[:]) {
		return Claims{}, ErrBadSignature
	}

	if b64.DecodedLen(payLen) > len(sc.payload) {
		return Claims{}, ErrMalformed
	}
	n, err = b64.Decode(sc.payload[:], b[kidEnd+1:payEnd])
	if err != nil {
		return Claims{}, ErrMalformed
	}
	c, ok := decodeClaims(sc.payload[:n])
	if !ok {
		return Claims{}, ErrMalformed
	}
	if !now.Before(c.ExpiresAt) {
		return Claims{}, ErrExpired
	}
	if c.IssuedAt.After(now.Add(MaxSkew)) {
		return Claims{}, ErrNotYetValid
	}
	return c, nil
}

// decodeClaims parses the binary claims layout (see the package comment). It allocates one
// string holding app, device and user.
func decodeClaims(p []byte) (Claims, bool) {
	if len(p) < fixedLen {
		return Claims{}, false
	}
	iat := int64(binary.BigEndian.Uint64(p[0:8]))
	exp := int64(binary.BigEndian.Uint64(p[8:16]))
	rest := p[16:]
	var off [3][2]int // start, end of app, device, user within rest
	i := 0
	for f := range off {
		if i >= len(rest) {
			return Claims{}, false
		}
		l := int(rest[i])
		i++
		if l > len(rest)-i {
			return Claims{}, false
		}
		off[f] = [2]int{i, i + l}
		i += l
	}
	if i != len(rest) || off[0][0] == off[0][1] || off[1][0] == off[1][1] || exp <= iat {
		return Claims{}, false
	}
	s := string(rest)
	return Claims{
		App:       s[off[0][0]:off[0][1]],
		Device:    s[off[1][0]:off[1][1]],
		User:      s[off[2][0]:off[2][1]],
		IssuedAt:  time.Unix(iat, 0).UTC(),
		ExpiresAt: time.Unix(exp, 0).UTC(),
	}, true
}

func isB64URL(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_'
}
