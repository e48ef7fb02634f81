// Command controller is the meshtls control plane. Each component is a
// subcommand so one image serves them all: `controller ca`, `controller
// destination`, `controller tap`.
package main

import (
	"fmt"
	"os"
	"strings"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		// One line, so a crash-looping pod's last log line says why.
		fmt.Fprintln(os.Stderr, "Error: "+strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
}
