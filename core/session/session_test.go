package session

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/core/frame"
)

// TestCheckEveryPair walks every state × frame type pair against the protocol's rules, written
// out independently of the table: only LOGIN before login; REQUEST, PING, PUSH_ACK, JOIN, LEAVE
// when active; PING and PUSH_ACK while draining; NOT_LOGGED_IN for refusals before login and
// BAD_FRAME after.
func TestCheckEveryPair(t *testing.T) {
	allowed := map[State][]frame.Type{
		StateConnected:      {frame.TypeLogin},
		StateAuthenticating: {},
		StateActive:         {frame.TypeRequest, frame.TypePing, frame.TypePushAck, frame.TypeJoin, frame.TypeLeave},
		StateDraining:       {frame.TypePing, frame.TypePushAck},
		StateClosed:         {},
	}
	refusal := map[State]frame.Code{
		StateConnected:      frame.CodeNotLoggedIn,
		StateAuthenticating: frame.CodeNotLoggedIn,
		StateActive:         frame.CodeBadFrame,
		StateDraining:       frame.CodeBadFrame,
		StateClosed:         frame.CodeBadFrame,
	}
	pairs := 0
	for s := State(0); s < NumStates; s++ {
		for i := range 256 {
			ty := frame.Type(i)
			want := refusal[s]
			for _, a := range allowed[s] {
				if a == ty {
					want = frame.CodeOK
				}
			}
			if ty >= frame.NumTypes {
				want = frame.CodeBadFrame
			}
			if got := Check(s, ty); got != want {
				t.Errorf("Check(%v, %v) = %v, want %v", s, ty, got, want)
			}
			pairs++
		}
	}
	if pairs != NumStates*256 {
		t.Fatalf("checked %d pairs", pairs)
	}
	if got := Check(State(99), frame.TypePing); got != frame.CodeBadFrame {
		t.Errorf("unknown state: %v", got)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[State]string{
		StateConnected: "CONNECTED", StateAuthenticating: "AUTHENTICATING", StateActive: "ACTIVE",
		StateDraining: "DRAINING", StateClosed: "CLOSED", State(7): "State(7)",
	} {
		if s.String() != want {
			t.Errorf("%d: %q want %q", s, s.String(), want)
		}
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNextEveryPair walks every state × event pair against the protocol's moves, written out
// independently of the table: LOGIN starts authentication, the token's verdict ends it, GOAWAY
// drains an active session, and every state but CLOSED may close.
func TestNextEveryPair(t *testing.T) {
	legal := map[[2]uint8]State{
		{uint8(StateConnected), uint8(EventLogin)}:         StateAuthenticating,
		{uint8(StateConnected), uint8(EventClose)}:         StateClosed,
		{uint8(StateAuthenticating), uint8(EventTokenOK)}:  StateActive,
		{uint8(StateAuthenticating), uint8(EventTokenBad)}: StateClosed,
		{uint8(StateAuthenticating), uint8(EventClose)}:    StateClosed,
		{uint8(StateActive), uint8(EventGoaway)}:           StateDraining,
		{uint8(StateActive), uint8(EventClose)}:            StateClosed,
		{uint8(StateDraining), uint8(EventClose)}:          StateClosed,
	}
	for s := State(0); s <= NumStates; s++ {
		for e := Event(0); e <= NumEvents; e++ {
			want, ok := legal[[2]uint8{uint8(s), uint8(e)}]
			got, gotOK := Next(s, e)
			if gotOK != ok || (ok && got != want) {
				t.Errorf("Next(%v, %v) = %v, %v; want %v, %v", s, e, got, gotOK, want, ok)
			}
			if !gotOK && got != s {
				t.Errorf("Next(%v, %v) refused but moved to %v", s, e, got)
			}
		}
	}
}

func TestStringsAndErrors(t *testing.T) {
	for e, want := range map[Event]string{EventLogin: "LOGIN", EventTokenOK: "TOKEN_OK", EventTokenBad: "TOKEN_BAD",
		EventGoaway: "GOAWAY", EventClose: "CLOSE", Event(9): "Event(9)"} {
		if e.String() != want {
			t.Errorf("%d: %q want %q", e, e.String(), want)
		}
	}
	err := &TransitionError{From: StateClosed, Event: EventLogin}
	if got := err.Error(); got != "session: LOGIN not allowed in state CLOSED" {
		t.Errorf("error %q", got)
	}
	for s, want := range map[State]bool{StateConnected: false, StateAuthenticating: false, StateActive: true,
		StateDraining: true, StateClosed: false} {
		if s.LoggedIn() != want {
			t.Errorf("%v.LoggedIn() = %v", s, !want)
		}
	}
}
