package tui

import (
	"context"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestDiscover(t *testing.T) {
	cases := []struct {
		name, body string
		status     int
		want       []string
		err        string
	}{
		{"two gateways", `{"instances":[{"health":"http://127.0.0.1:7080"},{"health":"http://127.0.0.1:7081/"}]}`, 200,
			[]string{"http://127.0.0.1:7080/metrics", "http://127.0.0.1:7081/metrics"}, ""},
		{"none watched", `{"instances":[]}`, 200, nil, "watches no gateway"},
		{"not control", `<html>`, 200, nil, "/v1/instances"},
		{"client API port", `{"error":"x"}`, 404, nil, "--admin"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v1/instances" {
					w.WriteHeader(http.StatusNotFound)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			got, err := Discover(context.Background(), srv.Client(), strings.TrimPrefix(srv.URL, "http://"))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want one saying %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v %v, want %v", got, err, tc.want)
			}
		})
	}
}
