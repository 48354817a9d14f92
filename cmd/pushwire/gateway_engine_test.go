package main

import (
	"strings"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushwire/pushwire/core/frame"
)

func TestEngineOptions(t *testing.T) {
	f := engineOptFlag{}
	if err := f.Set("tick"); err == nil {
		t.Error("--engine-opt tick accepted without a value")
	}
	if err := f.Set("tick=50ms"); err != nil {
		t.Fatal(err)
	}
	opts, err := engineOptions("gnet", map[string]string{"tick": "1s", "write_buffer_cap": "4096"}, f)
	if err != nil {
		t.Fatal(err)
	}
	if opts["tick"] != "50ms" || opts["write_buffer_cap"] != "4096" {
		t.Errorf("merged %v: the flag must override the file, the file's other keys stay", opts)
	}
	_, err = engineOptions("std", map[string]string{"tick": "1s"}, nil)
	if err == nil || !strings.Contains(err.Error(), `std: unknown option "tick"`) {
		t.Errorf("another engine's key: %v", err)
	}
	var b strings.Builder
	if err := writeEngineOptions(&b, "std"); err != nil || !strings.Contains(b.String(), "writer") {
		t.Errorf("--help-engine std: %q, %v", b.String(), err)
	}
}

func TestRefuseMessageAndCap(t *testing.T) {
	f, n, err := frame.Decode(refuseMessage(2500), frame.Limits{})
	if err != nil || n != len(refuseMessage(2500)) {
		t.Fatalf("decode: %v", err)
	}
	if f.Type != frame.TypeGoaway || f.Code != frame.CodeOverloaded {
		t.Fatalf("type %v code %v, want GOAWAY OVERLOADED", f.Type, f.Code)
	}
	if v, _ := f.Meta.Get("retry_ms"); string(v) != "2500" {
		t.Errorf("retry_ms %q", v)
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur > fdReserve && rl.Cur < 1<<31 {
		if got := derivedMaxConns(); got != int(rl.Cur)-fdReserve {
			t.Errorf("derived --max-conns %d, want %d", got, int(rl.Cur)-fdReserve)
		}
	}
	if err := registerRefused(prometheus.NewRegistry(), nil); err != nil {
		t.Errorf("an engine without a counter: %v", err)
	}
}
