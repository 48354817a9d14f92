package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// The connect workload of a capacity search, the worker's side:
//
//	POST /reconnect {close: true, count}         close the clients [0, count) of the slice
//	POST /reconnect {count, rate, timeout_ms}    connect every client of [0, count) that is not
//	                                             connected, at rate, each a new client; latency
//	                                             from each connect's intended time to its
//	                                             LOGIN_ACK goes into the phase's histograms
//
// The coordinator closes, waits for the gateways to see the connections go, starts the phase
// (POST /track) and then connects: the closing is not part of the measured step. The same
// connect call, with count the whole slice, restores connections lost in a step.

// maxConnecting bounds the connects in flight of one worker: stay under the accept backlog
// (somaxconn 4096, tcp_max_syn_backlog 2048) even with several workers.
const maxConnecting = 512

// worker API messages of the connect workload.
type (
	reconnectReq struct {
		Close     bool    `json:"close,omitempty"`
		Count     int     `json:"count"`
		Rate      float64 `json:"rate,omitempty"`
		TimeoutMS int64   `json:"timeout_ms,omitempty"`
	}
	reconnectAns struct {
		Closed    int64 `json:"closed,omitempty"`
		Sent      int64 `json:"sent"`      // connects meant to be made (those not connected)
		Connected int64 `json:"connected"` // of those, logged in
		// StartNS is when the worker's schedule began and LastAckNS when the last LOGIN_ACK
		// came (unix ns; 0: none): the connect rate reached is Connected over the time between.
		StartNS   int64 `json:"start_ns,omitempty"`
		LastAckNS int64 `json:"last_ack_ns,omitempty"`
	}
)

// connectEach connects the local clients idx at rate from start, each a new client (w.clients[i] replaced),
// at most maxConnecting at once, and calls done (when not nil) as each connect ends, with the
// connect's intended time (the pacer's), when it actually started and when it ended. A failed
// connect is counted by reason. It returns once every connect it started has ended; connects
// not started when ctx ends are left undone.
func (w *worker) connectEach(ctx context.Context, idx []int, rate float64, start time.Time, done func(i int, intended, actual, end time.Time, err error)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	if len(idx) == 0 {
		return nil
	}
	sem := make(chan struct{}, maxConnecting)
	k := 0
	for at := range (Pacer{Rate: rate, Count: len(idx)}).Run(ctx, start) {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		i := idx[k]
		k++
		c, err := w.newClient(i)
		if err != nil {
			<-sem
			return err
		}
		w.clients[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			actual := time.Now()
			err := c.Connect(ctx)
			end := time.Now()
			<-sem
			if err != nil {
				w.connectFailed(i, err)
			}
			if done != nil {
				done(i, at, actual, end, err)
			}
		}()
	}
	return nil
}

// closeRange closes the clients [lo, hi) of the slice; the disconnects it causes are not counted
// as unexpected.
func (w *worker) closeRange(lo, hi int) int64 {
	w.closing.Store(true)
	defer w.closing.Store(false)
	var wg sync.WaitGroup
	var closed atomic.Int64
	sem := make(chan struct{}, 256)
	for _, c := range w.clients[lo:hi] {
		if c == nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			connected := c.ConnID() != ""
			_ = c.Close()
			if connected {
				closed.Add(1)
			}
			<-sem
		}()
	}
	wg.Wait()
	return closed.Load()
}

// reconnect serves POST /reconnect (see above).
func (w *worker) reconnect(ctx context.Context, req reconnectReq) (reconnectAns, error) {
	if w.clients == nil {
		return reconnectAns{}, errors.New("loadgen worker: reconnect: not ramped yet")
	}
	if req.Count < 0 || req.Count > len(w.clients) {
		return reconnectAns{}, fmt.Errorf("loadgen worker: reconnect: count %d: want 0 to the slice's %d", req.Count, len(w.clients))
	}
	if req.Close {
		return reconnectAns{Closed: w.closeRange(0, req.Count)}, nil
	}
	if req.Rate <= 0 {
		return reconnectAns{}, fmt.Errorf("loadgen worker: reconnect: rate %g: must be positive", req.Rate)
	}
	var idx []int
	for i, c := range w.clients[:req.Count] {
		if c != nil && c.ConnID() != "" {
			continue
		}
		if c != nil {
			_ = c.Close() // not connected: nothing to count; a closed client cannot connect again
		}
		idx = append(idx, i)
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if timeout <= 0 {
		timeout = time.Duration(float64(len(idx))/req.Rate*float64(time.Second)) + time.Minute
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var connected, lastAck atomic.Int64
	start := time.Now()
	err := w.connectEach(rctx, idx, req.Rate, start, func(_ int, intended, actual, end time.Time, err error) {
		if err != nil {
			return
		}
		connected.Add(1)
		storeMax(&lastAck, end.UnixNano())
		w.record(end, intended, actual)
	})
	return reconnectAns{Sent: int64(len(idx)), Connected: connected.Load(), StartNS: start.UnixNano(), LastAckNS: lastAck.Load()}, err
}
