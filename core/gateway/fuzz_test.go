package gateway

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzPushAPI feeds arbitrary bodies to POST /v1/push and PUT /v1/groups/{g}/members: every
// answer is 200 with a result or a 4xx JSON error {error, message}; nothing panics.
func FuzzPushAPI(f *testing.F) {
	for _, seed := range []string{
		`{"biz":1,"devices":["a","b"],"payload":"hi"}`,
		`{"biz":1,"users":["u"],"payload_b64":"aGk="}`,
		`{"biz":2,"group":"room","payload":"x","ack":true,"ttl_ms":1000}`,
		`{"biz":3,"broadcast":true,"payload":""}`,
		`{"devices":["d1","d2"]}`,
		`{"biz":0}`, `{"biz":70000,"devices":["a"]}`, `{"biz":1,"devices":[""]}`,
		`{"biz":1,"devices":["a"],"payload":"x","payload_b64":"eA=="}`,
		`{"biz":1,"devices":["a"]} {}`, `[]`, `null`, ``, `{"biz":1,"ttl_ms":-5,"devices":["a"]}`,
	} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	n := newNode(f, Config{Node: "fuzz"})
	h := n.Handler()
	f.Fuzz(func(t *testing.T, body string, members bool) {
		method, url := http.MethodPost, "/v1/push"
		if members {
			method, url = http.MethodPut, "/v1/groups/g/members"
		}
		req := httptest.NewRequest(method, url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer key")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var ans map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &ans); err != nil {
			t.Fatalf("status %d, body %q is not JSON", w.Code, w.Body.String())
		}
		switch {
		case w.Code == http.StatusOK:
		case w.Code >= 400 && w.Code < 500:
			if ans["error"] == nil || ans["message"] == nil {
				t.Fatalf("status %d without {error, message}: %v", w.Code, ans)
			}
		default:
			t.Fatalf("status %d for body %q", w.Code, body)
		}
	})
}
