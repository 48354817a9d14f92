package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/quic-go/quic-go"
)

// dialQUIC opens a UDP socket (bound to o.LocalAddr's IP when given), a QUIC connection to addr
// over it and one bidirectional stream.
func dialQUIC(ctx context.Context, addr string, o Options) (net.Conn, error) {
	laddr, err := localUDPAddr(o.LocalAddr)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("transport: quic address %q: %w", addr, err)
	}
	ips, err := net.DefaultResolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("transport: quic address %q: %w", addr, err)
	}
	raddr, err := net.ResolveUDPAddr("udp", net.JoinHostPort(ips[0].IP.String(), port))
	if err != nil {
		return nil, fmt.Errorf("transport: quic address %q: %w", addr, err)
	}
	udp, err := net.ListenUDP("udp", laddr)
	if err != nil {
		return nil, fmt.Errorf("transport: quic socket: %w", err)
	}
	tr := &quic.Transport{Conn: udp}
	qc, err := tr.Dial(ctx, raddr, tlsConfig(addr, o, ALPN), &quic.Config{
		MaxIdleTimeout:  quicIdleTimeout,
		KeepAlivePeriod: quicKeepAlive,
	})
	if err != nil {
		_ = tr.Close()
		_ = udp.Close()
		return nil, &HandshakeError{QUIC, addr, "quic handshake", err}
	}
	st, err := qc.OpenStreamSync(ctx)
	if err != nil {
		_ = qc.CloseWithError(0, "")
		_ = tr.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("transport: quic stream to %s: %w", addr, err)
	}
	return &quicConn{Stream: st, qc: qc, tr: tr, udp: udp}, nil
}

// localUDPAddr parses Options.LocalAddr: empty, an IP, or ip:port.
func localUDPAddr(s string) (*net.UDPAddr, error) {
	if s == "" {
		return &net.UDPAddr{}, nil
	}
	if ip := net.ParseIP(s); ip != nil {
		return &net.UDPAddr{IP: ip}, nil
	}
	a, err := net.ResolveUDPAddr("udp", s)
	if err != nil || a.IP == nil {
		return nil, fmt.Errorf("transport: Options.LocalAddr %q is not an IP address or ip:port", s)
	}
	return a, nil
}

// quicConn is a net.Conn over one QUIC stream. Close closes the stream, the connection, the
// QUIC transport and the UDP socket, once.
type quicConn struct {
	*quic.Stream
	qc   *quic.Conn
	tr   *quic.Transport
	udp  *net.UDPConn
	once sync.Once
	err  error
}

func (c *quicConn) LocalAddr() net.Addr  { return c.qc.LocalAddr() }
func (c *quicConn) RemoteAddr() net.Addr { return c.qc.RemoteAddr() }

// Read returns io.EOF when the server ends the stream or closes the connection with code 0 (no
// error), and net.ErrClosed after Close.
func (c *quicConn) Read(p []byte) (int, error) {
	n, err := c.Stream.Read(p)
	return n, c.mapErr(err)
}

func (c *quicConn) Write(p []byte) (int, error) {
	n, err := c.Stream.Write(p)
	return n, c.mapErr(err)
}

// mapErr reports a read or write cut short by our own Close as net.ErrClosed, and the server's
// close without an error (code 0) as io.EOF, as a TCP connection would.
func (c *quicConn) mapErr(err error) error {
	if err == nil {
		return nil
	}
	var ae *quic.ApplicationError
	if errors.As(err, &ae) && ae.ErrorCode == 0 {
		if ae.Remote {
			return io.EOF
		}
		return net.ErrClosed
	}
	return err
}

func (c *quicConn) Close() error {
	c.once.Do(func() {
		c.err = c.Stream.Close()
		if err := c.qc.CloseWithError(0, ""); c.err == nil {
			c.err = err
		}
		_ = c.tr.Close()
		if err := c.udp.Close(); c.err == nil {
			c.err = err
		}
	})
	return c.err
}

var _ net.Conn = (*quicConn)(nil)
