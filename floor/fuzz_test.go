package floor

import (
	"io"
	"log/slog"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/pushwire/pushwire/core/frame"
)

// FuzzFloorRead feeds a byte stream, cut in two reads at a chosen point, through a loop's read
// path: it never panics, keeps only the bytes of one partial frame, and a connection that
// broke the protocol takes nothing more.
func FuzzFloorRead(f *testing.F) {
	login := loginFrame("fz")
	ping := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypePing, Seq: 2}})
	join := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypeJoin, Biz: 4, Seq: 3}, Meta: frame.AppendMetaString(nil, "group", "g")})
	req := frame.Append(nil, &frame.Frame{Header: frame.Header{Type: frame.TypeRequest, Biz: 1, Seq: 4}, Body: []byte("body")})
	stream := append(append(append(append([]byte(nil), login...), ping...), join...), req...)
	f.Add(stream, uint16(0))
	f.Add(stream, uint16(7))
	f.Add(stream, uint16(len(login)+5))
	f.Add(append(append([]byte(nil), login...), "garbage"...), uint16(len(login)))
	f.Add(ping, uint16(3))
	f.Add(frame.AppendHeader(nil, frame.Header{Type: frame.TypeRequest, Biz: 1, BodyLen: 1 << 30}), uint16(10))
	s, err := New(Config{Listen: "127.0.0.1:0", Apps: []App{{ID: testApp, PushKey: testKey}}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		if len(in) > 32<<10 {
			in = in[:32<<10]
		}
		k := min(int(cut), len(in))
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = unix.Close(fds[1]) }()
		lp, err := newLoop(s, 99)
		if err != nil {
			t.Fatal(err)
		}
		defer lp.closeFds()
		lp.add(fds[0])
		c := lp.conns[fds[0]]
		defer func() {
			if lp.conns[fds[0]] == c {
				lp.close(c)
			}
		}()
		for _, part := range [][]byte{in[:k], in[k:]} {
			if len(part) == 0 {
				continue
			}
			writeAll(t, fds[1], part)
			lp.read(c)
			if lp.conns[fds[0]] != c {
				return // closed
			}
			if len(c.partial) >= s.lim.MaxFrame() {
				t.Fatalf("kept %d bytes, over a frame", len(c.partial))
			}
			c.mu.Lock()
			dead := c.dead
			c.mu.Unlock()
			if dead && c.partial != nil {
				t.Fatal("a dead connection keeps input")
			}
		}
	})
}
