package wsproto

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// ClientOptions are what a client sends in its upgrade request.
type ClientOptions struct {
	Host       string // Host header (default: nc's remote address)
	Path       string // default "/ws"
	Origin     string // optional Origin header
	MaxMessage int    // largest message accepted from the server (default 16 MiB)
}

// DefaultClientMaxMessage is ClientOptions.MaxMessage's default.
const DefaultClientMaxMessage = 16 << 20

// maxResponseHeader bounds the server's handshake answer.
const maxResponseHeader = 16 << 10

// Client errors.
var (
	ErrTextMessage   = errors.New("wsproto: text message from the server (binary expected)")
	ErrMessageTooBig = errors.New("wsproto: message from the server over MaxMessage")
	ErrProtocol      = errors.New("wsproto: protocol violation by the server")
)

// Conn is the connection Client returns: a byte stream over binary messages (see Client).
type Conn struct {
	nc  net.Conn
	br  *bufio.Reader
	max int

	rmu       sync.Mutex // Read
	remaining int64      // payload bytes left in the current data frame
	inMessage bool       // a fragmented message is under way
	msgLen    int64      // bytes of the current message so far
	rerr      error      // sticky read error

	wmu     sync.Mutex // writes: one frame at a time
	wbuf    []byte
	closed  bool
	peer    uint16 // the code of the server's close frame (0: none yet)
	peerMsg string
}

// Client performs the client handshake on nc (bounded by ctx) and returns a net.Conn over it:
// each Write sends b as one masked binary message (one protocol frame per Write; safe for
// concurrent use, messages never interleave); Read returns the payloads of the server's binary
// messages as one byte stream (a text message is an error); pings are answered with pongs; a
// close frame is answered and then Read returns io.EOF; Close sends a close frame (1000) and
// closes nc. SetDeadline & co apply to nc. The net.Conn returned is a *Conn.
func Client(ctx context.Context, nc net.Conn, o ClientOptions) (net.Conn, error) {
	if o.Path == "" {
		o.Path = "/ws"
	}
	if o.Host == "" {
		o.Host = nc.RemoteAddr().String()
	}
	if o.MaxMessage <= 0 {
		o.MaxMessage = DefaultClientMaxMessage
	}
	if !strings.HasPrefix(o.Path, "/") || strings.ContainsAny(o.Path, " \r\n") {
		return nil, fmt.Errorf("wsproto: ClientOptions.Path %q: must start with / and hold no spaces", o.Path)
	}
	if strings.ContainsAny(o.Host, " \r\n") || strings.ContainsAny(o.Origin, "\r\n") {
		return nil, errors.New("wsproto: ClientOptions.Host or Origin holds a line break or space")
	}
	if d, ok := ctx.Deadline(); ok {
		if err := nc.SetDeadline(d); err != nil {
			return nil, err
		}
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	c, err := handshake(nc, o)
	if !stop() || ctx.Err() != nil {
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("wsproto: handshake: %w", err)
	}
	if err != nil {
		return nil, err
	}
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return nil, err
	}
	return c, nil
}

func handshake(nc net.Conn, o ClientOptions) (*Conn, error) {
	var raw [16]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, err
	}
	key := base64.StdEncoding.EncodeToString(raw[:])
	req := "GET " + o.Path + " HTTP/1.1\r\nHost: " + o.Host +
		"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: " + key +
		"\r\nSec-WebSocket-Version: 13\r\n"
	if o.Origin != "" {
		req += "Origin: " + o.Origin + "\r\n"
	}
	req += "\r\n"
	if _, err := io.WriteString(nc, req); err != nil {
		return nil, fmt.Errorf("wsproto: handshake: %w", err)
	}
	br := bufio.NewReaderSize(nc, 4096)
	status, hdr, err := readResponse(br)
	if err != nil {
		return nil, fmt.Errorf("wsproto: handshake: %w", err)
	}
	if status != 101 {
		return nil, fmt.Errorf("wsproto: handshake refused: HTTP %d %s", status, strings.TrimSpace(hdr["_body"]))
	}
	switch {
	case !hasToken(hdr["upgrade"], "websocket"):
		return nil, errors.New("wsproto: handshake: answer lacks Upgrade: websocket")
	case !hasToken(hdr["connection"], "upgrade"):
		return nil, errors.New("wsproto: handshake: answer lacks Connection: upgrade")
	case hdr["sec-websocket-accept"] != AcceptKey(key):
		return nil, errors.New("wsproto: handshake: wrong Sec-WebSocket-Accept")
	}
	return &Conn{nc: nc, br: br, max: o.MaxMessage}, nil
}

// readResponse reads the status line and headers (names lower-cased); for a refusal with a
// short body it reads the body into "_body".
func readResponse(br *bufio.Reader) (int, map[string]string, error) {
	total := 0
	readLine := func() (string, error) {
		var sb strings.Builder
		for {
			chunk, isPrefix, err := br.ReadLine()
			if err != nil {
				return "", err
			}
			total += len(chunk) + 2
			if total > maxResponseHeader {
				return "", errors.New("answer header too large")
			}
			sb.Write(chunk)
			if !isPrefix {
				return sb.String(), nil
			}
		}
	}
	line, err := readLine()
	if err != nil {
		return 0, nil, err
	}
	proto, rest, _ := strings.Cut(line, " ")
	code, _, _ := strings.Cut(rest, " ")
	status, err := strconv.Atoi(code)
	if !strings.HasPrefix(proto, "HTTP/1.") || err != nil {
		return 0, nil, fmt.Errorf("malformed status line %q", line)
	}
	hdr := map[string]string{}
	for {
		l, err := readLine()
		if err != nil {
			return 0, nil, err
		}
		if l == "" {
			break
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return 0, nil, fmt.Errorf("malformed header line %q", l)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		hdr[k] = joinList(hdr[k], strings.TrimSpace(v))
	}
	if status != 101 {
		if n, err := strconv.Atoi(hdr["content-length"]); err == nil && n > 0 && n <= 1024 {
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err == nil {
				hdr["_body"] = string(body)
			}
		}
	}
	return status, hdr, nil
}

// CloseStatus is the code and reason of the server's close frame once Read has met it (code 0
// before; CloseNoStatus for a close frame without a code).
func (c *Conn) CloseStatus() (code uint16, reason string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.peer, c.peerMsg
}

// Read reads the payloads of the server's binary messages as one stream.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.rerr != nil {
		return 0, c.rerr
	}
	if len(p) == 0 {
		return 0, nil
	}
	for c.remaining == 0 {
		if err := c.nextFrame(); err != nil {
			c.rerr = err
			return 0, err
		}
	}
	if int64(len(p)) > c.remaining {
		p = p[:c.remaining]
	}
	n, err := c.br.Read(p)
	c.remaining -= int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		c.rerr = err
		if n > 0 {
			return n, nil
		}
	}
	return n, err
}

// nextFrame reads frame headers, answering control frames, until a data frame with payload.
func (c *Conn) nextFrame() error {
	var hb [MaxHeaderLen]byte
	if _, err := io.ReadFull(c.br, hb[:2]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return err
		}
		return err // io.EOF at a frame boundary: the server closed without a close frame
	}
	need := 2
	switch hb[1] & 0x7F {
	case 126:
		need += 2
	case 127:
		need += 8
	}
	if hb[1]&mask != 0 {
		need += 4
	}
	if _, err := io.ReadFull(c.br, hb[2:need]); err != nil {
		return unexpected(err)
	}
	h, _, err := ParseHeader(hb[:need])
	if err != nil {
		return err
	}
	switch {
	case h.Masked:
		return fmt.Errorf("%w: masked frame", ErrProtocol)
	case h.Rsv != 0:
		return fmt.Errorf("%w: RSV bits set", ErrProtocol)
	case IsReserved(h.Op):
		return fmt.Errorf("%w: reserved opcode %#x", ErrProtocol, h.Op)
	case IsControl(h.Op) && (!h.Fin || h.Length > MaxControlPayload):
		return fmt.Errorf("%w: fragmented or oversized control frame", ErrProtocol)
	}
	if IsControl(h.Op) {
		var pb [MaxControlPayload]byte
		payload := pb[:h.Length]
		if _, err := io.ReadFull(c.br, payload); err != nil {
			return unexpected(err)
		}
		switch h.Op {
		case OpPing:
			return c.writeFrame(OpPong, payload)
		case OpPong:
			return nil
		default: // OpClose
			code, reason, err := ParseClosePayload(payload)
			if err != nil {
				_ = c.sendClose(CloseProtocolError)
				return fmt.Errorf("%w: %v", ErrProtocol, err)
			}
			c.wmu.Lock()
			c.peer, c.peerMsg = code, reason
			c.wmu.Unlock()
			answer := code
			if code == CloseNoStatus {
				answer = CloseNormal
			}
			_ = c.sendClose(answer)
			return io.EOF
		}
	}
	switch h.Op {
	case OpText:
		_ = c.sendClose(CloseUnsupportedData)
		return ErrTextMessage
	case OpBinary:
		if c.inMessage {
			return fmt.Errorf("%w: new message inside a fragmented one", ErrProtocol)
		}
		c.msgLen = 0
	default: // OpContinuation
		if !c.inMessage {
			return fmt.Errorf("%w: continuation without a message", ErrProtocol)
		}
	}
	c.inMessage = !h.Fin
	c.msgLen += h.Length
	if c.msgLen > int64(c.max) {
		_ = c.sendClose(CloseTooBig)
		return ErrMessageTooBig
	}
	c.remaining = h.Length
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Write sends b as one masked binary message.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.writeFrame(OpBinary, b); err != nil {
		return 0, err
	}
	return len(b), nil
}

// writeChunk bounds the masking buffer kept by a connection.
const writeChunk = 32 << 10

func (c *Conn) writeFrame(op byte, b []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	return c.writeLocked(op, b)
}

func (c *Conn) writeLocked(op byte, b []byte) error {
	var key [4]byte
	if _, err := rand.Read(key[:]); err != nil {
		return err
	}
	if c.wbuf == nil {
		c.wbuf = make([]byte, 0, 512)
	}
	buf := AppendHeader(c.wbuf[:0], Header{Fin: true, Op: op, Masked: true, Mask: key, Length: int64(len(b))})
	pos := 0
	for {
		take := min(len(b), max(writeChunk-len(buf), 0))
		if take < len(b) && cap(buf) < writeChunk {
			buf = append(make([]byte, 0, writeChunk), buf...)
		}
		start := len(buf)
		buf = append(buf, b[:take]...)
		pos = MaskBytes(key, pos, buf[start:])
		b = b[take:]
		if _, err := c.nc.Write(buf); err != nil {
			return err
		}
		if cap(buf) <= writeChunk {
			c.wbuf = buf[:0]
		}
		if len(b) == 0 {
			return nil
		}
		buf = c.wbuf[:0]
	}
}

// sendClose sends a close frame with code once (best effort, bounded in time).
func (c *Conn) sendClose(code uint16) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	_ = c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	return c.writeLocked(OpClose, AppendClosePayload(nil, code, ""))
}

// Close sends a close frame (1000) and closes the connection.
func (c *Conn) Close() error {
	_ = c.sendClose(CloseNormal)
	return c.nc.Close()
}

// LocalAddr is nc's.
func (c *Conn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr is nc's.
func (c *Conn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetDeadline is nc's.
func (c *Conn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// SetReadDeadline is nc's.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline is nc's.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }
