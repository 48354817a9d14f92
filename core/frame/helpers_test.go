package frame_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/pushwire/pushwire/core/frame"
)

// kv is one meta entry, in order.
type kv struct{ k, v string }

// mk builds a frame whose meta holds the entries in order.
func mk(t frame.Type, flags uint8, code frame.Code, biz uint16, seq uint32, meta []kv, body []byte) frame.Frame {
	var m frame.Meta
	for _, e := range meta {
		m = frame.AppendMetaString(m, e.k, e.v)
	}
	return frame.Frame{
		Header: frame.Header{Type: t, Flags: flags, Code: code, Biz: biz, Seq: seq},
		Meta:   m,
		Body:   body,
	}
}

// sample is a realistic frame of one type.
type sample struct {
	name string
	f    frame.Frame
	meta []kv
}

// samples returns one realistic frame of every type of protocol version 1, some types more than
// once.
func samples() []sample {
	s := func(name string, t frame.Type, flags uint8, code frame.Code, biz uint16, seq uint32, meta []kv, body []byte) sample {
		return sample{name, mk(t, flags, code, biz, seq, meta, body), meta}
	}
	return []sample{
		s("login", frame.TypeLogin, 0, 0, 0, 1, []kv{
			{"token", "eyJhcHAiOiJkZW1vIn0.c2ln"}, {"device", "dev-42"}, {"app", "demo"},
			{"platform", "native"}, {"sdk", "go/1.0.0"}, {"net", "wifi"},
		}, nil),
		s("login_ack", frame.TypeLoginAck, 0, frame.CodeOK, 0, 1, []kv{
			{"conn", "c-1234567890"}, {"hb", "30"}, {"node", "gw-a"},
		}, nil),
		s("login_ack_failed", frame.TypeLoginAck, 0, frame.CodeAuthFailed, 0, 1, []kv{{"msg", "token expired"}}, nil),
		s("ping", frame.TypePing, 0, 0, 0, 2, nil, nil),
		s("pong", frame.TypePong, 0, 0, 0, 2, nil, nil),
		s("request", frame.TypeRequest, 0, 0, 7, 3, []kv{{"trace", "abc"}}, []byte(`{"op":"get","id":1}`)),
		s("request_no_meta", frame.TypeRequest, 0, 0, 0xFFFF, 0xFFFFFFFF, nil, []byte{0, 1, 2, 0xFF}),
		s("response", frame.TypeResponse, 0, frame.CodeOK, 7, 3, nil, []byte(`{"ok":true}`)),
		s("response_error", frame.TypeResponse, 0, frame.CodeBackendTimeout, 7, 3, []kv{{"msg", "timeout"}}, nil),
		s("push", frame.TypePush, 0, 0, 9, 100, []kv{{"id", "m-1"}}, []byte("hello")),
		s("push_ack_flag", frame.TypePush, frame.FlagAck, 0, 9, 101, []kv{{"id", "m-2"}, {"group", "room-1"}}, []byte("hello group")),
		s("push_ack", frame.TypePushAck, 0, 0, 9, 101, []kv{{"id", "m-2"}}, nil),
		s("join", frame.TypeJoin, 0, 0, 9, 4, []kv{{"group", "room-1"}}, nil),
		s("leave", frame.TypeLeave, 0, 0, 9, 5, []kv{{"group", "room-1"}}, nil),
		s("goaway", frame.TypeGoaway, 0, frame.CodeShuttingDown, 0, 0, []kv{{"reason", "drain"}, {"retry_ms", "5000"}}, nil),
		s("error", frame.TypeError, 0, frame.CodeBadFrame, 0, 0, []kv{{"msg", "bad magic"}}, nil),
		s("empty_meta_value", frame.TypeRequest, 0, 0, 1, 6, []kv{{"k", ""}}, []byte{}),
	}
}

// encode returns the wire bytes of f.
func encode(f frame.Frame) []byte { return frame.Append(nil, &f) }

// entries lists the entries of m in order.
func entries(m frame.Meta) []kv {
	var out []kv
	m.Range(func(k, v []byte) bool {
		out = append(out, kv{string(k), string(v)})
		return true
	})
	return out
}

// header returns the 18 header bytes of h.
func header(h frame.Header) []byte { return frame.AppendHeader(nil, h) }

// wantCode fails t unless err is an *frame.Error with code c.
func wantCode(t testing.TB, err error, c frame.Code) {
	t.Helper()
	var fe *frame.Error
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v (%T), want *frame.Error with code %v", err, err, c)
	}
	if fe.Code != c {
		t.Fatalf("err = %v: code %v, want %v", err, fe.Code, c)
	}
}

// sameFrame reports how got differs from want ("" when equal). Lengths in the header are compared
// with want's meta and body.
func sameFrame(got, want frame.Frame) string {
	wh := want.Header
	wh.MetaLen = uint16(len(want.Meta))
	wh.BodyLen = uint32(len(want.Body))
	if got.Header != wh {
		return fmt.Sprintf("header %+v, want %+v", got.Header, wh)
	}
	if !bytes.Equal(got.Meta, want.Meta) {
		return fmt.Sprintf("meta %q, want %q", got.Meta, want.Meta)
	}
	if !bytes.Equal(got.Body, want.Body) {
		return fmt.Sprintf("body %q, want %q", got.Body, want.Body)
	}
	return ""
}
