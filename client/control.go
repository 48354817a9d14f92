package client

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

const maxControlAnswer = 1 << 20 // bytes of a control answer read at most

// ConnectInfo is control's answer to POST /v1/connect.
type ConnectInfo struct {
	Token     string        // opaque, sent in LOGIN
	ExpiresAt time.Time     // when the token stops being accepted
	Heartbeat time.Duration // heartbeat_s; the gateway's LOGIN_ACK hb takes precedence
	Endpoints []Endpoint    // in the order to try
	Reason    string        // why control chose these endpoints (its dispatch policy), if it says
}

// Endpoint is one gateway access point.
type Endpoint struct {
	Protocol string `json:"protocol"` // "tcp", "tls", "ws", "wss", "quic"
	Addr     string `json:"addr"`
}

// ControlError is a refusal from the control layer: an HTTP status other than 200 with its JSON
// {error, message}. Temporary is true for 408, 429 and 5xx: retrying later may succeed. Any other
// status (400, 401, 403…) is permanent for the Config that got it.
type ControlError struct {
	Status     int
	Code       string // the answer's "error"
	Message    string // the answer's "message"
	Temporary  bool
	RetryAfter time.Duration // the Retry-After header, when given in seconds
}

func (e *ControlError) Error() string {
	s := "client: control: " + strconv.Itoa(e.Status)
	if e.Code != "" {
		s += " " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

type connectRequest struct {
	App      string `json:"app"`
	Device   string `json:"device"`
	User     string `json:"user"`
	Platform string `json:"platform"`
	Network  string `json:"network"`
	SDK      string `json:"sdk"`
	TS       int64  `json:"ts"`
	Sign     string `json:"sign"`
}

type connectAnswer struct {
	Token      string     `json:"token"`
	ExpiresAt  int64      `json:"expires_at"`
	HeartbeatS int        `json:"heartbeat_s"`
	Endpoints  []Endpoint `json:"endpoints"`
	Reason     string     `json:"reason"`
	Error      string     `json:"error"`
	Message    string     `json:"message"`
}

// FetchToken makes only the control call of a connection: POST <ControlURL>/v1/connect, signed
// with cfg.Secret. It returns a *ControlError when control answers with an error status; other
// errors are network failures or a malformed answer.
func FetchToken(ctx context.Context, cfg Config) (*ConnectInfo, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return fetchToken(ctx, &cfg)
}

// sign is the proof of app membership: lowercase hex HMAC-SHA256(secret,
// app "\n" device "\n" user "\n" ts).
func sign(secret, app, device, user string, ts int64) string {
	m := hmac.New(sha256.New, []byte(secret))
	b := make([]byte, 0, len(app)+len(device)+len(user)+24)
	b = append(b, app...)
	b = append(b, '\n')
	b = append(b, device...)
	b = append(b, '\n')
	b = append(b, user...)
	b = append(b, '\n')
	b = strconv.AppendInt(b, ts, 10)
	m.Write(b)
	return hex.EncodeToString(m.Sum(nil))
}

func fetchToken(ctx context.Context, cfg *Config) (*ConnectInfo, error) {
	ts := time.Now().Unix()
	body, err := json.Marshal(connectRequest{
		App: cfg.App, Device: cfg.Device, User: cfg.User,
		Platform: cfg.Platform, Network: cfg.Network, SDK: cfg.SDK,
		TS: ts, Sign: sign(cfg.Secret, cfg.App, cfg.Device, cfg.User, ts),
	})
	if err != nil {
		return nil, &opError{"control", err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, cfg.ControlURL+"/v1/connect", bytes.NewReader(body))
	if err != nil {
		return nil, &opError{"control", err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, &opError{"control", err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxControlAnswer+1))
	if err != nil {
		return nil, &opError{"control", fmt.Errorf("reading the answer: %w", err)}
	}
	if len(data) > maxControlAnswer {
		return nil, &opError{"control", fmt.Errorf("answer over %d bytes", maxControlAnswer)}
	}
	var a connectAnswer
	jerr := json.Unmarshal(data, &a)
	if resp.StatusCode != http.StatusOK {
		// The JSON error body is best effort: a proxy may answer with anything.
		ce := &ControlError{Status: resp.StatusCode, Code: a.Error, Message: a.Message}
		ce.Temporary = resp.StatusCode == http.StatusRequestTimeout ||
			resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			ce.RetryAfter = time.Duration(s) * time.Second
		}
		return nil, ce
	}
	switch {
	case jerr != nil:
		return nil, &opError{"control", fmt.Errorf("malformed answer: %w", jerr)}
	case a.Token == "":
		return nil, &opError{"control", errors.New("answer has no token")}
	}
	info := &ConnectInfo{
		Token:     a.Token,
		Heartbeat: time.Duration(a.HeartbeatS) * time.Second,
		Endpoints: a.Endpoints,
		Reason:    a.Reason,
	}
	if a.ExpiresAt > 0 {
		info.ExpiresAt = time.Unix(a.ExpiresAt, 0)
	}
	if info.Heartbeat < 0 {
		info.Heartbeat = 0
	}
	return info, nil
}
