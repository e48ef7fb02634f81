// Command linkerd is the meshtls CLI.
package main

import (
	"os"

	"meshtls/cli"
)

func main() { os.Exit(cli.Main()) }
