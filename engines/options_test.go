package engines

import (
	"context"
	"net"
	"strings"
	"testing"
)

// optEngine is the smallest Engine, for the registry's option handling.
type optEngine struct{ cfg Config }

func (e *optEngine) Name() string                   { return "opt-test" }
func (e *optEngine) Addr() net.Addr                 { return nil }
func (e *optEngine) Start() error                   { return nil }
func (e *optEngine) Shutdown(context.Context) error { return nil }

type nopHandler struct{}

func (nopHandler) OnOpen(Conn)                      {}
func (nopHandler) OnData(Conn, []byte) (int, error) { return 0, nil }
func (nopHandler) OnClose(Conn, error)              {}

func init() {
	Register("opt-test", func(cfg Config, _ Handler) (Engine, error) { return &optEngine{cfg: cfg}, nil },
		Option{Key: "size", Type: OptInt, Default: "1024", Min: "64", Max: "4096", Help: "bytes"},
		Option{Key: "wait", Type: OptDuration, Default: "2ms", Min: "10us", Help: "a wait"},
		Option{Key: "on", Type: OptBool, Default: "false", Help: "a switch"},
		Option{Key: "mode", Type: OptEnum, Default: "a", Values: []string{"a", "b"}, Help: "a mode"},
	)
}

func TestOptionsValidatedOnce(t *testing.T) {
	e, err := New("opt-test", Config{Options: map[string]string{"size": "2048", "mode": "b"}}, nopHandler{})
	if err != nil {
		t.Fatal(err)
	}
	got := e.(*optEngine).cfg.Options
	want := map[string]string{"size": "2048", "wait": "2ms", "on": "false", "mode": "b"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("option %s = %q, want %q (defaults filled in)", k, got[k], v)
		}
	}
	for _, tc := range []struct {
		opts map[string]string
		want string
	}{
		{map[string]string{"nope": "1"}, `engines: opt-test: unknown option "nope" (opt-test takes size, wait, on, mode)`},
		{map[string]string{"size": "x"}, `engines: opt-test: option size="x": want an integer in 64..4096`},
		{map[string]string{"size": "8192"}, `engines: opt-test: option size="8192": want an integer in 64..4096`},
		{map[string]string{"wait": "1us"}, `engines: opt-test: option wait="1us": want a duration of at least 10us`},
		{map[string]string{"wait": "soon"}, `engines: opt-test: option wait="soon": want a Go duration such as 250ms or 30s of at least 10us`},
		{map[string]string{"on": "maybe"}, `engines: opt-test: option on="maybe": want true or false`},
		{map[string]string{"mode": "c"}, `engines: opt-test: option mode="c": want one of a, b`},
	} {
		_, err := New("opt-test", Config{Options: tc.opts}, nopHandler{})
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: error %v, want %q", tc.opts, err, tc.want)
		}
		if cerr := CheckOptions("opt-test", tc.opts); cerr == nil || cerr.Error() != tc.want {
			t.Errorf("CheckOptions %v: %v", tc.opts, cerr)
		}
	}
	if _, err := New("opt-test", Config{}, nil); err == nil || !strings.Contains(err.Error(), "nil handler") {
		t.Errorf("nil handler: %v", err)
	}
	if _, err := New("no-such-engine", Config{}, nopHandler{}); err == nil {
		t.Error("unknown engine accepted")
	}
}

func TestRegisterRefusesBadDeclarations(t *testing.T) {
	for name, opts := range map[string][]Option{
		"bad-default": {{Key: "n", Type: OptInt, Default: "x"}},
		"dup-key":     {{Key: "n", Type: OptBool, Default: "true"}, {Key: "n", Type: OptBool, Default: "true"}},
		"no-type":     {{Key: "n", Default: "1"}},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Register did not panic", name)
				}
			}()
			Register(name, nil, opts...)
		}()
	}
}
