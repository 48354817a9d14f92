package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
)

// Set at build time: -ldflags "-X main.version=… -X main.commit=…".
var (
	version = "dev"
	commit  = "unknown"
)

type command struct {
	summary string
	run     func(args []string) error
}

var commands = map[string]command{
	"gateway":  {"run a gateway instance (connections, sessions, push API)", runGateway},
	"control":  {"run the control layer (tokens, access points)", runControl},
	"backend":  {"run the demo business server (echo, delay, errors, notification sink)", runBackend},
	"loadgen":  {"run the load generator against a running deployment", runLoadgen},
	"bench":    {"start a local deployment, load it, and write a result file", runBench},
	"floor":    {"run the floor: a raw-epoll server with no engine library, the engines' yardstick", runFloor},
	"capacity": {"find each engine's ceiling per workload (a capacity search) and print the ceiling table", runCapacity},
	"results":  {"show, check or compare result files", runResults},
	"tui":      {"watch a running deployment live", runTUI},
	"version":  {"print the version", func([]string) error { printVersion(os.Stdout); return nil }},
}

func run(args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(os.Stdout)
		return nil
	}
	if args[0] == "-version" || args[0] == "--version" {
		printVersion(os.Stdout)
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(os.Stderr)
		return fmt.Errorf("unknown command %q", args[0])
	}
	return cmd.run(args[1:])
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "pushwire: a unified long-connection gateway and the workbench that measures it.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: pushwire <command> [flags]   (pushwire <command> --help for its flags)")
	fmt.Fprintln(w)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-8s  %s\n", n, commands[n].summary)
	}
}

func printVersion(w io.Writer) {
	fmt.Fprintf(w, "pushwire %s (commit %s, %s, %s/%s)\n", version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
