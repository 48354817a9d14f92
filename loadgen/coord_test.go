package loadgen

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/pushwire/pushwire/client"
)

const workerEnv = "PUSHWIRE_LOADGEN_TEST_WORKER"

// TestMain lets the test binary serve as a worker process: the coordinator tests start it again
// with workerEnv set.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) == "1" {
		if err := ServeWorker(context.Background(), os.Stdin, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// testCoord starts a coordinator's workers: real processes of this test binary.
func testCoord(t *testing.T, conns, workers int) *coord {
	t.Helper()
	cfg := Config{ControlURL: "http://127.0.0.1:1", GatewayHTTP: []string{"http://127.0.0.1:2"}, App: "a", Secret: "s", PushKey: "k",
		Conns: conns, Workers: workers, Sources: []string{"127.0.0.2", "127.0.0.3"},
		WorkerCommand: []string{os.Args[0], "-test.run=^$"}, WorkerEnv: []string{workerEnv + "=1"}, Logger: discard()}
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	c := &coord{cfg: cfg, log: cfg.Logger, http: http.DefaultClient, wc: &http.Client{Timeout: 30 * time.Second}, errors: map[string]int64{}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.startWorkers(ctx); err != nil {
		c.stopWorkers()
		t.Fatal(err)
	}
	return c
}

// The worker protocol with two real worker processes: each gets its slice and sources, answers
// /track, /status and /collect, refuses a bad request with a clear error, and exits when the
// coordinator stops it.
func TestWorkerProcesses(t *testing.T) {
	c := testCoord(t, 7, 2)
	defer c.stopWorkers()
	if len(c.workers) != 2 || c.workers[0].lo != 0 || c.workers[0].hi != 3 || c.workers[1].lo != 3 || c.workers[1].hi != 7 {
		t.Fatalf("slices: %+v %+v", c.workers[0], c.workers[1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.all(ctx, http.MethodPost, "/track", func(*workerProc) any { return trackReq{Phase: "push", Msgs: 10} }, nil); err != nil {
		t.Fatal(err)
	}
	st, err := c.status(ctx)
	if err != nil || st != (workerStatus{}) {
		t.Fatalf("status %+v, %v", st, err)
	}
	col, err := c.collect(ctx)
	if err != nil || col.hist.TotalCount() != 0 || col.Delivered != 0 {
		t.Fatalf("collect %+v, %v", col, err)
	}
	err = c.call(ctx, c.workers[1], http.MethodPost, "/join", joinReq{Biz: 1}, nil)
	if err == nil || !strings.Contains(err.Error(), "group_size must be positive") {
		t.Errorf("bad join: %v", err)
	}
	err = c.call(ctx, c.workers[0], http.MethodPost, "/ramp", rampReq{Rate: 0}, nil)
	if err == nil || !strings.Contains(err.Error(), "rate must be positive") {
		t.Errorf("bad ramp: %v", err)
	}
	if urls := c.workerMetricsURLs(); len(urls) != 2 {
		t.Errorf("metrics URLs %v", urls)
	}
	if err := c.workerExited(); err != nil {
		t.Fatal(err)
	}
	c.stopWorkers()
	for _, w := range c.workers {
		select {
		case <-w.done:
		default:
			t.Errorf("worker %d still running after stop", w.idx)
		}
	}
	if err := c.workerExited(); err == nil {
		t.Error("workerExited: nil after stop")
	}
}

// A worker that cannot start (a bad command) is reported, naming the worker.
func TestWorkerStartFails(t *testing.T) {
	cfg := Config{ControlURL: "http://127.0.0.1:1", GatewayHTTP: []string{"http://127.0.0.1:2"}, App: "a", Secret: "s", PushKey: "k",
		Conns: 2, Workers: 1, WorkerCommand: []string{os.Args[0], "-test.run=^$"}, WorkerLog: io.Discard, Logger: discard()} // no workerEnv: exits at once
	if err := cfg.setDefaults(); err != nil {
		t.Fatal(err)
	}
	c := &coord{cfg: cfg, log: cfg.Logger, wc: http.DefaultClient}
	defer c.stopWorkers()
	err := c.startWorkers(context.Background())
	if err == nil || !strings.Contains(err.Error(), "worker 0 exited before it was ready") {
		t.Fatalf("start: %v", err)
	}
}

// onPush tracks deliveries per (message, local device) in fan-out phases and per message in
// unicast ones, counting a second delivery as a duplicate.
func TestWorkerOnPush(t *testing.T) {
	w := newWorker(WorkerSpec{Lo: 100, Hi: 104}, discard())
	at := time.Now().Add(-3 * time.Millisecond)
	push := func(i, seq int) {
		w.onPush(i, client.Push{Payload: []byte(payload(seq, at, at.Add(2*time.Millisecond)))})
	}
	w.startTracking(trackReq{Phase: "broadcast", Msgs: 2, Fanout: true})
	push(0, 0)
	push(3, 1)
	push(3, 1)                                     // duplicate
	push(1, 2)                                     // beyond the phase's messages: ignored
	w.onPush(2, client.Push{Payload: []byte("x")}) // not the load generator's
	col := w.collect()
	if col.Delivered != 2 || col.Dups != 1 {
		t.Fatalf("fan-out: %+v", col.workerStatus)
	}
	w.startTracking(trackReq{Phase: "push", Msgs: 5})
	push(2, 4)
	push(1, 4)
	// the older payload without the actual send time: counted as an error, not a delivery
	w.onPush(3, client.Push{Payload: []byte(fmt.Sprintf("pwlg:3:%d", at.UnixNano()))})
	col = w.collect()
	if col.Delivered != 1 || col.Dups != 1 || col.Hist.Counts == nil || col.Errors[errBadPayload] != 1 {
		t.Fatalf("unicast: %+v, errors %v", col.workerStatus, col.Errors)
	}
	// sent 2 ms after it was meant to: the uncorrected latency is 2 ms shorter
	h, hu := hdrhistogram.Import(col.Hist), hdrhistogram.Import(col.HistUncorrected)
	if h.TotalCount() != 1 || hu.TotalCount() != 1 {
		t.Fatalf("histograms hold %d and %d samples, want 1 each", h.TotalCount(), hu.TotalCount())
	}
	if d := h.Max() - hu.Max(); d < 1900 || d > 2100 {
		t.Errorf("corrected %d µs, uncorrected %d µs: want 2 ms apart", h.Max(), hu.Max())
	}
}
