package conformance

import (
	"errors"
	"testing"
)

// The transports whose layers are not in this build yet: stacks has no entry for them, so no
// test reaches these.

var errNoTLS = errors.New("conformance: no TLS layer in this build")

func wsRefusal() []byte { return nil }

func refusedQUIC(t *testing.T, _ *server, _ int, _ []byte) { t.Fatal("no quic stack in this build") }

func dialRawWS(t testing.TB, _ *server) (*client, *rawConn) {
	t.Fatal("no ws stack in this build")
	return nil, nil
}

func selfSigned(string, ...string) (string, string, error) { return "", "", errNoTLS }
