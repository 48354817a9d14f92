package gateway

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pushwire/pushwire/core/frame"
)

// The bus message codec. A message between instances is binary and versioned:
//
//	version (1 byte, busVersion) | kind (1 byte) | origin (string) | request (uvarint) | kind's fields
//
// A string or byte run is a uvarint length and its bytes; a list is a uvarint count and its
// items. Every length is checked against what remains and against its bound, so decoding
// garbage returns an error and never panics or allocates past the input's size.
const busVersion = 1

// Bus message kinds.
const (
	busPush       byte = 1 // a push for the receiver's connections
	busReport     byte = 2 // a receiver's counts for a push, to its origin
	busKick       byte = 3 // close a device's older connection (GOAWAY EVICTED)
	busMembership byte = 4 // a membership API call for devices the receiver holds
)

var busKindNames = map[byte]string{busPush: "push", busReport: "report", busKick: "kick", busMembership: "membership"}

// Push target kinds.
const (
	targetConns   byte = 1 // connections by ID and generation (registry mode: from a look-up)
	targetDevices byte = 2 // devices by ID (broadcast mode)
	targetUsers   byte = 3 // every connection of each user
	targetGroup   byte = 4 // every member of a group
	targetAll     byte = 5 // every connection of the app
)

// Bounds of a bus message's fields.
const (
	maxBusString = 1024
	maxBusList   = maxPushTargets
)

// connRef names one connection: its ID on the receiver and the generation the route entry
// carried, so a receiver can tell a live connection from a stale entry.
type connRef struct {
	Conn, Gen uint64
}

// busMsg is one decoded bus message; which fields are set depends on Kind.
type busMsg struct {
	Kind    byte
	Origin  string // the instance that sent it
	Request uint64 // the origin's request ID (push, report, membership); 0: none

	// push, kick, membership
	App string
	// push
	ID       string
	Biz      uint16
	Flags    uint8
	TTLMs    uint64
	Target   byte
	Group    string // push to a group; the membership op's group
	Devices  []string
	Users    []string
	Conns    []connRef
	Payload  []byte
	ReportTo string // the instance that wants the report; "": none
	// report
	Delivered, Offline, Stale, Failed uint64
	// kick
	Device string
	Conn   connRef // the connection the newer one replaced; Gen is the newer connection's
	// membership
	In bool
}

// errBusMsg wraps every decode error.
var errBusMsg = errors.New("gateway: bad bus message")

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrs(b []byte, list []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(list)))
	for _, s := range list {
		b = appendStr(b, s)
	}
	return b
}

// encodeBus encodes m.
func encodeBus(m *busMsg) []byte {
	size := 64 + len(m.Origin) + len(m.App) + len(m.ID) + len(m.Group) + len(m.Payload) + len(m.Device) + 20*len(m.Conns)
	for _, s := range m.Devices {
		size += len(s) + 2
	}
	for _, s := range m.Users {
		size += len(s) + 2
	}
	b := make([]byte, 0, size)
	b = append(b, busVersion, m.Kind)
	b = appendStr(b, m.Origin)
	b = binary.AppendUvarint(b, m.Request)
	switch m.Kind {
	case busPush:
		b = appendStr(b, m.App)
		b = appendStr(b, m.ID)
		b = binary.BigEndian.AppendUint16(b, m.Biz)
		b = append(b, m.Flags)
		b = binary.AppendUvarint(b, m.TTLMs)
		b = appendStr(b, m.ReportTo)
		b = append(b, m.Target)
		switch m.Target {
		case targetConns:
			b = binary.AppendUvarint(b, uint64(len(m.Conns)))
			for _, c := range m.Conns {
				b = binary.AppendUvarint(b, c.Conn)
				b = binary.AppendUvarint(b, c.Gen)
			}
		case targetDevices:
			b = appendStrs(b, m.Devices)
		case targetUsers:
			b = appendStrs(b, m.Users)
		case targetGroup:
			b = appendStr(b, m.Group)
		}
		b = binary.AppendUvarint(b, uint64(len(m.Payload)))
		b = append(b, m.Payload...)
	case busReport:
		for _, v := range []uint64{m.Delivered, m.Offline, m.Stale, m.Failed} {
			b = binary.AppendUvarint(b, v)
		}
	case busKick:
		b = appendStr(b, m.App)
		b = appendStr(b, m.Device)
		b = binary.AppendUvarint(b, m.Conn.Conn)
		b = binary.AppendUvarint(b, m.Conn.Gen)
	case busMembership:
		b = appendStr(b, m.App)
		b = appendStr(b, m.Group)
		in := byte(0)
		if m.In {
			in = 1
		}
		b = append(b, in)
		b = appendStrs(b, m.Devices)
	}
	return b
}

// busReader reads a message's fields, remembering the first error.
type busReader struct {
	b   []byte
	err error
}

func (r *busReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errBusMsg, what)
	}
}

func (r *busReader) byte1(what string) byte {
	if r.err != nil || len(r.b) < 1 {
		r.fail(what + ": short")
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *busReader) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.fail(what + ": bad varint")
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *busReader) bytes(what string, limit int) []byte {
	n := r.uvarint(what)
	if r.err != nil {
		return nil
	}
	if n > uint64(limit) || n > uint64(len(r.b)) {
		r.fail(fmt.Sprintf("%s: length %d over %d or the %d bytes left", what, n, limit, len(r.b)))
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *busReader) str(what string) string { return string(r.bytes(what, maxBusString)) }

// count reads a list length: at most limit, and at most one item per remaining byte (every item
// takes at least one byte), so a forged count cannot make the decoder allocate.
func (r *busReader) count(what string, limit int) int {
	n := r.uvarint(what)
	if r.err != nil {
		return 0
	}
	if n > uint64(limit) || n > uint64(len(r.b)) {
		r.fail(fmt.Sprintf("%s: count %d over %d or the %d bytes left", what, n, limit, len(r.b)))
		return 0
	}
	return int(n)
}

func (r *busReader) strs(what string) []string {
	n := r.count(what, maxBusList)
	if n == 0 {
		return nil
	}
	out := make([]string, 0, n)
	for range n {
		s := r.str(what)
		if r.err != nil {
			return nil
		}
		out = append(out, s)
	}
	return out
}

// decodeBus decodes one bus message. Payload aliases data.
func decodeBus(data []byte) (*busMsg, error) {
	r := &busReader{b: data}
	if v := r.byte1("version"); r.err == nil && v != busVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", errBusMsg, v, busVersion)
	}
	m := &busMsg{Kind: r.byte1("kind")}
	m.Origin = r.str("origin")
	m.Request = r.uvarint("request")
	if r.err != nil {
		return nil, r.err
	}
	switch m.Kind {
	case busPush:
		m.App = r.str("app")
		m.ID = r.str("id")
		if len(r.b) < 3 {
			r.fail("biz and flags: short")
			return nil, r.err
		}
		m.Biz = binary.BigEndian.Uint16(r.b)
		m.Flags = r.b[2]
		r.b = r.b[3:]
		m.TTLMs = r.uvarint("ttl")
		m.ReportTo = r.str("report to")
		m.Target = r.byte1("target")
		switch m.Target {
		case targetConns:
			n := r.count("conns", maxBusList)
			if n > 0 {
				m.Conns = make([]connRef, 0, n)
			}
			for range n {
				c := connRef{Conn: r.uvarint("conn"), Gen: r.uvarint("gen")}
				if r.err != nil {
					break
				}
				m.Conns = append(m.Conns, c)
			}
		case targetDevices:
			m.Devices = r.strs("devices")
		case targetUsers:
			m.Users = r.strs("users")
		case targetGroup:
			m.Group = r.str("group")
		case targetAll:
		default:
			r.fail(fmt.Sprintf("target kind %d", m.Target))
		}
		m.Payload = r.bytes("payload", frame.MaxBodyLimit)
		if r.err == nil && m.Biz == 0 {
			r.fail("biz 0")
		}
	case busReport:
		m.Delivered = r.uvarint("delivered")
		m.Offline = r.uvarint("offline")
		m.Stale = r.uvarint("stale")
		m.Failed = r.uvarint("failed")
	case busKick:
		m.App = r.str("app")
		m.Device = r.str("device")
		m.Conn = connRef{Conn: r.uvarint("conn"), Gen: r.uvarint("gen")}
	case busMembership:
		m.App = r.str("app")
		m.Group = r.str("group")
		switch in := r.byte1("in"); in {
		case 0, 1:
			m.In = in == 1
		default:
			r.fail(fmt.Sprintf("in %d", in))
		}
		m.Devices = r.strs("devices")
	default:
		r.fail(fmt.Sprintf("kind %d", m.Kind))
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail(fmt.Sprintf("%d trailing bytes", len(r.b)))
	}
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}
