package gateway

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Push API limits.
const (
	maxPushTargets = 100_000
	maxIDLen       = 128
	maxTTLMs       = 24 * 3600 * 1000
)

// Handler serves the instance's public HTTP API:
//
//	POST /v1/push     push to devices, users, a group or every connection (Authorization: Bearer <push key>)
//	PUT|DELETE /v1/groups/{group}/members   add or remove devices' live connections
//	GET  /v1/stats    JSON statistics; ?gc=1 is refused here (403): see AdminHandler
//	GET  /healthz     200 while the process serves
//	GET  /readyz      200 while serving, 503 while draining
//	GET  /metrics     Prometheus
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/push", n.handlePush)
	mux.HandleFunc("/v1/stats", func(w http.ResponseWriter, r *http.Request) { n.handleStats(w, r, false) })
	mux.HandleFunc("/v1/groups/{group}/members", n.handleMembers)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if n.draining.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = io.WriteString(w, "draining\n")
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	mux.Handle("/metrics", promhttp.HandlerFor(n.m.reg, promhttp.HandlerOpts{}))
	return mux
}

// pushBody is the JSON body of POST /v1/push.
type pushBody struct {
	App        string   `json:"app,omitempty"`
	Biz        int      `json:"biz"`
	Devices    []string `json:"devices,omitempty"`
	Users      []string `json:"users,omitempty"`
	Group      string   `json:"group,omitempty"`
	Broadcast  bool     `json:"broadcast,omitempty"`
	Payload    *string  `json:"payload,omitempty"`     // UTF-8 text
	PayloadB64 *string  `json:"payload_b64,omitempty"` // or bytes, standard base64
	Ack        bool     `json:"ack,omitempty"`
	TTLMs      int64    `json:"ttl_ms,omitempty"`
}

type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func (n *Node) writeError(w http.ResponseWriter, status int, code, msg string) {
	n.m.pushRequests.WithLabelValues(strconv.Itoa(status)).Inc()
	writeJSON(w, status, apiError{Error: code, Message: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (n *Node) handlePush(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		n.writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	app, ok := n.authApp(w, r)
	if !ok {
		return
	}
	// Room for every target ID at its longest plus the payload in base64.
	var b pushBody
	if !n.decodeBody(w, r, int64(maxPushTargets*(maxIDLen+4)+2*n.cfg.MaxBody+4096), &b) {
		return
	}
	if b.App != "" && b.App != app {
		n.writeError(w, http.StatusForbidden, "forbidden", "the push key is not for app "+strconv.Quote(b.App))
		return
	}
	req, status, code, msg := n.checkPush(&b, app)
	if status != 0 {
		n.writeError(w, status, code, msg)
		return
	}
	res, err := n.Push(req)
	if err != nil {
		n.writeError(w, http.StatusBadRequest, "bad_request", err.Error())
		return
	}
	n.m.pushRequests.WithLabelValues("200").Inc()
	writeJSON(w, http.StatusOK, res)
}

// checkPush validates a push body. A zero status means it is good.
func (n *Node) checkPush(b *pushBody, app string) (req *PushRequest, status int, code, msg string) {
	bad := func(m string) (*PushRequest, int, string, string) {
		return nil, http.StatusBadRequest, "bad_request", m
	}
	if b.Biz < 1 || b.Biz > 65535 {
		return bad("biz must be 1..65535")
	}
	kinds := 0
	for _, set := range []bool{len(b.Devices) > 0, len(b.Users) > 0, b.Group != "", b.Broadcast} {
		if set {
			kinds++
		}
	}
	if kinds != 1 {
		return bad("name exactly one of devices, users, group, broadcast")
	}
	if len(b.Group) > maxGroupLen {
		return bad(fmt.Sprintf("group is 1..%d bytes", maxGroupLen))
	}
	if b.TTLMs < 0 || b.TTLMs > maxTTLMs {
		return bad(fmt.Sprintf("ttl_ms must be 0..%d", maxTTLMs))
	}
	if b.TTLMs != 0 && !b.Ack {
		return bad("ttl_ms applies to at-least-once pushes: set ack")
	}
	if len(b.Devices)+len(b.Users) > maxPushTargets {
		return bad(fmt.Sprintf("at most %d targets per push", maxPushTargets))
	}
	for _, list := range [][]string{b.Devices, b.Users} {
		for _, id := range list {
			if id == "" || len(id) > maxIDLen {
				return bad(fmt.Sprintf("target IDs are 1..%d bytes", maxIDLen))
			}
		}
	}
	var payload []byte
	switch {
	case b.Payload != nil && b.PayloadB64 != nil:
		return bad("give payload or payload_b64, not both")
	case b.Payload != nil:
		payload = []byte(*b.Payload)
	case b.PayloadB64 != nil:
		p, err := base64.StdEncoding.DecodeString(*b.PayloadB64)
		if err != nil {
			return bad("payload_b64: " + err.Error())
		}
		payload = p
	}
	if len(payload) > n.cfg.MaxBody {
		return nil, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("payload over the max body of %d bytes", n.cfg.MaxBody)
	}
	return &PushRequest{App: app, Biz: uint16(b.Biz), Devices: b.Devices, Users: b.Users, Group: b.Group,
		Broadcast: b.Broadcast, Payload: payload, Ack: b.Ack, TTL: time.Duration(b.TTLMs) * time.Millisecond}, 0, "", ""
}

// AdminHandler serves what only operators may reach, for the admin listener (beside /debug/pprof):
//
//	GET  /v1/stats    JSON statistics; ?gc=1 first runs a full garbage collection (see Stats)
//
// A forced collection stops the world: on the public port anyone could stall the instance with it.
func (n *Node) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/stats", func(w http.ResponseWriter, r *http.Request) { n.handleStats(w, r, true) })
	return mux
}

func (n *Node) handleStats(w http.ResponseWriter, r *http.Request, admin bool) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeJSON(w, http.StatusMethodNotAllowed, apiError{Error: "method_not_allowed", Message: "use GET"})
		return
	}
	gc := r.URL.Query().Get("gc")
	switch {
	case gc == "" || gc == "0":
	case gc != "1":
		writeJSON(w, http.StatusBadRequest, apiError{Error: "bad_request", Message: "gc must be 0 or 1"})
		return
	case !admin:
		writeJSON(w, http.StatusForbidden, apiError{Error: "forbidden", Message: "gc=1 is served on the admin listener only"})
		return
	}
	writeJSON(w, http.StatusOK, n.Stats(gc == "1"))
}

// membersBody is the JSON body of PUT and DELETE /v1/groups/{group}/members.
type membersBody struct {
	Devices []string `json:"devices"`
}

// membersResult answers a membership change: Changed counts the connections added or removed
// here, Unchanged those already (not) members, Forwarded the devices held on other instances
// (the change is sent to them), Offline the devices with no live connection, Failed those whose
// instance could not be reached. Size is the group's members on this instance.
type membersResult struct {
	Group     string `json:"group"`
	Changed   int    `json:"changed"`
	Unchanged int    `json:"unchanged"`
	Forwarded int    `json:"forwarded,omitempty"`
	Offline   int    `json:"offline"`
	Failed    int    `json:"failed,omitempty"`
	Size      int    `json:"size"`
}

// authApp checks the push key and answers the error itself when it is missing or unknown.
func (n *Node) authApp(w http.ResponseWriter, r *http.Request) (string, bool) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		n.writeError(w, http.StatusUnauthorized, "unauthorized", "Authorization: Bearer <push key> required")
		return "", false
	}
	app, ok := n.apps.AppByPushKey(key)
	if !ok {
		n.writeError(w, http.StatusUnauthorized, "unauthorized", "unknown push key")
		return "", false
	}
	return app, true
}

func (n *Node) handleMembers(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut && r.Method != http.MethodDelete {
		w.Header().Set("Allow", "PUT, DELETE")
		n.writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use PUT to add members, DELETE to remove them")
		return
	}
	app, ok := n.authApp(w, r)
	if !ok {
		return
	}
	group := r.PathValue("group")
	if group == "" || len(group) > maxGroupLen {
		n.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("group is 1..%d bytes", maxGroupLen))
		return
	}
	var b membersBody
	if !n.decodeBody(w, r, int64(maxPushTargets*(maxIDLen+4)+4096), &b) {
		return
	}
	if len(b.Devices) == 0 || len(b.Devices) > maxPushTargets {
		n.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("devices: 1..%d device IDs", maxPushTargets))
		return
	}
	for _, id := range b.Devices {
		if id == "" || len(id) > maxIDLen {
			n.writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("device IDs are 1..%d bytes", maxIDLen))
			return
		}
	}
	res := membersResult{Group: group}
	in := r.Method == http.MethodPut
	var misses []string
	for _, d := range b.Devices {
		// The device's membership follows it: recorded whether it is online, here or elsewhere.
		n.recordMembership(app, d, group, in)
		s := n.table.ByDevice(app, d)
		if s == nil {
			misses = append(misses, d)
			continue
		}
		var changed bool
		if r.Method == http.MethodPut {
			changed, _ = n.groups.Join(s, group, 0) // the business's own call: not bounded
		} else {
			changed = n.groups.Leave(s, group)
		}
		if changed {
			res.Changed++
		} else {
			res.Unchanged++
		}
	}
	if len(misses) > 0 && n.clustered() {
		res.Forwarded, res.Offline, res.Failed = n.forwardMembership(app, group, in, misses)
	} else {
		res.Offline = len(misses)
	}
	res.Size = n.groups.Size(app, group)
	n.m.pushRequests.WithLabelValues("200").Inc()
	writeJSON(w, http.StatusOK, res)
}

// decodeBody reads exactly one JSON object of at most limit bytes, without unknown fields, into
// v. On bad input it answers the error itself (413 too_large, 400 bad_json) and returns false.
func (n *Node) decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			n.writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", mbe.Limit))
			return false
		}
		n.writeError(w, http.StatusBadRequest, "bad_json", "malformed body: "+err.Error())
		return false
	}
	if dec.More() {
		n.writeError(w, http.StatusBadRequest, "bad_json", "trailing data after the JSON object")
		return false
	}
	return true
}
