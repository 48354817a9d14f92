package control

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/pushwire/pushwire/route"
)

// DefaultRegistryRefresh is how often the instance registry is read (WithRegistry).
const DefaultRegistryRefresh = time.Second

// WithRegistry makes the Server dispatch connects to the gateways of the instance registry
// instead of the configured endpoints: live, not draining, serving a transport the client can
// use, least loaded first. The registry is read every refresh (default DefaultRegistryRefresh)
// by Run, which the owner of the Server must run. An instance whose registration lapsed is never
// handed out, however old the cached list. When the registry cannot be read, the last list read
// is used for at most one route.instance_ttl; after that connects are answered 503 no_endpoints
// until it can be read again.
func WithRegistry(reg route.Registry, refresh time.Duration) Option {
	return func(s *Server) {
		s.reg = reg
		s.refresh = refresh
		if s.refresh <= 0 {
			s.refresh = DefaultRegistryRefresh
		}
	}
}

// regView is one reading of the instance registry.
type regView struct {
	instances []route.Instance
	// handed[i] counts the connect answers that put instances[i] first since its registration
	// (its Updated): added to its Conns, that is its live load. Shared with the next view while
	// the instance has not registered again.
	handed []*atomic.Int64
	// eps[i] is instances[i]'s endpoints of a known transport, as handed out.
	eps    [][]Endpoint
	readAt time.Time // when the registry answered
}

// regState is the registry's reading state, kept by Refresh (one at a time: refreshMu).
type regState struct {
	failing   bool      // the last read failed
	failSince time.Time // when reads started failing
	dropped   bool      // the last good list is older than the TTL and no longer used
}

// Run reads the instance registry every refresh interval until ctx ends (WithRegistry); without
// a registry it returns at once. It reads once before waiting, so a connect soon after start finds
// the gateways. Call it once, from the goroutine that owns the Server.
func (s *Server) Run(ctx context.Context) {
	if s.reg == nil {
		return
	}
	t := time.NewTicker(s.refresh)
	defer t.Stop()
	for {
		_ = s.Refresh(ctx) // logged there; the last good list stays in use for one TTL
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Refresh reads the instance registry once and, when it answers, replaces the cached list. It
// logs when reading starts failing, when the last good list becomes too old to use, and when the
// registry answers again.
func (s *Server) Refresh(ctx context.Context) error {
	if s.reg == nil {
		return nil
	}
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	rctx, cancel := context.WithTimeout(ctx, max(s.refresh, time.Second))
	list, err := s.reg.Instances(rctx)
	cancel()
	now := s.now()
	st := &s.regState
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		s.countRead(false)
		if !st.failing {
			st.failing, st.failSince = true, now
			s.log.Warn("control: instance registry unreadable: using the last list read for at most the instance TTL",
				"ttl", s.cfg.Route.InstanceTTL, "err", err)
		}
		if v := s.view.Load(); !st.dropped && (v == nil || now.Sub(v.readAt) > s.cfg.Route.InstanceTTL) {
			st.dropped = true
			s.log.Error("control: instance registry unreadable for longer than the instance TTL: connects are answered 503 no_endpoints",
				"since", st.failSince, "ttl", s.cfg.Route.InstanceTTL, "err", err)
		}
		return fmt.Errorf("control: instance registry: %w", err)
	}
	if st.failing {
		s.log.Info("control: instance registry readable again", "instances", len(list), "failed_for", now.Sub(st.failSince))
	}
	*st = regState{}
	s.countRead(true)

	old := map[string]int{}
	prev := s.view.Load()
	if prev != nil {
		for i, in := range prev.instances {
			old[in.ID] = i
		}
	}
	v := &regView{instances: list, handed: make([]*atomic.Int64, len(list)), eps: make([][]Endpoint, len(list)), readAt: now}
	for i, in := range list {
		for _, e := range in.Endpoints {
			if validTransport(e.Protocol) && e.Addr != "" {
				v.eps[i] = append(v.eps[i], Endpoint{Protocol: e.Protocol, Addr: e.Addr})
			}
		}
		if j, ok := old[in.ID]; ok && prev.instances[j].Updated.Equal(in.Updated) {
			v.handed[i] = prev.handed[j] // not registered again since: keep counting
		} else {
			v.handed[i] = new(atomic.Int64)
		}
	}
	s.view.Store(v)
	return nil
}

// registryFailing reports whether the last reading of the registry failed.
func (s *Server) registryFailing() bool {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	return s.regState.failing
}

// registryUnits is the registry's part of dispatch: the live, non-draining instances with the
// endpoints they advertise, and their load (Conns at registration plus the clients handed out
// since). source describes them for the reason; failed, when not empty, says why there is no
// list to use (the registry not read yet, or unreadable for longer than the instance TTL).
func (s *Server) registryUnits(now time.Time) (units []unit, source, failed string) {
	v := s.view.Load()
	switch {
	case v == nil:
		return nil, "", "the instance registry has not been read yet"
	case now.Sub(v.readAt) > s.cfg.Route.InstanceTTL:
		return nil, "", fmt.Sprintf("the instance registry has not been readable for %v (longer than the instance TTL %v)",
			now.Sub(v.readAt).Truncate(time.Second), s.cfg.Route.InstanceTTL)
	}
	live, draining := 0, 0
	units = make([]unit, 0, len(v.instances))
	for i, in := range v.instances {
		if !in.Expires.After(now) {
			continue // lapsed since the list was read: the gateway may be dead
		}
		live++
		if in.Draining {
			draining++
			continue
		}
		units = append(units, unit{load: max(in.Conns, 0) + v.handed[i].Load(), region: in.Region, group: in.Group,
			eps: v.eps[i], handed: v.handed[i]})
	}
	return units, fmt.Sprintf("registry: %d live instances, %d draining", live, draining), ""
}

// registryInstances is the cached registry as GET /v1/instances lists it.
func (s *Server) registryInstances() []Instance {
	v := s.view.Load()
	if v == nil {
		return nil
	}
	now := s.now()
	out := make([]Instance, 0, len(v.instances))
	for i, in := range v.instances {
		eps := make([]Endpoint, len(in.Endpoints))
		for k, e := range in.Endpoints {
			eps[k] = Endpoint{Protocol: e.Protocol, Addr: e.Addr}
		}
		out = append(out, Instance{
			ID: in.ID, Engine: in.Engine, Endpoints: eps, Health: in.HTTP,
			Serving:  !in.Draining && in.Expires.After(now),
			Draining: in.Draining,
			Sessions: in.Conns, Handed: v.handed[i].Load(),
			Updated: in.Updated, Expires: in.Expires,
		})
	}
	return out
}
