package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"meshtls/contract"
)

// Version is set at build time with -ldflags "-X meshtls/cli.Version=…".
var Version = "dev"

// unavailable is the server version when no control plane answers, as
// Linkerd prints it.
const unavailable = "unavailable"

func newVersionCmd(f *Factory) *cobra.Command {
	var (
		output     string
		clientOnly bool
		short      bool
	)
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the CLI and control-plane versions",
		Long: `Print the CLI's version and the version of the control plane installed in
the -L namespace (from its deployments' linkerd.io/created-by annotation).`,
		Example: `  linkerd version
  linkerd version --client --short
  linkerd version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch output {
			case "", "text", "json":
			default:
				return usageErrorf("unknown output format %q: use text or json", output)
			}
			info := map[string]string{"client": Version}
			if bi, ok := debug.ReadBuildInfo(); ok {
				info["go"] = bi.GoVersion
			}
			if !clientOnly {
				info["server"] = unavailable
				if client, err := f.KubeClient(); err == nil {
					ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
					if v, err := serverVersion(ctx, client, f.LinkerdNamespace); err == nil {
						info["server"] = v
					}
					cancel()
				}
			}
			if output == "json" {
				enc := json.NewEncoder(f.IO.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			if short {
				fmt.Fprintln(f.IO.Out, info["client"])
				if !clientOnly {
					fmt.Fprintln(f.IO.Out, info["server"])
				}
				return nil
			}
			fmt.Fprintf(f.IO.Out, "Client version: %s\n", info["client"])
			if !clientOnly {
				fmt.Fprintf(f.IO.Out, "Server version: %s\n", info["server"])
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	cmd.Flags().BoolVar(&clientOnly, "client", false, "print the client version only, without asking the cluster")
	cmd.Flags().BoolVar(&short, "short", false, "print the versions only")
	return cmd
}

// serverVersion reads the version `linkerd install` stamped on the control
// plane's deployments ("linkerd/cli VERSION" in linkerd.io/created-by).
func serverVersion(ctx context.Context, client kubernetes.Interface, ns string) (string, error) {
	list, err := client.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel})
	if err != nil {
		return "", err
	}
	for _, d := range list.Items {
		by := d.Spec.Template.Annotations[contract.CreatedByAnnotation]
		if v, ok := strings.CutPrefix(by, "linkerd/cli "); ok && v != "" {
			return v, nil
		}
	}
	return "", fmt.Errorf("no control plane in namespace %s", ns)
}
func newCompletionCmd(f *Factory) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish|powershell",
		Short: "Print a shell completion script",
		Example: `  # bash, for this shell
  source <(linkerd completion bash)

  # zsh, installed for good
  linkerd completion zsh > "${fpath[1]}/_linkerd"

  # fish
  linkerd completion fish > ~/.config/fish/completions/linkerd.fish

  # PowerShell
  linkerd completion powershell | Out-String | Invoke-Expression`,
		ValidArgs: []string{"bash", "zsh", "fish", "powershell"},
		Args:      cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(f.IO.Out, true)
			case "zsh":
				return root.GenZshCompletion(f.IO.Out)
			case "powershell":
				return root.GenPowerShellCompletionWithDesc(f.IO.Out)
			default:
				return root.GenFishCompletion(f.IO.Out, true)
			}
		},
	}
}
