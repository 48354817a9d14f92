package engines

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// OptionType is the kind of value an engine option takes.
type OptionType string

// The option types.
const (
	OptInt      OptionType = "int"      // a decimal integer
	OptDuration OptionType = "duration" // a Go duration: 250ms, 30s, 1m
	OptBool     OptionType = "bool"     // true or false (also 1, 0, t, f)
	OptEnum     OptionType = "enum"     // one of Values
)

// Option declares one engine option (a key of Config.Options): its type, default and help, and
// the values it takes. Engines declare theirs when they register; New checks every key and value
// against them, and "pushwire gateway --help-engine" prints them.
type Option struct {
	Key     string
	Type    OptionType
	Default string // in the option's own syntax; must pass Check
	Help    string
	// Min and Max bound an int or a duration, inclusive, in the option's own syntax ("64",
	// "10us"); empty: unbounded on that side.
	Min, Max string
	// Values are what an enum takes.
	Values []string
}

// Check reports whether v is a value o takes; the error says what is wanted.
func (o Option) Check(v string) error {
	switch o.Type {
	case OptInt:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("want an integer%s", o.rangeText())
		}
		return o.inRange(n, func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) })
	case OptDuration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("want a Go duration such as 250ms or 30s%s", o.rangeText())
		}
		return o.inRange(int64(d), func(s string) (int64, error) {
			d, err := time.ParseDuration(s)
			return int64(d), err
		})
	case OptBool:
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("want true or false")
		}
		return nil
	case OptEnum:
		for _, w := range o.Values {
			if v == w {
				return nil
			}
		}
		return fmt.Errorf("want one of %s", strings.Join(o.Values, ", "))
	default:
		return fmt.Errorf("option type %q unknown", o.Type)
	}
}

// inRange checks n against Min and Max, parsed with parse.
func (o Option) inRange(n int64, parse func(string) (int64, error)) error {
	if o.Min != "" {
		if lo, err := parse(o.Min); err != nil || n < lo {
			return fmt.Errorf("want a%s %s", o.article(), strings.TrimPrefix(o.rangeText(), " "))
		}
	}
	if o.Max != "" {
		if hi, err := parse(o.Max); err != nil || n > hi {
			return fmt.Errorf("want a%s %s", o.article(), strings.TrimPrefix(o.rangeText(), " "))
		}
	}
	return nil
}

func (o Option) article() string {
	if o.Type == OptInt {
		return "n integer"
	}
	return " duration"
}

// rangeText is " in 1..8", " of at least 1", " of at most 8" or "".
func (o Option) rangeText() string {
	switch {
	case o.Min != "" && o.Max != "":
		return " in " + o.Min + ".." + o.Max
	case o.Min != "":
		return " of at least " + o.Min
	case o.Max != "":
		return " of at most " + o.Max
	}
	return ""
}

// Want describes the values o takes, for help text: "int in 64..1048576", "pool | conn".
func (o Option) Want() string {
	if o.Type == OptEnum {
		return strings.Join(o.Values, " | ")
	}
	return string(o.Type) + o.rangeText()
}

// resolve checks given against the engine's declared options and returns a new map with every
// declared key, given values over defaults.
func resolve(engine string, declared []Option, given map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(declared))
	byKey := make(map[string]Option, len(declared))
	for _, o := range declared {
		out[o.Key] = o.Default
		byKey[o.Key] = o
	}
	for _, k := range sortedKeys(given) {
		v := given[k]
		o, ok := byKey[k]
		if !ok {
			return nil, fmt.Errorf("engines: %s: unknown option %q (%s)", engine, k, takes(engine, declared))
		}
		if err := o.Check(v); err != nil {
			return nil, fmt.Errorf("engines: %s: option %s=%q: %w", engine, k, v, err)
		}
		out[k] = v
	}
	return out, nil
}

// takes lists the option keys an engine declares, for an error message.
func takes(engine string, declared []Option) string {
	if len(declared) == 0 {
		return engine + " takes none"
	}
	keys := make([]string, len(declared))
	for i, o := range declared {
		keys[i] = o.Key
	}
	return engine + " takes " + strings.Join(keys, ", ")
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range maps.Keys(m) {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
