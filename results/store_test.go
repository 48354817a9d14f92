package results

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestWriteRead(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "new", "results")
	in := sample()
	path, err := Write(dir, in)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, in.ID+".json"); path != want {
		t.Errorf("path = %q, want %q", path, want)
	}
	out, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	// JSON numbers in Config come back as float64.
	for k, v := range in.Config {
		if n, ok := v.(int); ok {
			in.Config[k] = float64(n)
		}
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("round trip changed the result:\n in: %+v\nout: %+v", in, out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("dir holds %d entries, want only the result (temporary file left?)", len(entries))
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{`"schema": 1`, `"started_at"`, `"duration_s"`, `"deliveries_per_s"`,
		`"rss_per_conn"`, `"gc_pause_p99_s"`, `"p99_ms"`, `"go_version"`, `"missing": 0`} {
		if !strings.Contains(string(b), key) {
			t.Errorf("file lacks %s", key)
		}
	}
}

func TestWriteFillsIn(t *testing.T) {
	r := sample()
	r.ID, r.Schema = "", 0
	r.Phases[1].Gateway.RSSPerConn = math.NaN()
	r.Phases[2].Latency.P99 = math.Inf(1)
	r.Config["bad"] = math.NaN()
	path, err := Write(t.TempDir(), r)
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != "20250102T150405Z-gnet-tcp" || r.Schema != SchemaVersion {
		t.Errorf("ID %q schema %d not filled in", r.ID, r.Schema)
	}
	if len(r.Errors) != 3 {
		t.Errorf("Errors = %q, want the 3 non-finite numbers reported", r.Errors)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Phases[1].Gateway.RSSPerConn != 0 || got.Phases[2].Latency.P99 != 0 {
		t.Error("non-finite numbers not stored as 0")
	}
	if got.Check() == nil {
		t.Error("Check passed a result whose numbers were dropped")
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		dir  string
		r    *Result
	}{
		{"nil", dir, nil},
		{"slash in ID", dir, &Result{ID: "../escape"}},
		{"dir is a file", file, sample()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Write(tt.dir, tt.r); err == nil {
				t.Error("Write succeeded")
			}
		})
	}
}

func TestRead(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name      string
		path      string
		schemaErr bool
		contains  string
	}{
		{"good", write("good.json", `{"schema":1,"id":"x","phases":[{"name":"ramp"}]}`), false, ""},
		{"newer schema", write("v2.json", `{"schema":2,"id":"x"}`), true, "schema version 2"},
		{"no schema", write("none.json", `{"id":"x"}`), true, "no schema field"},
		{"not json", write("bad.json", `schema: 1`), false, "bad.json"},
		{"wrong types", write("types.json", `{"schema":1,"phases":"ramp"}`), false, "types.json"},
		{"missing file", filepath.Join(dir, "nope.json"), false, "nope.json"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Read(tt.path)
			if tt.contains == "" {
				if err != nil || r == nil {
					t.Fatalf("Read: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Read succeeded")
			}
			if errors.Is(err, ErrSchema) != tt.schemaErr {
				t.Errorf("errors.Is(%v, ErrSchema) = %v", err, !tt.schemaErr)
			}
			if !strings.Contains(err.Error(), tt.contains) {
				t.Errorf("error %q does not mention %q", err, tt.contains)
			}
		})
	}
}
