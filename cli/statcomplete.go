package cli

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"meshtls/stat"
)

// completionTimeout bounds how long a shell waits on the cluster for
// completions; without an answer it offers nothing rather than hang.
const completionTimeout = 3 * time.Second

// namespaceCompletion offers the cluster's namespaces for -n.
func namespaceCompletion(f *Factory) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return clusterNames(cmd, f, stat.KindNamespace, "", toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// statCompletion offers resource types, then names from the cluster:
// "deploy/<TAB>" and "deploy <TAB>" list the deployments of the namespace.
func statCompletion(f *Factory) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		noFiles := cobra.ShellCompDirectiveNoFileComp
		ns := f.Namespace()
		if all, _ := cmd.Flags().GetBool("all-namespaces"); all {
			ns = ""
		}
		if typ, _, ok := strings.Cut(toComplete, "/"); ok {
			kind, err := stat.ParseKind(typ)
			if err != nil {
				return nil, noFiles
			}
			var out []string
			for _, n := range clusterNames(cmd, f, kind, ns, "") {
				out = append(out, typ+"/"+n)
			}
			return out, noFiles
		}
		if len(args) == 0 {
			return stat.KindNames(), noFiles
		}
		if strings.Contains(args[0], "/") {
			// TYPE/NAME form: more TYPE/NAMEs, starting with a type.
			var out []string
			for _, k := range stat.KindNames() {
				out = append(out, k+"/")
			}
			return out, noFiles | cobra.ShellCompDirectiveNoSpace
		}
		kind, err := stat.ParseKind(args[0])
		if err != nil {
			return nil, noFiles
		}
		return clusterNames(cmd, f, kind, ns, toComplete), noFiles
	}
}

func clusterNames(cmd *cobra.Command, f *Factory, kind stat.Kind, ns, prefix string) []string {
	client, err := f.KubeClient()
	if err != nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
	defer cancel()
	names, err := stat.ResourceNames(ctx, client, kind, ns)
	if err != nil {
		return nil
	}
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, prefix) {
			out = append(out, n)
		}
	}
	return out
}
