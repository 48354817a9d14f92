package all

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/pushwire/pushwire/engines"
)

var updateDoc = flag.Bool("update-doc", false, "rewrite the engine options table in docs/engines.md")

const (
	docPath  = "../../docs/engines.md"
	docBegin = "<!-- engine-options: begin -->"
	docEnd   = "<!-- engine-options: end -->"
)

// optionsTable is the Markdown table of every registered engine's options.
func optionsTable() string {
	var b strings.Builder
	b.WriteString("| engine | key | type | default | what it sets |\n| --- | --- | --- | --- | --- |\n")
	for _, name := range engines.Names() {
		opts, err := engines.Describe(name)
		if err != nil {
			panic(err)
		}
		if len(opts) == 0 {
			fmt.Fprintf(&b, "| %s | — | | | no options |\n", name)
		}
		for _, o := range opts {
			typ := o.Want()
			if o.Type == engines.OptEnum {
				typ = "one of " + strings.Join(o.Values, ", ")
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s | `%s` | %s |\n", name, o.Key, typ, o.Default, strings.ReplaceAll(o.Help, "|", "\\|"))
		}
	}
	return b.String()
}

// TestEngineDocOptions checks the options table of docs/engines.md against the engines'
// declarations, so the documentation and the code cannot drift apart.
func TestEngineDocOptions(t *testing.T) {
	raw, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	i, j := strings.Index(doc, docBegin), strings.Index(doc, docEnd)
	if i < 0 || j < i {
		t.Fatalf("%s: no %q ... %q block", docPath, docBegin, docEnd)
	}
	want := docBegin + "\n" + optionsTable() + docEnd
	got := doc[i : j+len(docEnd)]
	if got == want {
		return
	}
	if *updateDoc {
		if err := os.WriteFile(docPath, []byte(doc[:i]+want+doc[j+len(docEnd):]), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: options table rewritten", docPath)
		return
	}
	t.Errorf("%s: the options table differs from the engines' declarations; run go test ./engines/all/ -update-doc. Want:\n%s", docPath, want)
}

// TestEveryEngineRegistered: the four stream engines and the QUIC engine are linked in, each
// with its options declared; quic carries QUIC only, the others every stream transport.
func TestEveryEngineRegistered(t *testing.T) {
	names := engines.Names()
	if strings.Join(names, ",") != "gnet,nbio,netpoll,quic,std" {
		t.Fatalf("registered %v", names)
	}
	for _, n := range names {
		ts, err := engines.Transports(n)
		want := strings.Join(engines.StreamTransports, ",")
		if n == "quic" {
			want = engines.TransportQUIC
		}
		if err != nil || strings.Join(ts, ",") != want {
			t.Errorf("%s: transports %v, %v; want %s", n, ts, err, want)
		}
	}
	for _, n := range names {
		if opts, err := engines.Describe(n); err != nil || len(opts) == 0 {
			t.Errorf("%s: options %v, %v", n, opts, err)
		}
	}
}
