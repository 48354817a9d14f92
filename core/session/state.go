// Package session holds the connection-independent half of a gateway connection: the session
// state machine of the protocol and the session table that finds sessions by connection, device
// and user.
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
type State uint32

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
	return fmt.Sprintf("State(%d)", uint32(s))
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
