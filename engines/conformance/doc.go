// Package conformance is the engine conformance suite: the same cases, over real loopback
// sockets, against every engine registered with package engines (the tests blank-import
// engines/all) on every transport it carries (engines.Transports: tcp, tls, ws and wss on a
// stream engine, quic on the quic engine), so an engine or a transport added there is picked up
// without touching the cases. Each case is a test whose subtests are named after the cell:
// TestX/<engine>/<transport>. The std engine also runs as the pseudo-engine "std,writer=conn"
// (its per-connection writer; not a registered name), on tcp.
//
// The server side of a cell composes the transport's layers over the suite's handler exactly as
// the gateway does (stacks, layers_test.go): tls = tlslayer.Wrap(h) with ALPN pushwire/1
// required; ws = ws.Wrap(h); wss = tlslayer.Wrap(ws.Wrap(h)) offering http/1.1; quic = the quic
// engine given the server TLS configuration. The engine's MaxFrame is the outermost layer's
// EngineMaxFrame. The certificate is a fresh tlslayer.SelfSigned pair in a temporary directory,
// loaded with tlslayer.LoadCerts. The client side dials with internal/transport.Dial, and every
// client sends a hello frame first (a layer's handshake ends with the client; a QUIC stream
// reaches the server with its first bytes), which the tests wait for before writing.
//
// The suite's handler speaks real pushwire frames (core/frame): it decodes whole frames from
// OnData, keeps partial ones by returning what it consumed, and echoes or counts them. It also
// checks the seam's callback discipline (OnOpen first, OnData never concurrent per connection,
// OnClose exactly once, nothing after it) and every engine's Shutdown ends with that check.
//
// Cases: partial and coalesced frames (TestPartialAndCoalesced; on ws and wss the cuts fall in
// raw WebSocket frames the test writes itself, and a frame is also fragmented over three
// WebSocket frames), the largest allowed frame and one byte over (TestLargestFrame), pushes from
// 8 goroutines to 2,000 idle connections (TestPushFanOut; TestWriteFrame does the same through
// engines.FrameWriter, which every engine and layer must implement), one tail shared by 300
// connections under heads of their own, intact at every peer and never modified
// (TestSharedTail), the connection cap (TestMaxConns: at MaxConns 5 a sixth connection gets the
// transport's refusal and never reaches the handler, the five keep echoing, refusals are counted,
// a slot frees when one closes), close from either side (TestClose), writes after close
// (TestWriteAfterClose), a client that stops reading (TestSlowReader: the core's slow-consumer
// policy, and the engine's own WriteTimeout), 10,000 connections at once with the clients in a
// child process (TestManyConnections, skipped with -short), shutdown with connections open
// (TestShutdown), and no goroutine left behind (goleak, in TestMain). On the transports with a
// handshake the many-connection cases use fewer connections (cellConns, manyConns), fewer still
// under the race detector. Where a case checks a transport differently, its comment says why.
//
// BenchmarkIdleHeap reports the server's heap in use per idle connection and BenchmarkFanOut
// the deliveries per second of one frame with a shared tail to every idle connection, per
// engine × transport, with the clients in a child process (-conformance.conns, default 2,000).
// docs/engines.md "Engines × transports" holds one run's figures.
//
// Run everything, or one engine, or one transport, or one case on one cell:
//
//	go test -race ./engines/conformance/
//	go test -race -run 'Test.*/gnet/' ./engines/conformance/
//	go test -race -run 'Test.*/.*/wss' ./engines/conformance/
//	go test -race -run 'TestSlowReader/std,writer=conn' ./engines/conformance/
//	go test -run=none -bench=. -benchtime=20x ./engines/conformance/ -args -conformance.conns=2000
//
// (-run 'Test.*/std$/' matches std only; 'Test.*/std/' also std,writer=conn.)
// TestManyConnections and the benchmarks re-execute the test binary as a client process
// (TestHelperClients), since one process holding both ends of 10,000 connections meets the
// 20,000 open-file limit, and so that the heap measured is the server's alone.
package conformance
