package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// fuzzSeeds are tokens for FuzzVerify beyond the committed corpus in testdata/fuzz/FuzzVerify:
// real tokens (valid, expired, from the future, other keys) so the fuzzer mutates real structure.
func fuzzSeeds(t testing.TB) []string {
	s := mustSigner(t, keyOld)
	good := mustSign(t, s, claimsAt(t0, time.Hour))
	return []string{
		good,
		mustSign(t, s, Claims{App: "a", Device: "d", IssuedAt: t0.Add(-time.Hour), ExpiresAt: t0.Add(time.Minute)}),
		mustSign(t, s, claimsAt(t0.Add(-48*time.Hour), time.Hour)), // expired
		mustSign(t, s, claimsAt(t0.Add(time.Hour), time.Hour)),     // from the future
		mustSign(t, mustSigner(t, keyNew), claimsAt(t0, time.Hour)),
		mustSign(t, mustSigner(t, keyOther), claimsAt(t0, time.Hour)),
		signRaw(keyOld, append(rawPayload(t0.Unix(), t0.Unix()+60, "a", "d", "u"), 0)),
		good[:len(good)-10],
		strings.Replace(good, ".", "..", 1),
		"",
		"pw1.",
		"pw1.k1..",
		"pw1.k1.AAAA.AAAA",
		"\xff\xfe\x00",
	}
}

// FuzzVerify checks that Verify never panics, returns only its documented errors, and accepts
// only canonical tokens: whatever verifies re-signs to the very same string.
func FuzzVerify(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	signers := map[string]*Signer{"k1": mustSigner(f, keyOld), "k2": mustSigner(f, keyNew)}
	v, err := NewVerifier(keyOld, keyNew)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.Verify(tok, t0)
		if err != nil {
			if c != (Claims{}) {
				t.Fatalf("claims with error %v: %+v", err, c)
			}
			for _, known := range []error{ErrMalformed, ErrUnknownKey, ErrBadSignature, ErrExpired, ErrNotYetValid} {
				if errors.Is(err, known) {
					return
				}
			}
			t.Fatalf("undocumented error %v", err)
		}
		kid := tok[len(prefix) : len(prefix)+strings.IndexByte(tok[len(prefix):], '.')]
		again, err := signers[kid].Sign(c)
		if err != nil {
			t.Fatalf("re-sign %+v: %v", c, err)
		}
		if again != tok {
			t.Fatalf("non-canonical token verified:\n got %q\nwant %q", tok, again)
		}
	})
}
