package main

import (
	"github.com/spf13/cobra"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "controller",
		Short:         "The meshtls control plane",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newCACmd())
	root.AddCommand(newDestinationCmd())
	root.AddCommand(newTapCmd())
	return root
}
