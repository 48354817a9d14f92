package gateway

import (
	"errors"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/core/session"
	"github.com/pushwire/pushwire/engines"
)

// outcome is what became of one frame written to one connection.
type outcome uint8

// Outcomes, as counted in pushwire_deliveries_total{outcome} (and, for PUSH frames, in
// pushwire_pushes_total{outcome}).
const (
	outDelivered    outcome = iota // queued to the connection
	outDropped                     // the write queue was full and the policy drops: the connection stays
	outSlowConsumer                // the write queue was full: the connection was closed SLOW_CONSUMER
	outClosing                     // the connection is closing or closed: nothing was written
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"delivered", "dropped", "slow_consumer", "closing"}

func (o outcome) String() string { return outcomeNames[o] }

// tally counts the outcomes of a run of deliveries of one frame type, so that a fan-out to
// thousands of connections touches the shared counters once per chunk, not once per connection.
type tally struct {
	typ frame.Type
	n   [numOutcomes]int64
}

// flush adds the counts to the node's metrics and resets them.
func (t *tally) flush(m *metrics) {
	for o, k := range t.n {
		if k == 0 {
			continue
		}
		m.deliveries[t.typ][o].Add(float64(k))
		if t.typ == frame.TypePush {
			m.pushes.WithLabelValues(outcome(o).String()).Add(float64(k))
		}
	}
	if k := t.n[outDelivered]; k > 0 {
		m.framesOut[t.typ].Add(float64(k))
	}
	if k := t.n[outSlowConsumer]; k > 0 {
		m.slowConsumers.Add(float64(k))
	}
	t.n = [numOutcomes]int64{}
}

// deliver is the one place that writes a frame to a connection: every response, control frame,
// unicast, group and broadcast push goes through it. It writes head followed by tail (tail may be
// nil, or shared by many connections: the engine never modifies it) and applies the write queue
// policy when the queue is full: SlowConsumerClose closes the connection with SLOW_CONSUMER,
// SlowConsumerDrop drops the frame and keeps it. It counts the outcome in t, which the caller
// flushes.
func (n *Node) deliver(c *Client, typ frame.Type, head, tail []byte, policy SlowConsumerPolicy, t *tally) outcome {
	t.typ = typ
	o := n.write(c, head, tail, policy)
	t.n[o]++
	return o
}

func (n *Node) write(c *Client, head, tail []byte, policy SlowConsumerPolicy) outcome {
	if c.state() == session.StateClosed {
		return outClosing
	}
	var err error
	switch fw, ok := c.conn.(engines.FrameWriter); {
	case len(tail) == 0:
		err = c.conn.Write(head)
	case ok:
		err = fw.WriteFrame(head, tail)
	default:
		buf := make([]byte, 0, len(head)+len(tail))
		err = c.conn.Write(append(append(buf, head...), tail...))
	}
	switch {
	case err == nil:
		return outDelivered
	case errors.Is(err, engines.ErrQueueFull) && policy == SlowConsumerDrop:
		return outDropped
	case errors.Is(err, engines.ErrQueueFull) && c.close(frame.CodeSlowConsumer):
		return outSlowConsumer
	default: // closed by this or another write meanwhile, or the engine's ErrClosed
		return outClosing
	}
}
