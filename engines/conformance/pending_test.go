package conformance

import (
	"errors"
	"testing"
)

// The transports whose layers are not in this build yet: stacks has no entry for them, so no
// test reaches these.

var errNoTLS = errors.New("conformance: no TLS layer in this build")

func refusedQUIC(t *testing.T, _ *server, _ int, _ []byte) { t.Fatal("no quic stack in this build") }

func selfSigned(string, ...string) (string, string, error) { return "", "", errNoTLS }
