package results

import (
	"errors"
	"fmt"
)

// Check validates a finished result and returns every problem it finds,
// joined with errors.Join, or nil. A good run has an engine and a
// transport, at least one phase, a ramp phase whose Conns reached its
// Target, no phase with messages missing (Missing > 0), completeness
// counts that add up (Missing = Sent - Delivered - Offline - Failed), no
// target that was online reported offline or stale, no unexpected
// disconnect, and no run errors. CI runs it to make sure the bench still works.
func (r *Result) Check() error {
	var errs []error
	add := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format, args...))
	}
	if r.Engine == "" {
		add("no engine")
	}
	if r.Transport == "" {
		add("no transport")
	}
	if len(r.Phases) == 0 {
		add("no phases")
	}
	ramps := 0
	for i := range r.Phases {
		p := &r.Phases[i]
		if p.Name == PhaseRamp {
			ramps++
			switch {
			case p.Target <= 0:
				add("phase %s: no target connections", p.Name)
			case p.Conns < p.Target:
				add("phase %s: held %d of %d connections (%.1f%%)",
					p.Name, p.Conns, p.Target, 100*float64(p.Conns)/float64(p.Target))
			}
		}
		if p.Missing > 0 {
			add("phase %s: %d of %d messages missing", p.Name, p.Missing, p.Sent)
		}
		if p.OnlineOffline > 0 {
			add("phase %s: %d targets that were online reported offline or stale", p.Name, p.OnlineOffline)
		}
		if p.Disconnects > 0 {
			add("phase %s: %d unexpected disconnects", p.Name, p.Disconnects)
		}
		if u := p.Unaccounted(); u != p.Missing {
			add("phase %s: counts do not add up: sent %d - delivered %d - offline %d - failed %d = %d, but missing is %d",
				p.Name, p.Sent, p.Delivered, p.Offline, p.Failed, u, p.Missing)
		}
	}
	if len(r.Phases) > 0 && ramps == 0 {
		add("no %s phase", PhaseRamp)
	}
	for _, e := range r.Errors {
		add("run: %s", e)
	}
	return errors.Join(errs...)
}
