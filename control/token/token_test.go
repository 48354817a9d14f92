package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"
)

var (
	keyOld   = Key{ID: "k1", Secret: []byte("old-secret-0123456789")}
	keyNew   = Key{ID: "k2", Secret: []byte("new-secret-0123456789")}
	keyOther = Key{ID: "k1", Secret: []byte("someone-elses-secret")} // same ID, other secret

	// t0 is the fixed "now" of the tests and of FuzzVerify.
	t0 = time.Unix(1767225600, 0) // 2026-01-01T00:00:00Z
)

func claimsAt(iat time.Time, ttl time.Duration) Claims {
	return Claims{App: "demo", Device: "dev-1", User: "alice", IssuedAt: iat, ExpiresAt: iat.Add(ttl)}
}

func mustSigner(t testing.TB, k Key) *Signer {
	t.Helper()
	s, err := NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func mustSign(t testing.TB, s *Signer, c Claims) string {
	t.Helper()
	tok, err := s.Sign(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signRaw signs an arbitrary payload with k, so tests can reach the checks behind the MAC.
func signRaw(k Key, payload []byte) string {
	signed := prefix + k.ID + "." + b64.EncodeToString(payload)
	mac := hmac.New(sha256.New, k.Secret)
	mac.Write([]byte(signed))
	return signed + "." + b64.EncodeToString(mac.Sum(nil))
}

func rawPayload(iat, exp int64, fields ...string) []byte {
	p := binary.BigEndian.AppendUint64(nil, uint64(iat))
	p = binary.BigEndian.AppendUint64(p, uint64(exp))
	for _, f := range fields {
		p = append(p, byte(len(f)))
		p = append(p, f...)
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	s := mustSigner(t, keyOld)
	v, err := NewVerifier(keyOld)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []Claims{
		claimsAt(t0, time.Hour),
		{App: "a", Device: "d", IssuedAt: t0, ExpiresAt: t0.Add(time.Second)}, // anonymous user
		{App: strings.Repeat("a", 255), Device: strings.Repeat("d", 200), User: "ü\x00\xff",
			IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(time.Hour)},
	} {
		tok := mustSign(t, s, c)
		if len(tok) > MaxLen {
			t.Fatalf("token is %d bytes", len(tok))
		}
		got, err := v.Verify(tok, t0)
		if err != nil {
			t.Fatalf("Verify(%q): %v", tok, err)
		}
		if got.App != c.App || got.Device != c.Device || got.User != c.User ||
			!got.IssuedAt.Equal(c.IssuedAt) || !got.ExpiresAt.Equal(c.ExpiresAt) {
			t.Fatalf("claims: got %+v, want %+v", got, c)
		}
		if again := mustSign(t, s, got); again != tok {
			t.Fatalf("re-signing verified claims: got %q, want %q", again, tok)
		}
	}
}

// TestGolden pins the wire format: a change here breaks every token already issued and every
// gateway running the previous version. The value was cross-checked with an independent
// implementation (Python hmac/struct/base64).
func TestGolden(t *testing.T) {
	const want = "pw1.k1.AAAAAGlVuQAAAAAAaVcKgARkZW1vBWRldi0xBWFsaWNl.-ZzphQcUAutXFXv2mNFSVhEEbxhniAvs4bc9wAF5QFc"
	if got := mustSign(t, mustSigner(t, keyOld), claimsAt(t0, 24*time.Hour)); got != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestSignTruncatesToSeconds(t *testing.T) {
	s := mustSigner(t, keyOld)
	v, _ := NewVerifier(keyOld)
	c := claimsAt(t0.Add(700*time.Millisecond), time.Hour)
	got, err := v.Verify(mustSign(t, s, c), t0.Add(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !got.IssuedAt.Equal(t0) || !got.ExpiresAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("times not truncated to the second: %+v", got)
	}
}

func TestVerify(t *testing.T) {
	s := mustSigner(t, keyOld)
	v, err := NewVerifier(keyOld)
	if err != nil {
		t.Fatal(err)
	}
	good := mustSign(t, s, claimsAt(t0, time.Hour))
	parts := strings.Split(good, ".")
	otherApp := mustSign(t, s, Claims{App: "evil", Device: "dev-1", User: "alice", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)})
	otherParts := strings.Split(otherApp, ".")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}

	tests := []struct {
		name string
		tok  string
		now  time.Time
		want error
	}{
		{"valid", good, t0, nil},
		{"valid just before expiry", good, t0.Add(time.Hour - time.Nanosecond), nil},
		{"expired at expiry", good, t0.Add(time.Hour), ErrExpired},
		{"expired", good, t0.Add(48 * time.Hour), ErrExpired},
		{"issued within skew", good, t0.Add(-MaxSkew), nil},
		{"issued in the future", good, t0.Add(-MaxSkew - time.Second), ErrNotYetValid},
		{"forged signature", parts[0] + "." + parts[1] + "." + parts[2] + "." + flip(parts[3], 5), t0, ErrBadSignature},
		{"signature of another token", parts[0] + "." + parts[1] + "." + parts[2] + "." + otherParts[3], t0, ErrBadSignature},
		{"wrong app (payload swapped)", parts[0] + "." + parts[1] + "." + otherParts[2] + "." + parts[3], t0, ErrBadSignature},
		{"tampered payload", parts[0] + "." + parts[1] + "." + flip(parts[2], 20) + "." + parts[3], t0, ErrBadSignature},
		{"other key same id", mustSign(t, mustSigner(t, keyOther), claimsAt(t0, time.Hour)), t0, ErrBadSignature},
		{"unknown kid", mustSign(t, mustSigner(t, keyNew), claimsAt(t0, time.Hour)), t0, ErrUnknownKey},
		{"kid swapped", parts[0] + ".k2." + parts[2] + "." + parts[3], t0, ErrUnknownKey},
		{"truncated mac", good[:len(good)-1], t0, ErrMalformed},
		{"truncated to payload", strings.Join(parts[:3], "."), t0, ErrMalformed},
		{"truncated mid payload", good[:20], t0, ErrMalformed},
		{"mac padded", good + "=", t0, ErrMalformed},
		{"mac non-canonical", good[:len(good)-1] + "F", t0, ErrMalformed},
		{"extra field", good + ".x", t0, ErrMalformed},
		{"newline in payload", good[:12] + "\n" + good[12:], t0, ErrMalformed},
		{"empty", "", t0, ErrMalformed},
		{"prefix only", "pw1.", t0, ErrMalformed},
		{"wrong version", "pw2" + good[3:], t0, ErrMalformed},
		{"garbage", "\x00\xff garbage \u2603", t0, ErrMalformed},
		{"jwt", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln", t0, ErrMalformed},
		{"empty kid", "pw1.." + parts[2] + "." + parts[3], t0, ErrMalformed},
		{"long kid", "pw1." + strings.Repeat("k", 33) + "." + parts[2] + "." + parts[3], t0, ErrMalformed},
		{"too long", "pw1.k1." + strings.Repeat("A", MaxLen) + "." + parts[3], t0, ErrMalformed},
		{"signed trailing bytes", signRaw(keyOld, append(rawPayload(t0.Unix(), t0.Unix()+60, "a", "d", "u"), 0)), t0, ErrMalformed},
		{"signed short payload", signRaw(keyOld, rawPayload(t0.Unix(), t0.Unix()+60, "a", "d")), t0, ErrMalformed},
		{"signed length past end", signRaw(keyOld, append(rawPayload(t0.Unix(), t0.Unix()+60, "a", "d"), 9, 'u')), t0, ErrMalformed},
		{"signed empty app", signRaw(keyOld, rawPayload(t0.Unix(), t0.Unix()+60, "", "d", "u")), t0, ErrMalformed},
		{"signed empty device", signRaw(keyOld, rawPayload(t0.Unix(), t0.Unix()+60, "a", "", "u")), t0, ErrMalformed},
		{"signed exp before iat", signRaw(keyOld, rawPayload(t0.Unix(), t0.Unix()-1, "a", "d", "u")), t0, ErrMalformed},
		{"signed raw valid", signRaw(keyOld, rawPayload(t0.Unix(), t0.Unix()+60, "a", "d", "")), t0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(tt.tok, tt.now)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("Verify: got %v, want %v", err, tt.want)
			}
			if err != nil && c != (Claims{}) {
				t.Fatalf("claims returned with an error: %+v", c)
			}
		})
	}

	// "wrong app": a valid token carries exactly the app it was issued for.
	c, err := v.Verify(otherApp, t0)
	if err != nil || c.App != "evil" {
		t.Fatalf("Verify(otherApp) = %+v, %v", c, err)
	}
}

func TestKeyRotation(t *testing.T) {
	oldTok := mustSign(t, mustSigner(t, keyOld), claimsAt(t0, time.Hour))

	// During the rotation the new key signs (it is listed first in the config) and both verify.
	signer := mustSigner(t, keyNew)
	newTok := mustSign(t, signer, claimsAt(t0, time.Hour))
	if !strings.HasPrefix(newTok, "pw1.k2.") {
		t.Fatalf("new token not signed with the new key: %s", newTok)
	}
	both, err := NewVerifier(keyNew, keyOld)
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{oldTok, newTok} {
		if _, err := both.Verify(tok, t0); err != nil {
			t.Errorf("Verify(%s): %v", tok, err)
		}
	}

	// After the rotation the old key is dropped: its tokens no longer verify.
	onlyNew, err := NewVerifier(keyNew)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := onlyNew.Verify(newTok, t0); err != nil {
		t.Errorf("new token: %v", err)
	}
	if _, err := onlyNew.Verify(oldTok, t0); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("old token after rotation: got %v, want ErrUnknownKey", err)
	}
}

func TestKeys(t *testing.T) {
	secret := []byte("0123456789abcdef")
	tests := []struct {
		name string
		keys []Key
		ok   bool
	}{
		{"one", []Key{{ID: "k1", Secret: secret}}, true},
		{"two", []Key{{ID: "k1", Secret: secret}, {ID: "K_2-x", Secret: secret}}, true},
		{"longest id", []Key{{ID: strings.Repeat("k", 32), Secret: secret}}, true},
		{"none", nil, false},
		{"empty id", []Key{{ID: "", Secret: secret}}, false},
		{"long id", []Key{{ID: strings.Repeat("k", 33), Secret: secret}}, false},
		{"dot in id", []Key{{ID: "k.1", Secret: secret}}, false},
		{"space in id", []Key{{ID: "k 1", Secret: secret}}, false},
		{"short secret", []Key{{ID: "k1", Secret: secret[:15]}}, false},
		{"duplicate id", []Key{{ID: "k1", Secret: secret}, {ID: "k1", Secret: []byte("fedcba9876543210")}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewVerifier(tt.keys...)
			if (err == nil) != tt.ok {
				t.Fatalf("NewVerifier: %v", err)
			}
			if err != nil && !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("error %v does not wrap ErrInvalidKey", err)
			}
			if len(tt.keys) == 1 {
				if _, err := NewSigner(tt.keys[0]); (err == nil) != tt.ok {
					t.Fatalf("NewSigner: %v", err)
				}
			}
		})
	}
}

func TestSecretCopied(t *testing.T) {
	k := Key{ID: "k1", Secret: []byte("0123456789abcdef")}
	s := mustSigner(t, k)
	v, _ := NewVerifier(k)
	k.Secret[0] = 'X'
	if _, err := v.Verify(mustSign(t, s, claimsAt(t0, time.Hour)), t0); err != nil {
		t.Fatalf("secret not copied: %v", err)
	}
}

func TestSignInvalid(t *testing.T) {
	s := mustSigner(t, keyOld)
	long := strings.Repeat("x", 256)
	tests := []struct {
		name string
		c    Claims
	}{
		{"no app", Claims{Device: "d", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
		{"no device", Claims{App: "a", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
		{"long app", Claims{App: long, Device: "d", IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
		{"long device", Claims{App: "a", Device: long, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
		{"long user", Claims{App: "a", Device: "d", User: long, IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
		{"zero issued", Claims{App: "a", Device: "d", ExpiresAt: t0}},
		{"no lifetime", Claims{App: "a", Device: "d", IssuedAt: t0, ExpiresAt: t0.Add(999 * time.Millisecond)}},
		{"too long overall", Claims{App: long[:255], Device: long[:255], User: long[:255], IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Sign(tt.c); !errors.Is(err, ErrInvalidClaims) {
				t.Fatalf("Sign: got %v, want ErrInvalidClaims", err)
			}
		})
	}
}

func TestZeroValues(t *testing.T) {
	var s Signer
	if _, err := s.Sign(claimsAt(t0, time.Hour)); !errors.Is(err, ErrInvalidKey) {
		t.Fatalf("zero Signer: %v", err)
	}
	good := mustSign(t, mustSigner(t, keyOld), claimsAt(t0, time.Hour))
	var v Verifier
	if _, err := v.Verify(good, t0); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("zero Verifier: %v", err)
	}
	var nilV *Verifier
	if _, err := nilV.Verify(good, t0); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("nil Verifier: %v", err)
	}
}

func TestVerifyConcurrent(t *testing.T) {
	s := mustSigner(t, keyOld)
	v, _ := NewVerifier(keyOld, keyNew)
	done := make(chan error)
	for g := range 8 {
		go func() {
			var err error
			for i := range 200 {
				c := Claims{App: "demo", Device: strings.Repeat("d", g+i%7+1), IssuedAt: t0, ExpiresAt: t0.Add(time.Hour)}
				got, verr := v.Verify(mustSign(t, s, c), t0)
				if verr != nil || got.Device != c.Device {
					err = errors.Join(verr, errors.New("device mismatch"))
					break
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func BenchmarkVerify(b *testing.B) {
	tok := mustSign(b, mustSigner(b, keyOld), claimsAt(t0, time.Hour))
	v, err := NewVerifier(keyNew, keyOld)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok, t0); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	s := mustSigner(b, keyOld)
	c := claimsAt(t0, time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Sign(c); err != nil {
			b.Fatal(err)
		}
	}
}
