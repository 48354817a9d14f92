package wsproto

import (
	"bytes"
	"encoding/base64"
	"strconv"
	"strings"
)

// Request is a parsed upgrade request.
type Request struct {
	Method, Path, Host, Origin, Key, Version, Protocols string
	Upgrade, Connection                                 string
}

// HandshakeError is a refused upgrade: Status is the HTTP status to answer (400, 403, 404,
// 405, 426, 431), Reason says why.
type HandshakeError struct {
	Status int
	Reason string
}

func (e *HandshakeError) Error() string {
	return "wsproto: upgrade refused: " + strconv.Itoa(e.Status) + " " + StatusText(e.Status) + ": " + e.Reason
}

func refuse(status int, reason string) *HandshakeError {
	return &HandshakeError{Status: status, Reason: reason}
}

// StatusText is the reason phrase of the HTTP statuses this package answers.
func StatusText(status int) string {
	switch status {
	case 101:
		return "Switching Protocols"
	case 400:
		return "Bad Request"
	case 403:
		return "Forbidden"
	case 404:
		return "Not Found"
	case 405:
		return "Method Not Allowed"
	case 408:
		return "Request Timeout"
	case 426:
		return "Upgrade Required"
	case 431:
		return "Request Header Fields Too Large"
	case 500:
		return "Internal Server Error"
	case 503:
		return "Service Unavailable"
	}
	return "Error"
}

var crlfcrlf = []byte("\r\n\r\n")

// ParseRequest parses an HTTP/1.1 upgrade request at the start of b, incrementally: n == 0 and a
// nil error mean the request is not complete yet (no "\r\n\r\n"); past maxHeader bytes without
// the end it returns a *HandshakeError with 431. On success n is the request's length in bytes.
// It checks method GET, HTTP/1.1, Upgrade: websocket, Connection: upgrade (token list),
// Sec-WebSocket-Key (16 bytes base64), Sec-WebSocket-Version 13 (else 426 with
// Sec-WebSocket-Version: 13 in the answer); every violation is a *HandshakeError (400 unless said).
// It never checks Path or Origin: the caller does (404, 403). Path is the request target's path,
// without its query.
func ParseRequest(b []byte, maxHeader int) (req Request, n int, err error) {
	end := bytes.Index(b, crlfcrlf)
	if end < 0 {
		if len(b) > maxHeader {
			return req, 0, refuse(431, "request header over "+strconv.Itoa(maxHeader)+" bytes")
		}
		return req, 0, nil
	}
	n = end + len(crlfcrlf)
	if n > maxHeader {
		return req, 0, refuse(431, "request header over "+strconv.Itoa(maxHeader)+" bytes")
	}
	head := b[:end]
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if err := parseRequestLine(line, &req); err != nil {
		return Request{}, 0, err
	}
	var seenHost, seenKey, seenVersion bool
	for len(rest) > 0 {
		var l []byte
		l, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		if len(l) == 0 {
			return Request{}, 0, refuse(400, "empty header line")
		}
		if l[0] == ' ' || l[0] == '\t' {
			return Request{}, 0, refuse(400, "obsolete header line folding")
		}
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok || len(name) == 0 || !isToken(name) {
			return Request{}, 0, refuse(400, "malformed header line")
		}
		v := string(bytes.Trim(value, " \t"))
		if !validFieldValue(v) {
			return Request{}, 0, refuse(400, "control character in header "+string(name))
		}
		switch {
		case equalFold(name, "Host"):
			if seenHost {
				return Request{}, 0, refuse(400, "Host header repeated")
			}
			seenHost, req.Host = true, v
		case equalFold(name, "Upgrade"):
			req.Upgrade = joinList(req.Upgrade, v)
		case equalFold(name, "Connection"):
			req.Connection = joinList(req.Connection, v)
		case equalFold(name, "Origin"):
			req.Origin = v
		case equalFold(name, "Sec-WebSocket-Key"):
			if seenKey {
				return Request{}, 0, refuse(400, "Sec-WebSocket-Key header repeated")
			}
			seenKey, req.Key = true, v
		case equalFold(name, "Sec-WebSocket-Version"):
			if seenVersion {
				return Request{}, 0, refuse(400, "Sec-WebSocket-Version header repeated")
			}
			seenVersion, req.Version = true, v
		case equalFold(name, "Sec-WebSocket-Protocol"):
			req.Protocols = joinList(req.Protocols, v)
		}
	}
	switch {
	case !seenHost:
		return Request{}, 0, refuse(400, "missing Host header")
	case !hasToken(req.Upgrade, "websocket"):
		return Request{}, 0, refuse(400, "missing Upgrade: websocket header")
	case !hasToken(req.Connection, "upgrade"):
		return Request{}, 0, refuse(400, "missing Connection: upgrade header")
	case !seenVersion || req.Version != "13":
		return Request{}, 0, refuse(426, "Sec-WebSocket-Version must be 13")
	case !seenKey:
		return Request{}, 0, refuse(400, "missing Sec-WebSocket-Key header")
	}
	if k, err := base64.StdEncoding.DecodeString(req.Key); err != nil || len(k) != 16 {
		return Request{}, 0, refuse(400, "Sec-WebSocket-Key is not 16 bytes in base64")
	}
	return req, n, nil
}

func parseRequestLine(line []byte, req *Request) error {
	method, rest, ok1 := bytes.Cut(line, []byte(" "))
	target, proto, ok2 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 || len(method) == 0 || len(target) == 0 || !isToken(method) {
		return refuse(400, "malformed request line")
	}
	req.Method = string(method)
	if string(proto) != "HTTP/1.1" {
		return refuse(400, "protocol must be HTTP/1.1")
	}
	if req.Method != "GET" {
		return refuse(405, "method must be GET")
	}
	t := string(target)
	for i := 0; i < len(t); i++ {
		if t[i] <= ' ' || t[i] == 0x7F {
			return refuse(400, "malformed request target")
		}
	}
	// absolute-form: scheme://authority/path
	if i := strings.Index(t, "://"); i > 0 && !strings.HasPrefix(t, "/") {
		t = t[i+3:]
		if j := strings.IndexByte(t, '/'); j >= 0 {
			t = t[j:]
		} else {
			t = "/"
		}
	}
	if !strings.HasPrefix(t, "/") {
		return refuse(400, "malformed request target")
	}
	if i := strings.IndexAny(t, "?#"); i >= 0 {
		t = t[:i]
	}
	req.Path = t
	return nil
}

func joinList(a, b string) string {
	if a == "" {
		return b
	}
	return a + ", " + b
}

// hasToken reports whether the comma-separated list holds tok (case-insensitive).
func hasToken(list, tok string) bool {
	for list != "" {
		var item string
		item, list, _ = strings.Cut(list, ",")
		if strings.EqualFold(strings.Trim(item, " \t"), tok) {
			return true
		}
	}
	return false
}

func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		c, d := b[i], s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= d && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return false
		}
	}
	return true
}

func isToken(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7F || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}

func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7F {
			return false
		}
	}
	return true
}

// AppendAccept appends the 101 Switching Protocols answer for key.
func AppendAccept(dst []byte, key string) []byte {
	dst = append(dst, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "...)
	dst = append(dst, AcceptKey(key)...)
	return append(dst, "\r\n\r\n"...)
}

// AppendRefusal appends an HTTP error answer for a refused upgrade (Connection: close,
// Content-Length, a one-line text body).
func AppendRefusal(dst []byte, e *HandshakeError) []byte {
	body := sanitize(e.Reason) + "\n"
	dst = append(dst, "HTTP/1.1 "...)
	dst = strconv.AppendInt(dst, int64(e.Status), 10)
	dst = append(dst, ' ')
	dst = append(dst, StatusText(e.Status)...)
	dst = append(dst, "\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	dst = strconv.AppendInt(dst, int64(len(body)), 10)
	dst = append(dst, "\r\n"...)
	if e.Status == 426 {
		dst = append(dst, "Sec-WebSocket-Version: 13\r\n"...)
	}
	dst = append(dst, "\r\n"...)
	return append(dst, body...)
}

// sanitize keeps a reason on one line.
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7F {
			return ' '
		}
		return r
	}, s)
}
