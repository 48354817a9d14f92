// Command pushwire is the unified long-connection gateway and its workbench, one binary with a
// subcommand per role. Run "pushwire help" for the list.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "pushwire:", err)
		os.Exit(1)
	}
}
