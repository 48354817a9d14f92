// Package route is the route layer's vocabulary: where a device, a user and a group live, the
// registry of live gateway instances, and the bus between instances. It holds the value types and
// the contract every store satisfies; the stores are route/memory (in process: the embedded
// default for one instance, and several nodes of one test process) and route/redis (go-redis
// UniversalClient: a single server, sentinel or cluster).
//
// The package uses the standard library only, so that the core can speak its types without
// importing a store: the core declares the interfaces it consumes in these terms, and the stores
// satisfy them without importing the core (docs/cluster.md).
//
// Generations. Every device entry carries the generation of the connection it names; a device's
// generation increases at each login (Claim assigns max(proposed, stored+1)). Release and Refresh
// compare generations, so a late disconnect, a slow instance or a dead instance's entry never
// deletes or shadows a newer connection.
//
// Every method takes a batch and answers it in one round trip to the store where the store is
// remote (a pipeline or a script per key), so that a push to 10,000 devices costs a handful of
// round trips, not 10,000.
package route

import (
	"context"
	"errors"
	"time"
)

// Entry is where one live connection of a device is: the instance that holds it, the
// connection's ID there, and its generation. The zero Entry means "no connection".
type Entry struct {
	Instance string `json:"instance"`
	Conn     uint64 `json:"conn"`
	Gen      uint64 `json:"gen"`
}

// IsZero reports whether e names no connection.
func (e Entry) IsZero() bool { return e.Instance == "" }

// Claim is one login to record: device (of App, logged in as User, "" for none) is now at Entry.
// Entry.Gen is the generation the instance proposes (for example its login time in nanoseconds);
// the store assigns max(proposed, stored+1).
type Claim struct {
	App, Device, User string
	Entry             Entry
}

// Claimed answers one Claim.
type Claimed struct {
	// Gen is the generation assigned to the new connection; the instance uses it from now on
	// (Release, Refresh, notifications).
	Gen uint64
	// Previous is the entry the claim replaced (zero when the device had none): a connection
	// that may still be open on its instance, which the claiming instance tells to close.
	Previous Entry
	// Groups are the groups the device is kept in (Membership): the claiming instance restores
	// them for the new connection. Sorted.
	Groups []string
	// Pending are the device's at-least-once messages still waiting for PUSH_ACK and not
	// expired, oldest first: the claiming instance delivers them.
	Pending []Pending
}

// Release is one disconnect to record: the device's entry is removed only while it still is
// Entry (same instance, connection and generation), and the user's entry for the device likewise.
// Linger is how long the device's groups and pending messages are kept without a connection
// (0: the store's default, at least a minute); a later Claim within it finds them.
type Release struct {
	App, Device, User string
	Entry             Entry
	Linger            time.Duration
}

// Membership puts a device in a group (In) or takes it out. A device's groups follow it: they
// are returned by the next Claim of the device, on any instance.
type Membership struct {
	App, Device, Group string
	In                 bool
}

// Holding records that Instance holds members of a group (Held) or no longer does.
type Holding struct {
	App, Group, Instance string
	Held                 bool
}

// Pending is one at-least-once message kept for a device until PUSH_ACK or Expires. Data is
// opaque to the store (the core encodes the message in it).
type Pending struct {
	App, Device, ID string
	Data            []byte
	Expires         time.Time
}

// Ack removes the pending message ID of a device.
type Ack struct {
	App, Device, ID string
}

// Directory knows where devices, users and groups live, and keeps what follows a device between
// connections (its groups and its unacknowledged messages). It is safe for concurrent use.
type Directory interface {
	// Claim records logins; the answers are in the order of the claims.
	Claim(ctx context.Context, claims []Claim) ([]Claimed, error)
	// Release records disconnects; ok[i] reports whether releases[i]'s entry was still current
	// and so removed (false: a newer connection had already replaced it).
	Release(ctx context.Context, releases []Release) (ok []bool, err error)
	// Refresh re-asserts entries after the store lost or missed them (a restarted store, a
	// partition): each is written back unless the device has a newer generation. current[i]
	// reports whether claims[i] is still the device's connection (false: superseded). Unlike
	// Claim it never changes a generation and returns nothing that follows the device.
	Refresh(ctx context.Context, claims []Claim) (current []bool, err error)
	// Lookup returns the entry of each device of app (zero Entry: none), in order.
	Lookup(ctx context.Context, app string, devices []string) ([]Entry, error)
	// Users returns, for each user of app in order, the entries of the user's devices.
	Users(ctx context.Context, app string, users []string) ([][]Entry, error)
	// SetMembership records devices joining and leaving groups.
	SetMembership(ctx context.Context, ops []Membership) error
	// SetHolding records which instances hold members of which groups.
	SetHolding(ctx context.Context, ops []Holding) error
	// Holders returns the instances recorded as holding members of app's group, sorted. Entries
	// of instances that are no longer live may remain; callers filter by the registry.
	Holders(ctx context.Context, app, group string) ([]string, error)
	// AddPending keeps at-least-once messages until Ack or expiry.
	AddPending(ctx context.Context, msgs []Pending) error
	// Ack removes acknowledged messages (an unknown ID is not an error).
	Ack(ctx context.Context, acks []Ack) error
	// Epoch returns when the store's present data began: when the first caller found it empty
	// and marked it. A store that lost its data (a Redis restarted without persistence, or
	// flushed) starts a new epoch at the next call. While an epoch is younger than the instances'
	// re-registration period, a device missing from the store may be one whose instance has not
	// re-asserted it yet: callers count such a miss as unknown, not offline.
	Epoch(ctx context.Context) (time.Time, error)
}

// Endpoint is one access point an instance serves: a transport and the address clients dial.
type Endpoint struct {
	Protocol string `json:"protocol"`
	Addr     string `json:"addr"`
}

// Instance is one gateway as the registry knows it.
type Instance struct {
	ID        string     `json:"id"`
	Engine    string     `json:"engine"`
	Endpoints []Endpoint `json:"endpoints"`
	// HTTP is the instance's push API base URL (http://host:port).
	HTTP string `json:"http"`
	// Region and Group place the instance for the control layer's dispatch policy: a client may
	// be sent to its own region first, and a gray release may name an instance group. Empty:
	// none given.
	Region string `json:"region,omitempty"`
	Group  string `json:"group,omitempty"`
	// Conns is the live connections at the last registration: the control layer's load figure.
	Conns    int64 `json:"conns"`
	Draining bool  `json:"draining"`
	// Updated is when the instance last registered; Expires when its registration lapses.
	Updated time.Time `json:"updated"`
	Expires time.Time `json:"expires"`
}

// Registry is the set of live gateway instances. An instance registers itself every few seconds
// with a TTL; one whose TTL lapsed is no longer listed.
type Registry interface {
	// Register creates or refreshes inst's registration, live for ttl from now.
	Register(ctx context.Context, inst Instance, ttl time.Duration) error
	// Deregister removes an instance at once (a clean shutdown).
	Deregister(ctx context.Context, id string) error
	// Instances lists the live instances, sorted by ID.
	Instances(ctx context.Context) ([]Instance, error)
}

// Message is one bus message: To names an instance, or is "" for every instance.
type Message struct {
	To   string
	Data []byte
}

// Bus carries messages between instances. Delivery is at most once: a message published while an
// instance is not subscribed is not kept for it, and Publish reports how many subscribers took it.
type Bus interface {
	// Publish sends msgs; receivers[i] is how many instances took msgs[i] (0: nobody listening).
	Publish(ctx context.Context, msgs []Message) (receivers []int, err error)
	// Subscribe delivers every message sent to instance, and every message sent to all, to
	// deliver (from one goroutine, in order) until ctx ends; it then returns nil. After a
	// failure it subscribes again with back-off. up is called with true each time the
	// subscription is (re-)established and with false when it is lost, so the caller can
	// re-assert what the store may have lost.
	Subscribe(ctx context.Context, instance string, deliver func(data []byte), up func(bool)) error
}

// Store is a whole route layer.
type Store interface {
	Directory
	Registry
	Bus
	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	// Close releases the store's connections. Subscriptions end.
	Close() error
}

// ErrClosed is returned by a Store's methods after Close.
var ErrClosed = errors.New("route: store closed")

// Delivery modes of a cluster (DESIGN.md "The cluster").
const (
	// ModeRegistry looks up the instances that hold the targets and sends one bus message per
	// holding instance.
	ModeRegistry = "registry"
	// ModeBroadcast sends every push to every instance, which delivers what it holds.
	ModeBroadcast = "broadcast"
)
