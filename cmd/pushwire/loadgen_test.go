package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Bad transport settings are refused before anything starts, naming the flag.
func TestLoadgenTransportFlags(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	required := []string{"--control", "http://127.0.0.1:1", "--gateways", "http://127.0.0.1:2", "--app", "a", "--secret", "s", "--push-key", "k"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--transport", "http"}, `--transport "http": want one of tcp, tls, ws, wss, quic`},
		{[]string{"--transport", ""}, `--transport ""`},
		{[]string{"--transport", "tls", "--ca", filepath.Join(t.TempDir(), "missing.pem")}, "--ca"},
		{[]string{"--transport", "quic", "--ca", junk}, "--ca " + junk + ": no PEM certificate"},
		{[]string{"--transport", "ws", "--ws-path", "ws"}, `--ws-path "ws"`},
	} {
		err := runLoadgen(append(append([]string{"--log-level", "error"}, required...), tc.args...))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("loadgen %q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	for _, proto := range []string{"tcp", "tls", "ws", "wss", "quic"} {
		if err := checkTransportFlags("loadgen", proto, "", "/ws"); err != nil {
			t.Errorf("--transport %s: %v", proto, err)
		}
	}
}
