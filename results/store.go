package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrSchema is returned (wrapped) by Read for a file whose schema version
// this build does not read.
var ErrSchema = errors.New("results: unsupported schema version")

// Write stores r as indented JSON in dir/<ID>.json, creating dir if needed,
// and returns the file's path. The file appears atomically: it is written
// to a temporary file in dir, synced and renamed, so a reader never sees
// half a result.
//
// Write completes r before storing it: a zero Schema becomes SchemaVersion
// and an empty ID becomes NewID(r.StartedAt, r.Engine, r.Transport).
// JSON cannot hold NaN or infinity, so a non-finite number in the phases,
// the duration or the top level of Config is stored as 0 and reported in
// r.Errors (which makes Check fail) rather than losing the run.
func Write(dir string, r *Result) (string, error) {
	if r == nil {
		return "", errors.New("results: write: nil result")
	}
	if r.Schema == 0 {
		r.Schema = SchemaVersion
	}
	if r.ID == "" {
		r.ID = NewID(r.StartedAt, r.Engine, r.Transport)
	}
	if strings.ContainsAny(r.ID, `/\`) || r.ID == "." || r.ID == ".." {
		return "", fmt.Errorf("results: write: ID %q is not a file name", r.ID)
	}
	r.Errors = append(r.Errors, r.dropNonFinite()...)

	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return "", fmt.Errorf("results: write %s: %w", r.ID, err)
	}
	b = append(b, '\n')
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("results: write: %w", err)
	}
	path := filepath.Join(dir, r.ID+".json")
	if err := writeAtomic(path, b); err != nil {
		return "", fmt.Errorf("results: write: %w", err)
	}
	return path, nil
}

// writeAtomic writes b to a temporary file beside path and renames it to
// path.
func writeAtomic(path string, b []byte) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close() // the error returned is the one that stopped the write
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// Read loads the result stored at path. A file of another schema version
// fails with an error wrapping ErrSchema.
func Read(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("results: %w", err)
	}
	var head struct {
		Schema *int `json:"schema"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return nil, fmt.Errorf("results: %s: %w", path, err)
	}
	switch {
	case head.Schema == nil:
		return nil, fmt.Errorf("results: %s: no schema field, not a pushwire result: %w", path, ErrSchema)
	case *head.Schema != SchemaVersion:
		return nil, fmt.Errorf("results: %s: schema version %d, this build reads version %d: %w",
			path, *head.Schema, SchemaVersion, ErrSchema)
	}
	r := new(Result)
	if err := json.Unmarshal(b, r); err != nil {
		return nil, fmt.Errorf("results: %s: %w", path, err)
	}
	return r, nil
}

// dropNonFinite sets every NaN or infinite number JSON cannot encode to 0
// and returns one message per number changed.
func (r *Result) dropNonFinite() []string {
	var msgs []string
	fix := func(where string, v *float64) {
		if math.IsNaN(*v) || math.IsInf(*v, 0) {
			msgs = append(msgs, fmt.Sprintf("%s was %v, stored as 0", where, *v))
			*v = 0
		}
	}
	fix("duration_s", &r.Duration)
	for _, k := range slices.Sorted(maps.Keys(r.Config)) {
		switch f := r.Config[k].(type) {
		case float64:
			fix("config "+k, &f)
			r.Config[k] = f
		case float32:
			g := float64(f)
			fix("config "+k, &g)
			r.Config[k] = g
		}
	}
	for i := range r.Phases {
		p := &r.Phases[i]
		at := fmt.Sprintf("phase %s: ", p.Name)
		fix(at+"duration_s", &p.Duration)
		fix(at+"connect_rate", &p.ConnectRate)
		fix(at+"deliveries_per_s", &p.Deliveries)
		g := &p.Gateway
		fix(at+"rss_per_conn", &g.RSSPerConn)
		fix(at+"heap_per_conn", &g.HeapPerConn)
		fix(at+"gc_pause_p50_s", &g.GCPauseP50)
		fix(at+"gc_pause_p99_s", &g.GCPauseP99)
		fix(at+"gc_pause_max_s", &g.GCPauseMax)
		fix(at+"gc_cpu_share", &g.GCCPUShare)
		fix(at+"cpu_s", &g.CPUSeconds)
		if l := p.Latency; l != nil {
			fix(at+"latency p50_ms", &l.P50)
			fix(at+"latency p90_ms", &l.P90)
			fix(at+"latency p99_ms", &l.P99)
			fix(at+"latency p999_ms", &l.P999)
			fix(at+"latency max_ms", &l.Max)
			fix(at+"latency mean_ms", &l.Mean)
		}
	}
	return msgs
}
