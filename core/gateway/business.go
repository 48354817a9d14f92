package gateway

import (
	"fmt"
	"maps"
	"slices"

	"github.com/pushwire/pushwire/core/forward"
)

// SlowConsumerPolicy is what delivery does when a push of a business overflows a connection's
// write queue.
type SlowConsumerPolicy string

// Slow-consumer policies.
const (
	SlowConsumerClose SlowConsumerPolicy = "close" // close the connection with SLOW_CONSUMER
	SlowConsumerDrop  SlowConsumerPolicy = "drop"  // drop the message, count it, keep the connection
)

// Business is one business as the gateway serves it: its upstream forwarding (forward.Biz, whose
// settings sit beside these in the config file's businesses.<biz> section) and the gateway's own
// policies for it. The zero value of each field means its documented default.
type Business struct {
	forward.Biz `yaml:",inline"`
	// AllowJoin lets clients JOIN and LEAVE groups of this business; otherwise RESPONSE
	// FORBIDDEN. Default false.
	AllowJoin bool `yaml:"allow_join" json:"allow_join"`
	// SlowConsumer is what happens when a push of this business overflows a connection's write
	// queue. Default SlowConsumerClose.
	SlowConsumer SlowConsumerPolicy `yaml:"slow_consumer" json:"slow_consumer"`
}

// ValidateBusinesses reports the first setting of businesses that cannot work, naming the biz and
// the setting ("forward: biz 3: backend_url is required", "gateway: biz 2: slow_consumer ...").
// It does not modify businesses.
func ValidateBusinesses(businesses map[uint16]Business) error {
	_, err := withDefaults(businesses)
	return err
}

// withDefaults returns a copy of businesses with every default applied, or the first setting that
// cannot work.
func withDefaults(businesses map[uint16]Business) (map[uint16]Business, error) {
	fc := forward.Config{Biz: make(map[uint16]forward.Biz, len(businesses))}
	for id, b := range businesses {
		fc.Biz[id] = b.Biz
	}
	fc.SetDefaults()
	if err := fc.Validate(); err != nil {
		return nil, err
	}
	out := maps.Clone(businesses)
	for _, id := range slices.Sorted(maps.Keys(out)) {
		b := out[id]
		b.Biz = fc.Biz[id]
		switch b.SlowConsumer {
		case "":
			b.SlowConsumer = SlowConsumerClose
		case SlowConsumerClose, SlowConsumerDrop:
		default:
			return nil, fmt.Errorf("gateway: biz %d: slow_consumer %q: want %q or %q", id, b.SlowConsumer, SlowConsumerClose, SlowConsumerDrop)
		}
		out[id] = b
	}
	return out, nil
}

// forwardConfig is the forward pools' share of businesses.
func forwardConfig(businesses map[uint16]Business) map[uint16]forward.Biz {
	out := make(map[uint16]forward.Biz, len(businesses))
	for id, b := range businesses {
		out[id] = b.Biz
	}
	return out
}
