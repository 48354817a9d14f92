package loadgen

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// redisInfo runs INFO section on the Redis server at addr and returns its fields. It speaks the
// protocol itself: one command, with no client library to configure for it.
func redisInfo(ctx context.Context, addr, section string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("loadgen: redis %s: %w", addr, err)
	}
	defer func() { _ = conn.Close() }()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	cmd := fmt.Sprintf("*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n", len(section), section)
	if _, err := io.WriteString(conn, cmd); err != nil {
		return nil, fmt.Errorf("loadgen: redis %s: INFO: %w", addr, err)
	}
	info, err := readBulk(bufio.NewReader(conn))
	if err != nil {
		return nil, fmt.Errorf("loadgen: redis %s: INFO %s: %w", addr, section, err)
	}
	return parseInfo(info), nil
}

// readBulk reads one RESP bulk string ($<len>\r\n<bytes>\r\n); an error reply is an error.
func readBulk(r *bufio.Reader) (string, error) {
	head, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	head = strings.TrimRight(head, "\r\n")
	switch {
	case strings.HasPrefix(head, "-"):
		return "", fmt.Errorf("server error: %s", head[1:])
	case !strings.HasPrefix(head, "$"):
		return "", fmt.Errorf("unexpected reply %q", head)
	}
	n, err := strconv.Atoi(head[1:])
	if err != nil || n < 0 || n > 16<<20 {
		return "", fmt.Errorf("bad bulk length %q", head)
	}
	buf := make([]byte, n+2)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// parseInfo reads INFO's "key:value" lines (comments and blank lines skipped).
func parseInfo(s string) map[string]string {
	out := map[string]string{}
	for line := range strings.Lines(s) {
		line = strings.TrimRight(line, "\r\n")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

func parseUint(s string) uint64 {
	v, _ := strconv.ParseUint(s, 10, 64)
	return v
}

// redisCommands is the server's total_commands_processed, -1 without Redis.
func (c *coord) redisCommands(ctx context.Context) (int64, error) {
	if c.cfg.RedisAddr == "" {
		return -1, nil
	}
	info, err := redisInfo(ctx, c.cfg.RedisAddr, "stats")
	if err != nil {
		return -1, err
	}
	v, err := strconv.ParseInt(info["total_commands_processed"], 10, 64)
	if err != nil {
		return -1, fmt.Errorf("loadgen: redis %s: INFO stats has no total_commands_processed", c.cfg.RedisAddr)
	}
	return v, nil
}
