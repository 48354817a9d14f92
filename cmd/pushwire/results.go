package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/pushwire/pushwire/report"
	"github.com/pushwire/pushwire/results"
)

func runResults(args []string) error {
	fs := newFlags("results", "Work with result files:\n  results show FILE...         print each result's summary\n  results check [--allow-saturated] FILE...\n                               fail unless each result passes its checks (--allow-saturated: a saturated\n                               phase passes)\n  results benchfmt FILE...     print Go benchmark format (for benchstat)\n  results compare BASE OTHER   ratios of OTHER to BASE, metric by metric\n  results side FILE...         every run side by side (memory, GC, throughput, latency, missing), with\n                               ratios against the first file\n  results report DIR           write DIR/report.md with charts (DIR/charts/*.png) from the results in DIR\n  results benchstat [-o OUT] FILE|DIR...\n                               write each engine's runs in Go benchmark format to OUT/<engine>.txt\n                               (default: DIR/benchstat, or beside the first file) and run benchstat on them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rest := fs.Args()
	if len(rest) < 2 {
		fs.Usage()
		return errors.New("results: want a verb and at least one file")
	}
	verb, files := rest[0], rest[1:]
	var checkOpts results.CheckOptions
	if verb == "check" {
		// results check [--allow-saturated] FILE...
		cfs := flag.NewFlagSet("results check", flag.ContinueOnError)
		cfs.BoolVar(&checkOpts.AllowSaturated, "allow-saturated", false, "let a saturated phase pass (still marked SAT)")
		if err := cfs.Parse(files); err != nil {
			return fmt.Errorf("results check: %w", err)
		}
		if files = cfs.Args(); len(files) == 0 {
			return errors.New("results check: want at least one file")
		}
	}
	load := func(p string) (*results.Result, error) {
		r, err := results.Read(p)
		if err != nil {
			return nil, fmt.Errorf("results: %w", err)
		}
		return r, nil
	}
	switch verb {
	case "show", "check", "benchfmt":
		var errs []error
		for _, p := range files {
			r, err := load(p)
			if err != nil {
				return err
			}
			switch verb {
			case "show":
				if err := r.Summary(os.Stdout); err != nil {
					return err
				}
				fmt.Println()
			case "check":
				if err := r.CheckWith(checkOpts); err != nil {
					errs = append(errs, fmt.Errorf("%s: %w", p, err))
				} else {
					fmt.Printf("%s: ok\n", p)
				}
			case "benchfmt":
				if err := r.WriteBenchFormat(os.Stdout); err != nil {
					return err
				}
			}
		}
		return errors.Join(errs...)
	case "side":
		runs := make([]*results.Result, 0, len(files))
		for _, p := range files {
			r, err := load(p)
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		cols := make([]string, len(runs))
		for i, r := range runs {
			cols[i] = runLabel(r)
		}
		fmt.Printf("columns (engine/transport): %s\n\n", strings.Join(cols, "  "))
		return results.SideBySide(os.Stdout, runs, runs[0].Engine)
	case "report":
		if len(files) != 1 {
			return errors.New("results report: want one directory")
		}
		path, err := report.Generate(files[0], report.Options{})
		if err != nil {
			return err
		}
		fmt.Println(path)
		return nil
	case "benchstat":
		return runBenchstat(files)
	case "compare":
		if len(files) != 2 {
			return errors.New("results compare: want BASE and OTHER")
		}
		base, err := load(files[0])
		if err != nil {
			return err
		}
		other, err := load(files[1])
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "phase\tmetric\t%s\t%s\tratio\n", runLabel(base), runLabel(other))
		for _, r := range results.Compare(base, other) {
			fmt.Fprintf(tw, "%s\t%s\t%.4g\t%.4g\t%.2fx\n", r.Phase, r.Metric, r.Base, r.Other, r.Ratio)
		}
		return tw.Flush()
	}
	return fmt.Errorf("results: unknown verb %q (show, check, benchfmt, compare, side, report, benchstat)", verb)
}

// runLabel names a run in a table's header: engine/transport.
func runLabel(r *results.Result) string {
	t := r.Transport
	if t == "" {
		t = "tcp" // results written before transports were recorded
	}
	return r.Engine + "/" + t
}

// runBenchstat writes the runs named by args (result files, or directories of them) in the Go
// benchmark format, one file per engine, and runs benchstat over them with a column per engine.
func runBenchstat(args []string) error {
	fs := newFlags("results benchstat", "results benchstat [-o OUT] FILE|DIR...: each engine's runs in Go benchmark format, compared by benchstat")
	out := fs.String("o", "", "directory for the <engine>.txt files (default: DIR/benchstat for a directory, else beside the first file)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("results benchstat: want result files or a directory")
	}
	runs, err := report.ReadRuns(fs.Args())
	if err != nil {
		return err
	}
	dir := *out
	if dir == "" {
		first := fs.Arg(0)
		if fi, err := os.Stat(first); err == nil && fi.IsDir() {
			dir = filepath.Join(first, "benchstat")
		} else {
			dir = filepath.Join(filepath.Dir(first), "benchstat")
		}
	}
	files, err := report.WriteBenchFiles(dir, runs)
	if err != nil {
		return err
	}
	for _, f := range files {
		fmt.Println("wrote", f)
	}
	// One column per engine (the first is the base); the commit may differ between runs of a sitting.
	bsArgs := append([]string{"-col", "engine", "-ignore", "commit"}, files...)
	tool := benchstatPath()
	if tool == "" {
		fmt.Printf("\nbenchstat is not installed: `make benchstat-tool` puts it in bin/, then run\n  bin/benchstat %s\n", strings.Join(bsArgs, " "))
		return nil
	}
	fmt.Println()
	cmd := exec.Command(tool, bsArgs...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("results benchstat: %s: %w", tool, err)
	}
	return nil
}

// benchstatPath returns bin/benchstat beside the running binary or in the working directory,
// else benchstat on PATH, else "".
func benchstatPath() string {
	var candidates []string
	if exe, err := os.Executable(); err == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(exe), "benchstat"))
	}
	candidates = append(candidates, filepath.Join("bin", "benchstat"))
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return c
		}
	}
	if p, err := exec.LookPath("benchstat"); err == nil {
		return p
	}
	return ""
}
