package frame

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestProtocolDocAgrees checks the frame-type and code tables of docs/protocol.md against the
// codec's constants, so the documentation and the code cannot drift apart.
func TestProtocolDocAgrees(t *testing.T) {
	f, err := os.Open("../../docs/protocol.md")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	types := map[Type]string{}
	codes := map[Code]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			section = strings.TrimPrefix(line, "## ")
			continue
		}
		if !strings.HasPrefix(line, "| ") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "| "), " | ")
		if len(cells) < 2 {
			continue
		}
		switch section {
		case "Frame types":
			v, err := strconv.ParseUint(strings.TrimPrefix(cells[0], "0x"), 16, 8)
			if err != nil {
				continue // the header row
			}
			types[Type(v)] = cells[1]
		case "Codes":
			v, err := strconv.ParseUint(cells[0], 10, 8)
			if err != nil {
				continue
			}
			codes[Code(v)] = cells[1]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(types) != int(NumTypes)-1 {
		t.Errorf("docs list %d frame types, the codec %d", len(types), NumTypes-1)
	}
	for ty := TypeLogin; ty < NumTypes; ty++ {
		if types[ty] != ty.String() {
			t.Errorf("type 0x%02X: docs say %q, codec %q", uint8(ty), types[ty], ty.String())
		}
	}
	if len(codes) != NumCodes {
		t.Errorf("docs list %d codes, the codec %d", len(codes), NumCodes)
	}
	for c := Code(0); c < NumCodes; c++ {
		if codes[c] != c.String() {
			t.Errorf("code %d: docs say %q, codec %q", c, codes[c], c.String())
		}
	}
}
