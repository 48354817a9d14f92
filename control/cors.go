package control

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// CORSMaxAge is how long, in seconds, a browser may cache the answer to a preflight request.
const CORSMaxAge = 600

// CodeOriginNotAllowed is the 403 answer to a preflight request (OPTIONS /v1/connect) from an
// origin that cors_origins does not list.
const CodeOriginNotAllowed = "origin_not_allowed"

// WithCORSOrigins replaces the configured cors_origins (for example with ones given as flags).
// NewServer validates them.
func WithCORSOrigins(origins []string) Option {
	return func(s *Server) {
		s.corsOrigins = append([]string(nil), origins...)
		s.corsSet = true
	}
}

// normalOrigin is an origin as browsers send it in the Origin header: lowercase, without the
// scheme's default port. ok is false for anything but "*" and http(s)://host[:port].
func normalOrigin(o string) (string, bool) {
	if o == "*" {
		return o, true
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" || strings.HasSuffix(o, "?") ||
		strings.HasSuffix(o, "#") {
		return "", false
	}
	host := strings.ToLower(u.Host)
	if p := u.Port(); p != "" {
		if !validPort(p) {
			return "", false
		}
		if u.Scheme == "https" && p == "443" || u.Scheme == "http" && p == "80" {
			host = strings.TrimSuffix(host, ":"+p)
		}
	}
	return u.Scheme + "://" + host, true
}

// CheckCORSOrigins validates allowed origins given outside the config file (a flag); name is the
// setting reported in errors ("--cors-origins[1]: …"). The error wraps ErrInvalidConfig.
func CheckCORSOrigins(name string, origins []string) error {
	return errors.Join(checkOrigins(name, origins)...)
}

// checkOrigins validates a list of allowed origins; name is the setting reported in errors.
func checkOrigins(name string, origins []string) []error {
	var errs []error
	for i, o := range origins {
		if _, ok := normalOrigin(o); !ok {
			errs = append(errs, &ConfigError{fmt.Sprintf("%s[%d]", name, i),
				fmt.Sprintf("%q: want \"*\" or an origin as browsers send it, http(s)://host[:port] without a path", o)})
		}
	}
	return errs
}

// corsPolicy answers browsers calling /v1/connect from other origins. nil: CORS off (no CORS
// header ever, OPTIONS is 405).
type corsPolicy struct {
	any     bool
	allowed map[string]bool // normalOrigin
}

func newCORS(origins []string) *corsPolicy {
	if len(origins) == 0 {
		return nil
	}
	c := &corsPolicy{allowed: map[string]bool{}}
	for _, o := range origins {
		n, _ := normalOrigin(o) // validated
		if n == "*" {
			c.any = true
		}
		c.allowed[n] = true
	}
	return c
}

// allow reports whether a request's Origin header is allowed.
func (c *corsPolicy) allow(origin string) bool {
	if origin == "" {
		return false
	}
	if c.any {
		return true
	}
	n, ok := normalOrigin(origin)
	return ok && c.allowed[n]
}

// header sets the CORS headers of an answer to r: Vary: Origin always (the answer depends on
// it), and for an allowed origin Access-Control-Allow-Origin and the headers a page may read.
// It reports whether the origin is allowed.
func (c *corsPolicy) header(w http.ResponseWriter, r *http.Request) bool {
	h := w.Header()
	h.Add("Vary", "Origin")
	origin := r.Header.Get("Origin")
	if !c.allow(origin) {
		return false
	}
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Expose-Headers", "Retry-After")
	return true
}

// preflight answers OPTIONS /v1/connect: 204 with what a page may send for an allowed origin,
// 403 origin_not_allowed without any CORS header otherwise.
func (c *corsPolicy) preflight(w http.ResponseWriter, r *http.Request) {
	if !c.header(w, r) {
		msg := "origin not allowed (cors_origins)"
		if r.Header.Get("Origin") == "" {
			msg = "not a CORS preflight: no Origin header"
		}
		writeJSON(w, http.StatusForbidden, ErrorResponse{Error: CodeOriginNotAllowed, Message: msg})
		return
	}
	h := w.Header()
	h.Add("Vary", "Access-Control-Request-Method")
	h.Add("Vary", "Access-Control-Request-Headers")
	h.Set("Access-Control-Allow-Methods", http.MethodPost)
	h.Set("Access-Control-Allow-Headers", "Content-Type")
	h.Set("Access-Control-Max-Age", fmt.Sprint(CORSMaxAge))
	w.WriteHeader(http.StatusNoContent)
}
