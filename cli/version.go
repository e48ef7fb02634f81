package cli

import (
	"encoding/json"
	"fmt"
	"runtime/debug"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X meshtls/cli.Version=…".
var Version = "dev"

func newVersionCmd(f *Factory) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the CLI version",
		Example: `  linkerd version
  linkerd version -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := map[string]string{"client": Version}
			if bi, ok := debug.ReadBuildInfo(); ok {
				info["go"] = bi.GoVersion
			}
			switch output {
			case "", "text":
				fmt.Fprintf(f.IO.Out, "Client version: %s\n", info["client"])
			case "json":
				enc := json.NewEncoder(f.IO.Out)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			default:
				return usageErrorf("unknown output format %q: use text or json", output)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "text", "output format: text or json")
	return cmd
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
