package report

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/pushwire/pushwire/results"
)

// ReadRuns reads result files: each argument is a result file or a directory whose *.json
// results are read (not recursive). A file named outright must be a readable result; in a
// directory, files that are not are left out. No result at all is an error wrapping
// ErrNoResults.
func ReadRuns(args []string) ([]*results.Result, error) {
	var runs []*run
	for _, a := range args {
		fi, err := os.Stat(a)
		if err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		if fi.IsDir() {
			s, err := load(a)
			if err != nil {
				return nil, err
			}
			runs = append(runs, s.all...)
			continue
		}
		r, err := results.Read(a)
		if err != nil {
			return nil, err
		}
		runs = append(runs, &run{r: r, path: a})
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("%w: no file or directory given", ErrNoResults)
	}
	out := make([]*results.Result, len(runs))
	for i, x := range runs {
		out[i] = x.r
	}
	return out, nil
}

// WriteBenchFiles writes runs in the Go benchmark format, one file per engine (outDir/<engine>.txt,
// created or replaced), each run's lines appended to its engine's file in start order, so that
// every phase of an engine is a benchmark repeated once per round (benchstat wants three or
// more). It returns the files in engine order (first seen, the floor last), for benchstat's
// columns.
func WriteBenchFiles(outDir string, runs []*results.Result) ([]string, error) {
	if len(runs) == 0 {
		return nil, fmt.Errorf("%w: nothing to write", ErrNoResults)
	}
	xs := make([]*run, len(runs))
	for i, r := range runs {
		xs[i] = &run{r: r}
	}
	sortRuns(xs)
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	var files []string
	for _, g := range groupRuns(xs) {
		var buf bytes.Buffer
		for _, x := range g.runs {
			if err := x.r.WriteBenchFormat(&buf); err != nil {
				return nil, fmt.Errorf("report: %s: %w", x.r.ID, err)
			}
		}
		name := strings.Trim(fileSafe(g.engine), ".")
		if name == "" {
			name = "unknown"
		}
		path := filepath.Join(outDir, name+".txt")
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			return nil, fmt.Errorf("report: %w", err)
		}
		files = append(files, path)
	}
	return files, nil
}
