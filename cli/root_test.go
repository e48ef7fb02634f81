package cli

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func mustFind(t *testing.T, cmds []*cobra.Command, name string) *cobra.Command {
	t.Helper()
	for _, c := range cmds {
		if c.Name() == name {
			return c
		}
	}
	t.Fatalf("no command %q", name)
	return nil
}

func TestGlobalFlags(t *testing.T) {
	io, _, _ := TestStreams(false)
	root := NewRootCmd(NewFactory(io))
	for _, name := range []string{"kubeconfig", "context", "namespace", "linkerd-namespace"} {
		if root.PersistentFlags().Lookup(name) == nil {
			t.Errorf("missing global flag --%s", name)
		}
	}
	// --prometheus-url belongs only to the commands that query Prometheus.
	if root.PersistentFlags().Lookup("prometheus-url") != nil {
		t.Errorf("--prometheus-url is global; want it on stat only")
	}
	if mustFind(t, root.Commands(), "stat").Flags().Lookup("prometheus-url") == nil {
		t.Errorf("stat lacks --prometheus-url")
	}
	for _, cmd := range []string{"version", "install", "inject", "capture"} {
		if res := execute(t, false, cmd, "--prometheus-url", "http://x"); res.code != 2 || !strings.Contains(res.errOut, "unknown flag: --prometheus-url") {
			t.Errorf("%s --prometheus-url: exit %d, %q; want a usage error", cmd, res.code, res.errOut)
		}
	}
	if f := root.PersistentFlags().ShorthandLookup("L"); f == nil || f.DefValue != "linkerd" {
		t.Errorf("-L should default to linkerd")
	}
	if f := root.PersistentFlags().ShorthandLookup("n"); f == nil {
		t.Errorf("missing -n")
	}
}

func TestCompletion(t *testing.T) {
	// Each script registers linkerd's completer with its shell, and the
	// completer asks linkerd itself (__complete) for the candidates.
	for shell, markers := range map[string][]string{
		"bash":       {"__start_linkerd()", "complete -o default -F __start_linkerd linkerd"},
		"zsh":        {"#compdef linkerd", "compdef _linkerd linkerd"},
		"fish":       {"complete -c linkerd "},
		"powershell": {"Register-ArgumentCompleter -CommandName 'linkerd'"},
	} {
		res := execute(t, false, "completion", shell)
		if res.code != 0 {
			t.Errorf("%s: exit %d: %s", shell, res.code, res.errOut)
			continue
		}
		for _, m := range append(markers, "__complete") {
			if !strings.Contains(res.out, m) {
				t.Errorf("%s completion script lacks %q (%d bytes)", shell, m, len(res.out))
			}
		}
		if shell == "bash" {
			// bash itself must parse it.
			cmd := exec.Command("bash", "-n")
			cmd.Stdin = strings.NewReader(res.out)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("bash -n rejects the bash completion script: %v\n%s", err, out)
			}
		}
	}
	if res := execute(t, false, "completion", "powershell-ish"); res.code != 2 {
		t.Errorf("unknown shell: exit %d, want 2", res.code)
	}
	// Resource types complete from the engine's own list.
	res := execute(t, false, "__complete", "stat", "")
	for _, want := range []string{"authority", "deploy", "ns"} {
		if !strings.Contains(res.out, want+"\n") {
			t.Errorf("completion of stat lacks %q:\n%s", want, res.out)
		}
	}
}

func TestVersion(t *testing.T) {
	res := execute(t, false, "version")
	// No cluster in this test: the server's version is unavailable.
	if res.code != 0 || res.out != "Client version: dev\nServer version: unavailable\n" {
		t.Errorf("version: %d %q", res.code, res.out)
	}
	if res := execute(t, false, "version", "--client"); res.code != 0 || res.out != "Client version: dev\n" {
		t.Errorf("version --client: %d %q", res.code, res.out)
	}
	if res := execute(t, false, "version", "--client", "--short"); res.code != 0 || res.out != "dev\n" {
		t.Errorf("version --client --short: %d %q", res.code, res.out)
	}
	if res := execute(t, false, "version", "--short"); res.code != 0 || res.out != "dev\nunavailable\n" {
		t.Errorf("version --short: %d %q", res.code, res.out)
	}
	res = execute(t, false, "version", "-o", "json")
	if res.code != 0 || !strings.Contains(res.out, `"client"`) {
		t.Errorf("version json: %d %q", res.code, res.out)
	}
}

func TestHelpHasExamples(t *testing.T) {
	io, _, _ := TestStreams(false)
	root := NewRootCmd(NewFactory(io))
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Runnable() && !c.Hidden && c.Name() != "help" && c.Name() != "__complete" && c.Name() != "__completeNoDesc" && c.Example == "" {
			t.Errorf("%s has no examples in --help", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}
