package main

import (
	"github.com/spf13/cobra"

	"meshtls/internal/version"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "controller",
		Short:         "The meshtls control plane",
		Version:       version.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newCACmd())
	root.AddCommand(newDestinationCmd())
	root.AddCommand(newTapCmd())
	return root
}
