// Package cli is the only package that knows about cobra, flags, terminals
// and exit codes. Each command parses its flags into an options struct and
// hands plain values to an engine package.
package cli

import (
	"fmt"

	"github.com/spf13/cobra"
)

// Main runs the CLI with the process's arguments and returns the exit code.
func Main() int {
	io := System()
	root := NewRootCmd(NewFactory(io))
	err := root.Execute()
	code, line := exitCode(err)
	if line != "" {
		fmt.Fprintln(io.ErrOut, line)
	}
	return code
}

// NewRootCmd builds the command tree around f.
func NewRootCmd(f *Factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "linkerd",
		Short: "linkerd manages and observes a service mesh with automatic mutual TLS",
		Long: `linkerd manages and observes a service mesh with automatic mutual TLS.

It installs the control plane and its certificate authority, injects proxies
into workloads, and shows how much of your traffic is encrypted.`,
		Example: `  # How much traffic to each authority is encrypted?
  linkerd stat authority -n emojivoto

  # The same from a recorded capture, no cluster needed
  linkerd stat authority -n emojivoto --capture builtin:emojivoto`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(f.IO.Out)
	root.SetErr(f.IO.ErrOut)
	root.SetIn(f.IO.In)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })

	pf := root.PersistentFlags()
	f.KubeFlags.AddFlags(pf)
	// Keep only the kubectl flags that mean something here; the rest of
	// ConfigFlags' set stays hidden but functional for kubectl habits.
	for _, name := range []string{"as", "as-group", "as-uid", "as-user-extra", "cache-dir", "certificate-authority", "client-certificate", "client-key", "cluster", "insecure-skip-tls-verify", "password", "request-timeout", "server", "tls-server-name", "token", "user", "username", "disable-compression"} {
		if fl := pf.Lookup(name); fl != nil {
			fl.Hidden = true
		}
	}
	pf.StringVarP(&f.LinkerdNamespace, "linkerd-namespace", "L", f.LinkerdNamespace, "namespace of the linkerd control plane")
	_ = root.RegisterFlagCompletionFunc("namespace", namespaceCompletion(f))

	root.AddCommand(
		newVersionCmd(f),
		newCompletionCmd(f),
		newStatCmd(f, nil),
		newTapCmd(f, nil),
		newCaptureCmd(f),
		newInstallCmd(f), newInjectCmd(f), newCACmd(f),
		newCheckCmd(f, nil),
		newTLSCmd(f),
		newDashboardCmd(f),
	)
	return root
}
