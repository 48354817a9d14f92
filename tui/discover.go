package tui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Discover asks the control layer's admin port (pushwire control --admin) which gateways it
// watches, and returns their /metrics URLs. controlAdmin is that port's base URL or host:port.
func Discover(ctx context.Context, hc *http.Client, controlAdmin string) ([]string, error) {
	base := strings.TrimSuffix(controlAdmin, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/instances", nil)
	if err != nil {
		return nil, fmt.Errorf("tui: control %q: %w", controlAdmin, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("tui: asking control for instances: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("tui: asking control for instances: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("tui: control answered %s for /v1/instances (is --control its --admin address?)", resp.Status)
	}
	var ans struct {
		Instances []struct {
			Health string `json:"health"`
		} `json:"instances"`
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("tui: control's /v1/instances: %w", err)
	}
	var urls []string
	for _, in := range ans.Instances {
		u, err := MetricsURL(in.Health)
		if err != nil {
			return nil, fmt.Errorf("tui: control lists %q: %w", in.Health, err)
		}
		urls = append(urls, u)
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("tui: control watches no gateway (give its endpoints health URLs: --endpoint-health)")
	}
	return urls, nil
}
