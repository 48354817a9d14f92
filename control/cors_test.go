package control

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// call sends method to url with the given headers and body.
func call(t *testing.T, method, url, body string, hdr map[string]string) answer {
	t.Helper()
	hr, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{resp.StatusCode, resp.Header, b}
}

func noCORSHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	for k := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Errorf("%s: CORS header %s: %s", what, k, h.Get(k))
		}
	}
}

func preflightHeaders(origin string) map[string]string {
	return map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST",
		"Access-Control-Request-Headers": "content-type"}
}

func TestCORS(t *testing.T) {
	cfg := parseTestConfig(t, allFive, `cors_origins: ["https://app.example", "http://127.0.0.1:8000", "https://Shop.Example:443"]`+"\n")
	ts := newTestServer(t, cfg)
	url := ts.URL + "/v1/connect"
	good := signed(demoSecret, req("demo", "dev-1", "", "web", now.Unix()))

	for _, origin := range []string{"https://app.example", "http://127.0.0.1:8000", "https://shop.example"} {
		// The preflight of an allowed origin.
		a := call(t, http.MethodOptions, url, "", preflightHeaders(origin))
		if a.status != http.StatusNoContent {
			t.Fatalf("%s: preflight %d %s", origin, a.status, a.body)
		}
		for k, want := range map[string]string{
			"Access-Control-Allow-Origin":  origin,
			"Access-Control-Allow-Methods": "POST",
			"Access-Control-Allow-Headers": "Content-Type",
			"Access-Control-Max-Age":       "600",
		} {
			if got := a.header.Get(k); got != want {
				t.Errorf("%s: preflight %s %q, want %q", origin, k, got, want)
			}
		}
		if !strings.Contains(strings.Join(a.header.Values("Vary"), ","), "Origin") {
			t.Errorf("%s: preflight Vary %v", origin, a.header.Values("Vary"))
		}
		// The connect itself, and its errors, carry Access-Control-Allow-Origin.
		for _, c := range []struct {
			body   string
			status int
		}{{good, 200}, {signed("wrong", req("demo", "dev-1", "", "web", now.Unix())), 401}, {"{", 400}} {
			a = call(t, http.MethodPost, url, c.body, map[string]string{"Origin": origin, "Content-Type": "application/json"})
			if a.status != c.status || a.header.Get("Access-Control-Allow-Origin") != origin ||
				a.header.Get("Vary") != "Origin" || a.header.Get("Access-Control-Expose-Headers") != "Retry-After" {
				t.Errorf("%s: POST %d, Allow-Origin %q, Vary %q, Expose %q; want %d", origin, a.status,
					a.header.Get("Access-Control-Allow-Origin"), a.header.Get("Vary"), a.header.Get("Access-Control-Expose-Headers"), c.status)
			}
		}
		a = call(t, http.MethodGet, url, "", map[string]string{"Origin": origin})
		if a.status != 405 || a.header.Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("%s: GET %d, Allow-Origin %q", origin, a.status, a.header.Get("Access-Control-Allow-Origin"))
		}
	}

	// Disallowed origins: no CORS header, and 403 on preflight.
	for _, origin := range []string{"https://evil.example", "https://app.example.evil", "http://app.example", "null", "https://app.example:8443"} {
		a := call(t, http.MethodOptions, url, "", preflightHeaders(origin))
		checkAnswer(t, a, http.StatusForbidden, CodeOriginNotAllowed)
		noCORSHeaders(t, "preflight from "+origin, a.header)
		a = call(t, http.MethodPost, url, good, map[string]string{"Origin": origin})
		if a.status != 200 { // CORS is the browser's rule: the connect itself is answered
			t.Errorf("%s: POST %d", origin, a.status)
		}
		noCORSHeaders(t, "POST from "+origin, a.header)
	}
	// A preflight without Origin: 403; a POST without Origin (no browser): no CORS header.
	checkAnswer(t, call(t, http.MethodOptions, url, "", nil), http.StatusForbidden, CodeOriginNotAllowed)
	a := call(t, http.MethodPost, url, good, nil)
	checkAnswer(t, a, 200, "")
	noCORSHeaders(t, "POST without Origin", a.header)
}

func TestCORSAny(t *testing.T) {
	ts := newTestServer(t, testConfig(t), WithCORSOrigins([]string{"*"}))
	for _, origin := range []string{"https://anything.example", "http://localhost:3000", "null"} {
		a := call(t, http.MethodOptions, ts.URL+"/v1/connect", "", preflightHeaders(origin))
		if a.status != http.StatusNoContent || a.header.Get("Access-Control-Allow-Origin") != origin {
			t.Errorf("%s: preflight %d, Allow-Origin %q", origin, a.status, a.header.Get("Access-Control-Allow-Origin"))
		}
	}
}

// Without cors_origins: no CORS header ever, and OPTIONS is a method not allowed.
func TestCORSOff(t *testing.T) {
	ts := newTestServer(t, testConfig(t))
	a := call(t, http.MethodOptions, ts.URL+"/v1/connect", "", preflightHeaders("https://app.example"))
	checkAnswer(t, a, http.StatusMethodNotAllowed, CodeMethodNotAllowed)
	noCORSHeaders(t, "preflight", a.header)
	a = call(t, http.MethodPost, ts.URL+"/v1/connect", signed(demoSecret, req("demo", "d", "", "web", now.Unix())),
		map[string]string{"Origin": "https://app.example"})
	checkAnswer(t, a, 200, "")
	noCORSHeaders(t, "POST", a.header)
}

func TestCORSOriginsValidated(t *testing.T) {
	for _, tt := range []struct{ origins, want string }{
		{`["https://app.example/"]`, `cors_origins[0]: "https://app.example/": want "*" or an origin`},
		{`["*", "app.example"]`, `cors_origins[1]: "app.example"`},
		{`["ftp://app.example"]`, `cors_origins[0]: "ftp://app.example"`},
		{`["https://app.example/path"]`, `cors_origins[0]`},
		{`["https://app.example?x=1"]`, `cors_origins[0]`},
		{`["https://user@app.example"]`, `cors_origins[0]`},
		{`["https://app.example:0"]`, `cors_origins[0]`},
		{`["https://app.example:99999"]`, `cors_origins[0]`},
		{`[""]`, `cors_origins[0]: ""`},
	} {
		_, err := ParseConfig([]byte(baseYAML + "cors_origins: " + tt.origins + "\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v, want …%s…", tt.origins, err, tt.want)
		}
	}
	_, err := NewServer(testConfig(t), WithCORSOrigins([]string{"https://ok.example", "bad"}))
	if err == nil || !strings.Contains(err.Error(), `WithCORSOrigins[1]: "bad"`) {
		t.Errorf("WithCORSOrigins: %v", err)
	}
	if err := CheckCORSOrigins("--cors-origins", []string{"https://a.example", "https://b.example/"}); err == nil ||
		!strings.Contains(err.Error(), `--cors-origins[1]: "https://b.example/"`) || !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("CheckCORSOrigins: %v", err)
	}
}

// End to end: a browser-like call with the example policy, CORS on, and a region.
func TestConnectPolicyEndToEnd(t *testing.T) {
	cfg := parseTestConfig(t, allFive, exampleDispatch, `
  gray: [{transport: ws, percent: 100}]
cors_origins: ["https://app.example"]
`)
	ts := newTestServer(t, cfg)
	r := req("demo", "browser-1", "", "web", now.Unix())
	r.Region = "eu-west"
	a := call(t, http.MethodPost, ts.URL+"/v1/connect", signed(demoSecret, r),
		map[string]string{"Origin": "https://app.example", "Content-Type": "application/json"})
	checkAnswer(t, a, 200, "")
	if a.header.Get("Access-Control-Allow-Origin") != "https://app.example" {
		t.Errorf("Allow-Origin %q", a.header.Get("Access-Control-Allow-Origin"))
	}
	var raw struct {
		Endpoints []map[string]any `json:"endpoints"`
		Reason    string           `json:"reason"`
	}
	if err := json.Unmarshal(a.body, &raw); err != nil {
		t.Fatal(err)
	}
	eps, _ := json.Marshal(raw.Endpoints)
	if string(eps) != `[{"addr":"gw:443","protocol":"wss"},{"addr":"gw:8080","protocol":"ws"}]` {
		t.Errorf("endpoints %s", eps)
	}
	b := GrayBucket("demo", "browser-1", "transport:ws")
	want := "rules[0] (platform web|miniapp): wss, ws; gray ws 100%: in (bucket " + itoa(b) +
		"); served: wss, ws; region eu-west: none there; configured endpoints: 5 of 5 serving"
	if raw.Reason != want {
		t.Errorf("reason\n got %q\nwant %q", raw.Reason, want)
	}
	// A region longer than the limit is refused, naming the field.
	r.Region = strings.Repeat("r", MaxInfoLen+1)
	a = do(t, http.MethodPost, ts.URL+"/v1/connect", signed(demoSecret, r))
	checkAnswer(t, a, 400, CodeInvalidField)
	if !strings.Contains(string(a.body), "region: 65 bytes") {
		t.Errorf("long region: %s", a.body)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}
