package push

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestRunCoversEveryTargetOnce(t *testing.T) {
	for _, n := range []int{0, 1, 511, 512, 513, 5000, 100_000} {
		f := New[int](Config{Workers: 4, Chunk: 512})
		f.Start()
		list := make([]int, n)
		for i := range list {
			list[i] = i
		}
		seen := make([]atomic.Int32, n)
		var chunks atomic.Int32
		if err := f.Run(list, func(c []int) {
			chunks.Add(1)
			if len(c) > 512 {
				t.Errorf("chunk of %d", len(c))
			}
			for _, v := range c {
				seen[v].Add(1)
			}
		}); err != nil {
			t.Fatal(err)
		}
		for i := range seen {
			if seen[i].Load() != 1 {
				t.Fatalf("n=%d: target %d seen %d times", n, i, seen[i].Load())
			}
		}
		if want := max((n+511)/512, 1); int(chunks.Load()) != want {
			t.Fatalf("n=%d: %d chunks, want %d", n, chunks.Load(), want)
		}
		f.Stop()
	}
}

// A fan-out's chunks run on the workers in parallel, and many fan-outs may run at once.
func TestRunConcurrentCallers(t *testing.T) {
	f := New[int](Config{Workers: 3, Chunk: 10})
	f.Start()
	defer f.Stop()
	var wg sync.WaitGroup
	var total atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = f.Run(make([]int, 1000), func(c []int) { total.Add(int64(len(c))) })
		}()
	}
	wg.Wait()
	if total.Load() != 20_000 {
		t.Fatalf("%d targets run, want 20,000", total.Load())
	}
}

func TestRunAfterStop(t *testing.T) {
	f := New[int](Config{Workers: 1, Chunk: 1})
	f.Start()
	f.Stop()
	f.Stop() // twice is harmless
	if err := f.Run(make([]int, 10), func([]int) {}); err != ErrStopped {
		t.Fatalf("Run after Stop: %v", err)
	}
}

func BenchmarkRun(b *testing.B) {
	for _, n := range []int{1, 100, 1000, 100_000} {
		b.Run(fmt.Sprintf("targets=%d", n), func(b *testing.B) {
			f := New[int](Config{})
			f.Start()
			defer f.Stop()
			list := make([]int, n)
			b.ReportAllocs()
			for b.Loop() {
				_ = f.Run(list, func(c []int) {})
			}
		})
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// New starts nothing: before Start, Run runs every chunk on its caller; Start after Stop starts
// nothing; Stop without Start is harmless.
func TestLifecycle(t *testing.T) {
	f := New[int](Config{Workers: 2, Chunk: 10})
	goleak.VerifyNone(t)
	var chunks int
	if err := f.Run(make([]int, 25), func(c []int) { chunks++ }); err != nil || chunks != 3 {
		t.Fatalf("Run before Start: %d chunks, %v", chunks, err)
	}
	f.Stop()
	f.Start()
	goleak.VerifyNone(t)
	f.Stop()
}
