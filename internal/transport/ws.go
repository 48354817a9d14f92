package transport

import (
	"context"
	"net"

	"github.com/pushwire/pushwire/internal/wsproto"
)

// upgrade performs the WebSocket client handshake on nc; on failure it closes nc.
func upgrade(ctx context.Context, proto string, nc net.Conn, addr string, o Options) (net.Conn, error) {
	path := o.Path
	if path == "" {
		path = DefaultPath
	}
	wc, err := wsproto.Client(ctx, nc, wsproto.ClientOptions{Host: addr, Path: path, Origin: o.Origin})
	if err != nil {
		_ = nc.Close()
		return nil, &HandshakeError{proto, addr + path, "websocket upgrade", err}
	}
	return wc, nil
}
