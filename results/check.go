package results

import (
	"errors"
	"fmt"
	"strings"
)

// CheckOptions relaxes Check. The zero value is the strict check.
type CheckOptions struct {
	// AllowSaturated lets a saturated phase pass (Phase.Saturated): for a run meant to find
	// where the deployment gives way, not to measure it below that.
	AllowSaturated bool
}

// Check is CheckWith the zero CheckOptions: every problem fails, saturation included.
func (r *Result) Check() error { return r.CheckWith(CheckOptions{}) }

// CheckWith validates a finished result and returns every problem it finds, joined with
// errors.Join, or nil. A good run has an engine and a transport, at least one phase, a ramp
// phase whose Conns reached its Target, no phase with messages missing (Missing > 0),
// completeness counts that add up (Missing = Sent - Delivered - Offline - Failed), no target
// that was online reported offline or stale, no unexpected disconnect, no saturated phase
// (unless opt.AllowSaturated), and no run errors. CI runs it to make sure the bench still works.
//
// A capacity search (Capacity set, or any phase with a Workload) runs its steps into the
// ground on purpose: a step (Phase.Workload != "") never fails the check, for saturation,
// missing messages or anything else it measured. Such a result fails only for run errors, for
// its ramp (missing or short), its other phases' problems, or when it holds no Capacity.
func (r *Result) CheckWith(opt CheckOptions) error {
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
	search := r.Capacity != nil
	ramps := 0
	for i := range r.Phases {
		p := &r.Phases[i]
		if p.Workload != "" {
			search = true
			continue // a capacity step: what it measured is the search's to judge
		}
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
		if p.Saturated && !opt.AllowSaturated {
			why := strings.Join(p.Saturation, "; ")
			if why == "" {
				why = "no reason recorded"
			}
			add("phase %s: saturated (%s): the figures are the deployment's limit, not the offered load's", p.Name, why)
		}
	}
	if len(r.Phases) > 0 && ramps == 0 {
		add("no %s phase", PhaseRamp)
	}
	if search && r.Capacity == nil {
		add("capacity search: no ceilings recorded")
	}
	for _, e := range r.Errors {
		add("run: %s", e)
	}
	return errors.Join(errs...)
}
