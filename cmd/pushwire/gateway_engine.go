package main

import (
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pushwire/pushwire/core/frame"
	"github.com/pushwire/pushwire/engines"
)

// fdReserve is what the derived --max-conns leaves of the open-files limit for everything that
// is not a client connection: listeners, HTTP and admin connections, backend and Redis
// connections, log files. Running out of descriptors then never stops an engine from serving
// the connections it already has.
const fdReserve = 256

// derivedMaxConns is the default --max-conns: the soft RLIMIT_NOFILE minus fdReserve (at least
// 1), or 0 (no cap) when the limit cannot be read or is unlimited.
func derivedMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur > 1<<31 { // unreadable, or unlimited (RLIM_INFINITY)
		return 0
	}
	return max(int(rl.Cur)-fdReserve, 1)
}

// engineOptFlag collects repeated --engine-opt key=value flags.
type engineOptFlag map[string]string

func (f engineOptFlag) String() string {
	keys := make([]string, 0, len(f))
	for k, v := range f {
		keys = append(keys, k+"="+v)
	}
	return strings.Join(keys, ",")
}

func (f engineOptFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("%q: want key=value", s)
	}
	f[k] = v
	return nil
}

// engineOptions merges the config file's engine_options with the --engine-opt flags (the flags
// win) and checks them against the engine's declared options.
func engineOptions(engine string, file, flags map[string]string) (map[string]string, error) {
	opts := maps.Clone(file)
	if opts == nil {
		opts = map[string]string{}
	}
	maps.Copy(opts, flags)
	if err := engines.CheckOptions(engine, opts); err != nil {
		return nil, fmt.Errorf("gateway: --engine-opt / engine_options: %w", err)
	}
	return opts, nil
}

// printEngineOptions prints the options the engine declares on stdout (--help-engine).
func printEngineOptions(engine string) error { return writeEngineOptions(os.Stdout, engine) }

// writeEngineOptions writes the options the engine declares, one row each.
func writeEngineOptions(w io.Writer, engine string) error {
	opts, err := engines.Describe(engine)
	if err != nil {
		return fmt.Errorf("gateway: --engine: %w", err)
	}
	if t := transportEngine(engines.TransportQUIC); t == engine {
		fmt.Fprintf(w, "Options of the %s engine (pushwire gateway --quic-listen ADDR --quic-opt key=value):\n\n", engine)
	} else {
		fmt.Fprintf(w, "Options of the %s engine (pushwire gateway --engine %s --engine-opt key=value, or engine_options in the config file):\n\n", engine, engine)
	}
	if len(opts) == 0 {
		fmt.Fprintln(w, "  (none)")
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  KEY\tTYPE\tDEFAULT\tHELP")
	for _, o := range opts {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", o.Key, o.Want(), o.Default, o.Help)
	}
	return tw.Flush()
}

// checkMaxConns warns about a --max-conns above what the open-files limit allows.
func checkMaxConns(log *slog.Logger, maxConns int) {
	derived := derivedMaxConns()
	switch {
	case maxConns <= 0:
		log.Info("no connection cap (--max-conns 0)")
	case derived > 0 && maxConns > derived:
		log.Warn("--max-conns is above the open-files limit less a reserve: accepts may fail with EMFILE before the cap",
			"max_conns", maxConns, "derived", derived, "reserve", fdReserve)
	}
}

// refuseMessage is what a connection over --max-conns is sent before it is closed: GOAWAY with
// code OVERLOADED, the reason and retry_ms.
func refuseMessage(retryMs int) []byte {
	var meta frame.Meta
	meta = frame.AppendMetaString(meta, "reason", "instance at its connection cap")
	meta = frame.AppendMetaString(meta, "retry_ms", strconv.Itoa(retryMs))
	return frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypeGoaway, Code: frame.CodeOverloaded}, Meta: meta})
}

// registerRefused exposes the engines' refusal counts, summed over the listeners, as
// pushwire_conns_refused_total.
func registerRefused(reg *prometheus.Registry, engs ...engines.Engine) error {
	var cs []engines.Counter
	for _, e := range engs {
		if c, ok := e.(engines.Counter); ok {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return nil
	}
	return reg.Register(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "pushwire_conns_refused_total",
		Help: "Connections refused at a listener's connection cap (--max-conns), before login.",
	}, func() float64 {
		var n uint64
		for _, c := range cs {
			n += c.Refused()
		}
		return float64(n)
	}))
}
