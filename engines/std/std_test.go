package stdengine

import (
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pushwire/pushwire/engines"
	"github.com/pushwire/pushwire/engines/enginetest"
)

// The cases every engine must pass (partial and coalesced input, writes from many goroutines,
// close from either side, write after close, a slow reader, shutdown with connections open) run
// in engines/conformance, against both write paths: "std" and "std,writer=conn". This file keeps
// what only the std engine has.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// writers are the values of the "writer" option (the benchmarks run with each).
var writers = []string{WriterPool, WriterConn}

func TestWriterOption(t *testing.T) {
	for _, v := range writers {
		e, err := engines.New(Name, engines.Config{Options: map[string]string{OptWriter: v}}, enginetest.NewHandler(t))
		if err != nil || e == nil {
			t.Fatalf("writer=%q: %v", v, err)
		}
	}
	_, err := engines.New(Name, engines.Config{Options: map[string]string{OptWriter: "goroutine"}}, enginetest.NewHandler(t))
	if err == nil || !strings.Contains(err.Error(), `writer="goroutine"`) {
		t.Fatalf("writer=goroutine: err %v, want one naming the option", err)
	}
}
