package floor

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/pushwire/pushwire/core/frame"
)

// Handler serves the public HTTP API, as the gateway's:
//
//	POST /v1/push                 push to devices, a group or every connection of the app
//	PUT|DELETE /v1/groups/{group}/members   add or remove devices' connections
//	GET  /v1/stats                JSON statistics (?gc=1 only on the admin listener)
//	GET  /healthz                 200 while the process serves
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/push", s.handlePush)
	mux.HandleFunc("/v1/groups/{group}/members", s.handleMembers)
	mux.HandleFunc("/v1/stats", func(w http.ResponseWriter, r *http.Request) { s.handleStats(w, r, false) })
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// AdminHandler serves GET /v1/stats, where ?gc=1 first runs a full collection and returns the
// freed memory to the OS (see Stats). Serve it on the operators' listener only.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/stats", func(w http.ResponseWriter, r *http.Request) { s.handleStats(w, r, true) })
	return mux
}

// pushBody is the gateway's push API body. users, ack and ttl_ms are known fields the floor
// refuses, with a message that says why.
type pushBody struct {
	App        string   `json:"app,omitempty"`
	Biz        int      `json:"biz"`
	Devices    []string `json:"devices,omitempty"`
	Users      []string `json:"users,omitempty"`
	Group      string   `json:"group,omitempty"`
	Broadcast  bool     `json:"broadcast,omitempty"`
	Payload    *string  `json:"payload,omitempty"`
	PayloadB64 *string  `json:"payload_b64,omitempty"`
	Ack        bool     `json:"ack,omitempty"`
	TTLMs      int64    `json:"ttl_ms,omitempty"`
}

// PushResult is the push API's answer, the gateway's fields: Targets = Delivered + Forwarded +
// Offline + Failed, Forwarded always 0 (the floor is one instance).
type PushResult struct {
	ID        string `json:"id"`
	Targets   int    `json:"targets"`
	Delivered int    `json:"delivered"`
	Forwarded int    `json:"forwarded"`
	Offline   int    `json:"offline"`
	Failed    int    `json:"failed"`
}

// MembersResult answers a membership change, as the gateway's (without a cluster).
type MembersResult struct {
	Group     string `json:"group"`
	Changed   int    `json:"changed"`
	Unchanged int    `json:"unchanged"`
	Offline   int    `json:"offline"`
	Size      int    `json:"size"`
}

type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: code, Message: msg})
}

// authApp checks the push key and answers 401 itself when it is missing or unknown.
func (s *Server) authApp(w http.ResponseWriter, r *http.Request) (*appState, bool) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || key == "" {
		writeError(w, http.StatusUnauthorized, "unauthorized", "Authorization: Bearer <push key> required")
		return nil, false
	}
	id, ok := s.keys[key]
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized", "unknown push key")
		return nil, false
	}
	return s.reg.apps[id], true
}

// decodeBody reads one JSON object of at most limit bytes without unknown fields into v, or
// answers 413 too_large or 400 bad_json itself.
func decodeBody(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("body over %d bytes", mbe.Limit))
			return false
		}
		writeError(w, http.StatusBadRequest, "bad_json", "malformed body: "+err.Error())
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "bad_json", "trailing data after the JSON object")
		return false
	}
	return true
}

func (s *Server) handlePush(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use POST")
		return
	}
	app, ok := s.authApp(w, r)
	if !ok {
		return
	}
	var b pushBody
	if !decodeBody(w, r, int64(maxPushTargets*(maxIDLen+4)+2*s.cfg.MaxBody+4096), &b) {
		return
	}
	if b.App != "" && b.App != app.id {
		writeError(w, http.StatusForbidden, "forbidden", "the push key is not for app "+strconv.Quote(b.App))
		return
	}
	payload, status, msg := s.checkPush(&b)
	if status != 0 {
		code := "bad_request"
		if status == http.StatusRequestEntityTooLarge {
			code = "too_large"
		}
		writeError(w, status, code, msg)
		return
	}
	writeJSON(w, http.StatusOK, s.push(app, &b, payload))
}

// checkPush validates a push body and returns its payload; a non-zero status is an error.
func (s *Server) checkPush(b *pushBody) (payload []byte, status int, msg string) {
	bad := func(m string) ([]byte, int, string) { return nil, http.StatusBadRequest, m }
	if b.Biz < 1 || b.Biz > 65535 {
		return bad("biz must be 1..65535")
	}
	kinds := 0
	for _, set := range []bool{len(b.Devices) > 0, len(b.Users) > 0, b.Group != "", b.Broadcast} {
		if set {
			kinds++
		}
	}
	switch {
	case kinds != 1:
		return bad("name exactly one of devices, users, group, broadcast")
	case len(b.Users) > 0:
		return bad("users: the floor knows no users (it does not verify tokens); name devices")
	case b.Ack:
		return bad("ack: the floor keeps no message for PUSH_ACK (at-least-once is not served)")
	case b.TTLMs != 0:
		return bad("ttl_ms applies to at-least-once pushes, which the floor does not serve")
	case len(b.Group) > maxGroupLen:
		return bad(fmt.Sprintf("group is 1..%d bytes", maxGroupLen))
	case len(b.Devices) > maxPushTargets:
		return bad(fmt.Sprintf("at most %d targets per push", maxPushTargets))
	}
	for _, id := range b.Devices {
		if id == "" || len(id) > maxIDLen {
			return bad(fmt.Sprintf("target IDs are 1..%d bytes", maxIDLen))
		}
	}
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
	if len(payload) > s.cfg.MaxBody {
		return nil, http.StatusRequestEntityTooLarge, fmt.Sprintf("payload over the max body of %d bytes", s.cfg.MaxBody)
	}
	return payload, 0, ""
}

// targetPool recycles the target lists of pushes.
var targetPool = sync.Pool{New: func() any { return new([]*conn) }}

// push delivers one checked push: the frame is encoded once, and every target gets it with its
// own seq.
func (s *Server) push(app *appState, b *pushBody, payload []byte) PushResult {
	res := PushResult{ID: s.cfg.Node + "-" + strconv.FormatUint(s.msgSeq.Add(1), 36)}
	tp := targetPool.Get().(*[]*conn)
	targets := (*tp)[:0]
	s.reg.mu.RLock()
	switch {
	case len(b.Devices) > 0:
		for _, d := range b.Devices {
			targets = append(targets, app.devices[d]) // nil: offline
		}
	case b.Group != "":
		if set := app.groups[b.Group]; set != nil {
			targets = append(targets, set.list...)
		}
	case b.Broadcast:
		targets = append(targets, app.all.list...)
	}
	s.reg.mu.RUnlock()
	res.Targets = len(targets)
	msg := encodePush(uint16(b.Biz), res.ID, b.Group, payload)
	res.Delivered, res.Offline, res.Failed = s.deliver(msg, targets)
	clear(targets)
	*tp = targets[:0]
	targetPool.Put(tp)
	s.pushes.Add(1)
	return res
}

// encodePush encodes a PUSH frame with seq 0: deliver sets each connection's seq.
func encodePush(biz uint16, id, group string, payload []byte) []byte {
	metaLen := 1 + 2 + 2 + len(id)
	if group != "" {
		metaLen += 1 + 5 + 2 + len(group)
	}
	msg := make([]byte, 0, frame.HeaderLen+metaLen+len(payload))
	msg = frame.AppendHeader(msg, frame.Header{Type: frame.TypePush, Biz: biz, MetaLen: uint16(metaLen), BodyLen: uint32(len(payload))})
	msg = frame.AppendMetaString(msg, "id", id)
	if group != "" {
		msg = frame.AppendMetaString(msg, "group", group)
	}
	return append(msg, payload...)
}

// fanoutChunk is the fewest targets worth a writer goroutine of their own.
const fanoutChunk = 512

// deliver writes msg to every target (nil ones are offline), split across up to one writer
// goroutine per event loop for large fan-outs (each with its own copy of msg, whose seq it
// patches).
func (s *Server) deliver(msg []byte, targets []*conn) (delivered, offline, failed int) {
	writers := min(len(s.loops), len(targets)/fanoutChunk)
	if writers <= 1 {
		return deliverChunk(msg, targets)
	}
	type tally struct{ d, o, f int }
	out := make([]tally, writers)
	per := (len(targets) + writers - 1) / writers
	var wg sync.WaitGroup
	msgs := make([][]byte, writers) // copied before any writer patches its seq
	msgs[0] = msg
	for i := 1; i < writers; i++ {
		msgs[i] = append([]byte(nil), msg...)
	}
	for i := range writers {
		chunk := targets[i*per : min((i+1)*per, len(targets))]
		m := msgs[i]
		wg.Go(func() {
			out[i].d, out[i].o, out[i].f = deliverChunk(m, chunk)
		})
	}
	wg.Wait()
	for _, t := range out {
		delivered, offline, failed = delivered+t.d, offline+t.o, failed+t.f
	}
	return delivered, offline, failed
}

func deliverChunk(msg []byte, targets []*conn) (delivered, offline, failed int) {
	for _, c := range targets {
		switch {
		case c == nil:
			offline++
		case c.send(msg, true) == outDelivered:
			delivered++
		default:
			failed++
		}
	}
	return delivered, offline, failed
}

func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut && r.Method != http.MethodDelete {
		w.Header().Set("Allow", "PUT, DELETE")
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use PUT to add members, DELETE to remove them")
		return
	}
	app, ok := s.authApp(w, r)
	if !ok {
		return
	}
	group := r.PathValue("group")
	if group == "" || len(group) > maxGroupLen {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("group is 1..%d bytes", maxGroupLen))
		return
	}
	var b struct {
		Devices []string `json:"devices"`
	}
	if !decodeBody(w, r, int64(maxPushTargets*(maxIDLen+4)+4096), &b) {
		return
	}
	if len(b.Devices) == 0 || len(b.Devices) > maxPushTargets {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("devices: 1..%d device IDs", maxPushTargets))
		return
	}
	for _, id := range b.Devices {
		if id == "" || len(id) > maxIDLen {
			writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("device IDs are 1..%d bytes", maxIDLen))
			return
		}
	}
	writeJSON(w, http.StatusOK, s.reg.members(app, group, b.Devices, r.Method == http.MethodPut))
}

// members adds (in) or removes the devices' connections to or from group, in one hold of the
// lock, so no connection can log out between its lookup and the change.
func (r *registry) members(app *appState, group string, devices []string, in bool) MembersResult {
	res := MembersResult{Group: group}
	r.mu.Lock()
	defer r.mu.Unlock()
	set := app.groups[group]
	for _, d := range devices {
		c := app.devices[d]
		if c == nil {
			res.Offline++
			continue
		}
		i := -1
		if set != nil {
			i = c.in(set)
		}
		switch {
		case in && i < 0:
			if set == nil {
				set = &memberSet{name: group}
				app.groups[group] = set
			}
			set.add(c) // the business's own call: not bounded
			res.Changed++
		case !in && i >= 0:
			set.remove(c, i)
			res.Changed++
		default:
			res.Unchanged++
		}
	}
	if set != nil {
		res.Size = len(set.list)
		if res.Size == 0 {
			delete(app.groups, group)
		}
	}
	return res
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request, admin bool) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "use GET")
		return
	}
	gc := r.URL.Query().Get("gc")
	switch {
	case gc == "" || gc == "0":
	case gc != "1":
		writeError(w, http.StatusBadRequest, "bad_request", "gc must be 0 or 1")
		return
	case !admin:
		writeError(w, http.StatusForbidden, "forbidden", "gc=1 is served on the admin listener only")
		return
	}
	writeJSON(w, http.StatusOK, s.Stats(gc == "1"))
}
