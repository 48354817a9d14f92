// Package results holds the result of one benchmark run of the workbench:
// the schema stored as JSON (one file per run, with the environment it ran
// in), reading and writing it, validating it, a one-screen text summary,
// the Go benchmark text format that benchstat compares, and ratios between
// two runs.
//
// A run is a sequence of phases (ramp, idle, heartbeat, upstream, push,
// group, broadcast); each phase records what the gateway held and spent
// (connections, memory and GC per connection, CPU) and what the load
// generator saw (connect rate, deliveries per second, latency percentiles,
// completeness counts).
//
// The package uses only the standard library, so every other package may
// import it.
package results

import (
	"strings"
	"time"
)

// SchemaVersion is the version of the JSON schema this package writes.
// Read rejects any other version.
const SchemaVersion = 1

// idTimeLayout is the UTC time layout at the start of a result ID.
const idTimeLayout = "20060102T150405Z"

// Phase names the workbench runs, in order. A Result may hold any subset,
// and other names are allowed; Check requires a PhaseRamp phase.
const (
	PhaseRamp      = "ramp"      // connect and log in up to the target
	PhaseIdle      = "idle"      // hold the connections: memory and GC per connection
	PhaseHeartbeat = "heartbeat" // PING/PONG at the configured interval
	PhaseUpstream  = "upstream"  // REQUEST/RESPONSE through the business backend
	PhasePush      = "push"      // unicast push through the push API
	PhaseGroup     = "group"     // group push
	PhaseBroadcast = "broadcast" // one message to every connection
)

// Result is the outcome of one benchmark run, stored as one JSON file.
type Result struct {
	// Schema is the schema version; Write sets SchemaVersion when zero.
	Schema int `json:"schema"`
	// ID is "<UTC start 20060102T150405Z>-<engine>-<transport>" (see NewID);
	// it names the file. Write fills it in when empty.
	ID string `json:"id"`
	// StartedAt is when the run began.
	StartedAt time.Time `json:"started_at"`
	// Duration is the wall time of the whole run in seconds.
	Duration float64 `json:"duration_s"`
	// Engine is the I/O engine the gateways ran on (std, gnet, netpoll, nbio).
	Engine string `json:"engine"`
	// Transport is the transport layer (tcp, tls, ws, wss, quic).
	Transport string `json:"transport"`
	// Config holds the run's settings (connections, rates, phase
	// durations, instances, route store…), as the load generator chose them.
	Config map[string]any `json:"config"`
	// Env is the machine and build the run measured.
	Env Env `json:"env"`
	// Phases are the run's phases in the order they ran.
	Phases []Phase `json:"phases"`
	// Cluster describes the route layer the gateways shared (nil for a
	// run that recorded none: one instance, the memory route).
	Cluster *Cluster `json:"cluster,omitempty"`
	// Errors lists what went wrong in the run as a whole. A result with
	// errors fails Check.
	Errors []string `json:"errors,omitempty"`
	// Placement is how the processes were put on CPUs; nil when the kernel chose.
	Placement *Placement `json:"placement,omitempty"`
	// Capacity is set on the result of a capacity search, whose phases are its steps.
	Capacity *Capacity `json:"capacity,omitempty"`
}

// Cluster is the route layer of a run: its store, the delivery mode and,
// with Redis, the server's version and memory at the run's end.
type Cluster struct {
	Route string `json:"route"` // route store: "memory" or "redis"
	Mode  string `json:"mode"`  // delivery mode: "registry" or "broadcast"
	// RedisVersion is the redis_version of INFO server ("" without Redis).
	RedisVersion string `json:"redis_version,omitempty"`
	// RedisMemoryBytes is used_memory of INFO memory at the run's end.
	RedisMemoryBytes uint64 `json:"redis_memory_bytes,omitempty"`
	// Workers is the number of load generator worker processes.
	Workers int `json:"workers,omitempty"`
}

// Env is the machine and build a run measured.
type Env struct {
	Commit    string `json:"commit"`     // VCS revision of the code measured
	GoVersion string `json:"go_version"` // runtime.Version()
	OS        string `json:"os"`         // runtime.GOOS
	Arch      string `json:"arch"`       // runtime.GOARCH
	CPUModel  string `json:"cpu_model"`  // "model name" of /proc/cpuinfo
	Kernel    string `json:"kernel"`     // kernel release
	Hostname  string `json:"hostname"`   // host the environment was captured on
	// GOMAXPROCS is the value in the process that captured the environment.
	GOMAXPROCS int `json:"gomaxprocs"`
	// Cores is the number of logical CPUs usable by the process.
	Cores int `json:"cores"`
	// MemoryBytes is the machine's memory (MemTotal).
	MemoryBytes uint64 `json:"memory_bytes"`
	// FileLimit is the RLIMIT_NOFILE soft limit, which bounds the
	// connections one process can hold.
	FileLimit uint64 `json:"file_limit"`
	// LoadAvg is the 1, 5 and 15 minute load averages before the run.
	LoadAvg []float64 `json:"load_avg,omitempty"`
	// Busy lists the other processes using CPU before the run ("pid name cpu%"),
	// busiest first.
	Busy []string `json:"busy,omitempty"`
	// TCPSockets is the TCP sockets in use on the machine before the run.
	TCPSockets int `json:"tcp_sockets,omitempty"`
}

// Phase is one phase of a run: what the gateway held at its end and what
// the load generator measured during it.
type Phase struct {
	// Name is the phase, usually one of the Phase* constants.
	Name string `json:"name"`
	// Duration is the phase's wall time in seconds.
	Duration float64 `json:"duration_s"`
	// Conns is the connections held at the phase end, as the gateway
	// counts them (summed over instances).
	Conns int `json:"conns"`
	// Target is the connections the phase aimed to hold.
	Target int `json:"target"`
	// ConnectRate is logins completed per second in this phase.
	ConnectRate float64 `json:"connect_rate,omitempty"`
	// Gateway is what the gateway processes held and spent.
	Gateway Gateway `json:"gateway"`
	// Deliveries is messages delivered to clients per second.
	Deliveries float64 `json:"deliveries_per_s,omitempty"`
	// Latency is end to end, from the push call (or request) to the
	// client's receipt; nil when the phase measured none.
	Latency *Latency `json:"latency,omitempty"`

	// Completeness: every message sent is delivered or accounted for.
	// Missing = Sent - Delivered - Offline - Failed, and must be 0 for a
	// good run (see Unaccounted and Check).
	Sent      int64 `json:"sent"`
	Delivered int64 `json:"delivered"`
	Missing   int64 `json:"missing"`
	Offline   int64 `json:"offline"` // addressed to a device not connected, reported by the gateway
	Failed    int64 `json:"failed"`  // rejected with an error the sender saw

	// Forwarded is the targets the answering gateways handed to other
	// instances (included in Delivered, Offline or Failed once those
	// instances delivered or reported them).
	Forwarded int64 `json:"forwarded,omitempty"`
	// Remote sums what the other instances reported back in the push
	// API's answers; nil when no answer had a remote part.
	Remote *Remote `json:"remote,omitempty"`
	// OnlineOffline is the targets that were online (logged in, never
	// disconnected during the phase) but that an answer reported offline
	// or stale. Any fails Check: a cluster must find every live device.
	OnlineOffline int64 `json:"online_reported_offline,omitempty"`
	// Disconnects is the connections lost during the phase that the load
	// generator did not close. Any fails Check.
	Disconnects int64 `json:"unexpected_disconnects,omitempty"`
	// Pushes is the push API calls made in the phase.
	Pushes int64 `json:"pushes,omitempty"`
	// RedisCommands is the commands the Redis server processed during the
	// phase (INFO stats total_commands_processed, end minus start); with
	// Pushes it gives RedisCommandsPerPush. 0 without Redis.
	RedisCommands int64 `json:"redis_commands,omitempty"`
	// RedisBackground is the part of RedisCommands estimated to be the
	// cluster's background (registrations, registry reads, heartbeats):
	// the idle phase's command rate times this phase's duration; 0 when
	// the run had no idle phase.
	RedisBackground int64 `json:"redis_background_commands,omitempty"`
	// RedisCommandsPerPush is (RedisCommands - RedisBackground) / Pushes:
	// what one push API call cost the route store.
	RedisCommandsPerPush float64 `json:"redis_commands_per_push,omitempty"`
	// PerInstance is each gateway instance's own figures, in the order of
	// the deployment; Gateway is their total.
	PerInstance []Instance `json:"per_instance,omitempty"`

	// Errors counts client-side errors by reason (dial, login, timeout…).
	Errors map[string]int64 `json:"errors,omitempty"`

	// Workload names what a capacity search step loads (see the Workload* constants); empty for
	// a phase of a plain run. A step's Name is "<workload>@<offered rate>".
	Workload string `json:"workload,omitempty"`
	// Offered is the rate the phase offered, in its workload's unit per second (connects,
	// requests, push API calls or group/broadcast messages); 0 for a phase with no rate (idle).
	Offered float64 `json:"offered_per_s,omitempty"`
	// Achieved is the rate the load generator actually sent at: the operations sent over the
	// window in which they were meant to go out.
	Achieved float64 `json:"achieved_per_s,omitempty"`
	// Saturated is set when the phase did not reach its offered rate or its latency grew through
	// the phase; Saturation says why, one reason per entry. Check fails a saturated phase of a
	// plain run unless told otherwise (CheckOptions.AllowSaturated).
	Saturated  bool     `json:"saturated,omitempty"`
	Saturation []string `json:"saturation,omitempty"`
	// LatencyUncorrected is the latency measured from each operation's actual send, not its
	// intended time: the figure a closed-loop tool reports, which hides coordinated omission.
	// Latency (above) is the corrected one.
	LatencyUncorrected *Latency `json:"latency_uncorrected,omitempty"`
	// Cost is what one operation of the phase cost the gateways; nil for a phase without
	// operations (idle).
	Cost *Cost `json:"cost,omitempty"`
	// Loadgen is what the load generator's own processes spent during the phase.
	Loadgen *Loadgen `json:"loadgen,omitempty"`
	// Series is the phase second by second.
	Series []Sample `json:"series,omitempty"`
	// Profiles are the profiles saved of each gateway during the phase (run with profiling).
	Profiles []Profile `json:"profiles,omitempty"`
}

// Workloads of a capacity search (Phase.Workload).
const (
	WorkloadConnect   = "connect"   // connect + login, per second
	WorkloadUpstream  = "upstream"  // REQUEST/RESPONSE through the business backend, per second
	WorkloadPush      = "push"      // unicast push API calls, one device each, per second
	WorkloadBatch     = "batch"     // push API calls naming a batch of devices, per second
	WorkloadGroup     = "group"     // group messages per second (deliveries: × the group's size)
	WorkloadBroadcast = "broadcast" // broadcast messages per second (deliveries: × the connections)
)

// Cost is what one operation cost the gateways during a phase (CPU summed over instances).
type Cost struct {
	// Op is what one operation is: "connect", "request" or "push" (one push API call).
	Op  string `json:"op"`
	Ops int64  `json:"ops"`
	// CPUPerOp is the gateways' CPU time (user + system) per operation, in microseconds.
	CPUPerOp float64 `json:"cpu_us_per_op"`
	// AllocsPerOp and AllocBytesPerOp are the gateways' heap allocations per operation.
	AllocsPerOp     float64 `json:"allocs_per_op"`
	AllocBytesPerOp float64 `json:"alloc_bytes_per_op"`
	// Deliveries is the messages delivered in the phase, with the CPU time and allocations per
	// delivery (0 for a phase that delivers nothing: connect).
	Deliveries        int64   `json:"deliveries,omitempty"`
	CPUPerDelivery    float64 `json:"cpu_us_per_delivery,omitempty"`
	AllocsPerDelivery float64 `json:"allocs_per_delivery,omitempty"`
}

// Loadgen is what the load generator (coordinator and workers) spent during a phase.
type Loadgen struct {
	Processes  int     `json:"processes"`
	CPUSeconds float64 `json:"cpu_s"`     // user + system, summed over the processes
	RSSBytes   uint64  `json:"rss_bytes"` // summed over the processes at the phase end
}

// Sample is one second of a phase. Counts are of that second; levels are at its end.
type Sample struct {
	T          float64 `json:"t_s"`              // seconds since the phase start, at the sample
	Conns      int     `json:"conns"`            // sessions the gateways held
	RSSBytes   uint64  `json:"rss_bytes"`        // gateways' RSS, summed
	HeapBytes  uint64  `json:"heap_bytes"`       // gateways' heap objects, summed
	Sent       int64   `json:"sent"`             // operations sent in the second
	Delivered  int64   `json:"delivered"`        // deliveries (or answered requests) in the second
	P50        float64 `json:"p50_ms,omitempty"` // latency (corrected) of the second's deliveries
	P99        float64 `json:"p99_ms,omitempty"` //
	GCCount    uint64  `json:"gc_count"`         // GC cycles completed in the second
	GCPauseMax float64 `json:"gc_pause_max_s"`   // longest GC pause in the second (bucket bound)
	CPUSeconds float64 `json:"cpu_s"`            // gateways' CPU in the second
	LoadgenCPU float64 `json:"loadgen_cpu_s"`    // the load generator's CPU in the second
}

// Profile is one profile saved of one gateway during a phase.
type Profile struct {
	Node string `json:"node"` // the gateway's node ID
	Kind string `json:"kind"` // "cpu" or "heap"
	// Path is the profile file, relative to the directory of the result file.
	Path string `json:"path"`
}

// Placement is how the run's processes were put on CPUs (pushwire bench --cpus).
type Placement struct {
	Method  string `json:"method"`  // "sched_setaffinity"
	Gateway []int  `json:"gateway"` // CPUs the gateway processes (and control, the backend) ran on
	Loadgen []int  `json:"loadgen"` // CPUs the load generator's processes ran on
}

// Capacity is the outcome of a capacity search: the highest sustained rate per workload.
type Capacity struct {
	// P99Limit is the p99 latency a step had to stay under, in milliseconds: every workload's
	// unless Limits names its own.
	P99Limit float64 `json:"p99_limit_ms"`
	// Limits holds the workloads whose steps were held to another p99 limit than P99Limit
	// (workload → milliseconds; the broadcast's, by default). LimitFor reads them.
	Limits   map[string]float64 `json:"p99_limits_ms,omitempty"`
	Ceilings []Ceiling          `json:"ceilings"`
}

// Ceiling is one workload's highest sustained rate: the highest offered rate of a step that
// reached it, kept p99 under the limit, missed nothing and was not saturated.
type Ceiling struct {
	Workload string `json:"workload"`
	Unit     string `json:"unit"` // what Rate counts per second: connects, requests, pushes, messages
	// Rate is the ceiling (0: not even the lowest step held); Deliveries is deliveries/s there.
	Rate       float64 `json:"rate"`
	Deliveries float64 `json:"deliveries_per_s,omitempty"`
	P99        float64 `json:"p99_ms"` // the ceiling step's p99
	// FailedAt is the lowest offered rate that failed (0: none failed, the search hit its top),
	// and Why says how it failed.
	FailedAt float64 `json:"failed_at,omitempty"`
	Why      string  `json:"why,omitempty"`
	Steps    int     `json:"steps"` // steps the search ran for this workload
	// P99Limit is the p99 latency, in milliseconds, this workload's steps were held to.
	P99Limit float64 `json:"p99_limit_ms"`
}

// Remote is what the other instances reported back for targets forwarded
// to them, summed over a phase's push API answers.
type Remote struct {
	Instances int64 `json:"instances"` // remote instances addressed (summed per answer)
	Reported  int64 `json:"reported"`  // of those, the ones that answered
	Delivered int64 `json:"delivered"`
	Offline   int64 `json:"offline"`
	Stale     int64 `json:"stale"` // a route entry named a connection the instance no longer held
	Failed    int64 `json:"failed"`
}

// Instance is one gateway instance's figures for a phase.
type Instance struct {
	Node  string `json:"node"`  // the instance's node ID
	Conns int    `json:"conns"` // connections it held at the phase end
	Gateway
}

// Unaccounted returns Sent - Delivered - Offline - Failed: the messages
// neither delivered nor accounted for. The load generator stores it in
// Missing; a negative value means more deliveries than sends (duplicates).
func (p *Phase) Unaccounted() int64 {
	return p.Sent - p.Delivered - p.Offline - p.Failed
}

// Gateway is what the gateway processes held and spent during a phase,
// summed over instances where there are several.
type Gateway struct {
	// Instances is the number of gateway processes measured.
	Instances int `json:"instances"`
	// RSSBytes is the resident set size at the phase end.
	RSSBytes uint64 `json:"rss_bytes"`
	// RSSPerConn is (RSS - RSS before the first connection) / conns, in bytes.
	RSSPerConn float64 `json:"rss_per_conn"`
	// HeapBytes is the Go heap in use at the phase end.
	HeapBytes uint64 `json:"heap_bytes"`
	// HeapPerConn is (heap - heap before the first connection) / conns, in bytes.
	HeapPerConn float64 `json:"heap_per_conn"`
	// Goroutines is the goroutine count at the phase end.
	Goroutines int `json:"goroutines"`
	// GC stop-the-world pauses during the phase, in seconds.
	GCPauseP50 float64 `json:"gc_pause_p50_s"`
	GCPauseP99 float64 `json:"gc_pause_p99_s"`
	GCPauseMax float64 `json:"gc_pause_max_s"`
	// GCCount is the GC cycles completed during the phase.
	GCCount uint64 `json:"gc_count"`
	// GCCPUShare is GC CPU seconds / total CPU seconds during the phase (0..1).
	GCCPUShare float64 `json:"gc_cpu_share"`
	// CPUSeconds is the process CPU time (user + system) during the phase.
	CPUSeconds float64 `json:"cpu_s"`
	// Allocs and AllocBytes are the heap allocations during the phase (objects and bytes).
	Allocs     uint64 `json:"allocs,omitempty"`
	AllocBytes uint64 `json:"alloc_bytes,omitempty"`
}

// Latency summarizes a latency histogram, in milliseconds.
type Latency struct {
	Count int64   `json:"count"` // samples recorded
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
	Mean  float64 `json:"mean_ms"`
}

// NewID returns the ID of a run started at t on engine and transport:
// "<UTC time 20060102T150405Z>-<engine>-<transport>", for example
// "20250102T150405Z-gnet-tcp". Characters of engine and transport that are
// unsafe in a file name, and '-', become '_'; an empty one becomes "unknown".
func NewID(t time.Time, engine, transport string) string {
	return t.UTC().Format(idTimeLayout) + "-" + idPart(engine) + "-" + idPart(transport)
}

// idPart makes s safe as one dash-separated part of an ID and a file name.
func idPart(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '_', r == '+':
			return r
		}
		return '_'
	}, s)
}
