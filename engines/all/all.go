// Package all registers every engine pushwire ships. Import it for its side effect.
package all

import (
	_ "github.com/pushwire/pushwire/engines/gnet"    // "gnet"
	_ "github.com/pushwire/pushwire/engines/nbio"    // "nbio"
	_ "github.com/pushwire/pushwire/engines/netpoll" // "netpoll"
	_ "github.com/pushwire/pushwire/engines/quic"    // "quic" (carries its own transport: QUIC)
	_ "github.com/pushwire/pushwire/engines/std"     // "std"
)
