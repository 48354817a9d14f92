// Package session is the protocol's session state machine (docs/protocol.md "Session states"):
// the states of a connection, the events that move it, the table of legal moves, and the table of
// which frame types each state accepts. It holds no connection: the gateway's connection object
// keeps its state in one word and moves it only through Next.
package session

import (
	"fmt"

	"github.com/pushwire/pushwire/core/frame"
)

// State is a session's place in the protocol's state machine:
//
//	CONNECTED --LOGIN--> AUTHENTICATING --token ok--> ACTIVE --GOAWAY sent--> DRAINING --> CLOSED
//	    |                      |                        |
//	    +-- login timeout /    +-- token bad ---------->+-- idle timeout, protocol error, eviction,
//	        protocol error --------------------------------> slow consumer, transport closed --> CLOSED
type State uint8

// States.
const (
	StateConnected      State = iota // transport open, no LOGIN yet
	StateAuthenticating              // LOGIN received, token being verified
	StateActive                      // logged in
	StateDraining                    // GOAWAY sent; PING and PUSH_ACK still accepted
	StateClosed                      // terminal

	// NumStates bounds State values.
	NumStates = 5
)

var stateNames = [NumStates]string{"CONNECTED", "AUTHENTICATING", "ACTIVE", "DRAINING", "CLOSED"}

func (s State) String() string {
	if s < NumStates {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// LoggedIn reports whether s is a state after a successful login and before the close: ACTIVE or
// DRAINING, where pushes are delivered.
func (s State) LoggedIn() bool { return s == StateActive || s == StateDraining }

// Event is what moves a session from one state to another.
type Event uint8

// Events.
const (
	EventLogin    Event = iota // a LOGIN frame arrived
	EventTokenOK               // its token was verified and the identity registered
	EventTokenBad              // its token was refused (missing, forged, expired, another device or app)
	EventGoaway                // GOAWAY SHUTTING_DOWN was sent: the instance drains
	EventClose                 // the connection closes, for any reason (the close code says which)

	// NumEvents bounds Event values.
	NumEvents = 5
)

var eventNames = [NumEvents]string{"LOGIN", "TOKEN_OK", "TOKEN_BAD", "GOAWAY", "CLOSE"}

func (e Event) String() string {
	if e < NumEvents {
		return eventNames[e]
	}
	return fmt.Sprintf("Event(%d)", uint8(e))
}

// noMove marks an illegal (state, event) pair in the transition table.
const noMove = State(0xFF)

// transitions is the table of legal moves: transitions[from][event] is the state the event moves
// to, or noMove. Every state but CLOSED closes; CLOSED is terminal.
var transitions = func() (t [NumStates][NumEvents]State) {
	for s := range t {
		for e := range t[s] {
			t[s][e] = noMove
		}
	}
	t[StateConnected][EventLogin] = StateAuthenticating
	t[StateAuthenticating][EventTokenOK] = StateActive
	t[StateAuthenticating][EventTokenBad] = StateClosed
	t[StateActive][EventGoaway] = StateDraining
	for _, s := range []State{StateConnected, StateAuthenticating, StateActive, StateDraining} {
		t[s][EventClose] = StateClosed
	}
	return t
}()

// Next returns the state event e moves a session in state from to, and whether the move is legal.
func Next(from State, e Event) (State, bool) {
	if from >= NumStates || e >= NumEvents {
		return from, false
	}
	to := transitions[from][e]
	if to == noMove {
		return from, false
	}
	return to, true
}

// TransitionError is an illegal move: event Event in state From.
type TransitionError struct {
	From  State
	Event Event
}

func (e *TransitionError) Error() string {
	return "session: " + e.Event.String() + " not allowed in state " + e.From.String()
}

// accept is the table of states × frame types: the code a frame of that type gets in that state.
// CodeOK means the frame is accepted; anything else is the protocol error to answer with. Before
// login every refused frame is NOT_LOGGED_IN; after it, BAD_FRAME.
var accept = func() (t [NumStates][frame.NumTypes]frame.Code) {
	for s := State(0); s < NumStates; s++ {
		for ty := frame.Type(0); ty < frame.NumTypes; ty++ {
			switch s {
			case StateConnected, StateAuthenticating:
				t[s][ty] = frame.CodeNotLoggedIn
			default:
				t[s][ty] = frame.CodeBadFrame
			}
		}
	}
	t[StateConnected][frame.TypeLogin] = frame.CodeOK
	for _, ty := range []frame.Type{frame.TypeRequest, frame.TypePing, frame.TypePushAck, frame.TypeJoin, frame.TypeLeave} {
		t[StateActive][ty] = frame.CodeOK
	}
	t[StateDraining][frame.TypePing] = frame.CodeOK
	t[StateDraining][frame.TypePushAck] = frame.CodeOK
	return t
}()

// Check returns frame.CodeOK when a frame of type t is accepted in state s, and otherwise the
// protocol error code to answer with before closing the connection.
func Check(s State, t frame.Type) frame.Code {
	if s >= NumStates || t >= frame.NumTypes {
		return frame.CodeBadFrame
	}
	return accept[s][t]
}
