// Package conformance is the engine conformance suite: the same cases, over real loopback
// sockets, against every engine registered with package engines (the tests blank-import
// engines/all), so an engine added there is picked up without touching this package. Each case
// is a test whose subtests are named after the engine: TestX/<engine>. The std engine also runs
// as the pseudo-engine "std,writer=conn" (its per-connection writer; not a registered name).
//
// The suite's handler speaks real pushwire frames (core/frame): it decodes whole frames from
// OnData, keeps partial ones by returning what it consumed, and echoes or counts them. It also
// checks the seam's callback discipline (OnOpen first, OnData never concurrent per connection,
// OnClose exactly once, nothing after it) and every engine's Shutdown ends with that check.
//
// Cases: partial and coalesced frames (TestPartialAndCoalesced), the largest allowed frame and
// one byte over (TestLargestFrame), pushes from 8 goroutines to 2,000 idle connections
// (TestPushFanOut; TestWriteFrame does the same through engines.FrameWriter, which every engine
// must implement), one tail shared by 300 connections under heads of their own, intact at every
// peer and never modified (TestSharedTail), the connection cap (TestMaxConns: at MaxConns 5 a
// sixth connection gets RefuseMessage and EOF and never reaches the handler, the five keep
// echoing, refusals are counted, a slot frees when one closes), close from either side
// (TestClose), writes after close (TestWriteAfterClose), a client that stops reading
// (TestSlowReader: the core's slow-consumer policy, and the engine's own WriteTimeout), 10,000
// connections at once with the clients in a child process (TestManyConnections, skipped with
// -short), shutdown with connections open (TestShutdown), and no goroutine left behind (goleak, in
// TestMain). BenchmarkIdleHeap reports heap in use per idle connection on every engine.
//
// Run everything, or one engine, or one case on one engine:
//
//	go test -race ./engines/conformance/
//	go test -race -run 'Test.*/gnet' ./engines/conformance/
//	go test -race -run 'TestSlowReader/std,writer=conn' ./engines/conformance/
//
// (-run 'Test.*/std' matches both std entries; 'Test.*/std$' only the default one.)
// TestManyConnections re-executes the test binary as a client process (TestHelperClients), since
// one process holding both ends of 10,000 connections meets the 20,000 open-file limit.
package conformance
