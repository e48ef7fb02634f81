// Package cli is the localkube command line: up, down, status, logs, and
// the hidden serve command that is the running cluster.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
)

// Main runs the command line and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	root := newRoot(stdout, stderr)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		var ex exitError
		if errors.As(err, &ex) {
			if ex.msg != "" {
				fmt.Fprintln(stderr, "localkube: "+ex.msg)
			}
			return ex.code
		}
		fmt.Fprintln(stderr, "localkube: "+err.Error())
		return 1
	}
	return 0
}

// exitError is an error with a chosen exit code.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

type common struct {
	dir string
}

func (c *common) addDir(cmd *cobra.Command) {
	def := os.Getenv("LOCALKUBE_DIR")
	if def == "" {
		if home, err := os.UserHomeDir(); err == nil {
			def = filepath.Join(home, ".localkube")
		}
	}
	cmd.Flags().StringVar(&c.dir, "dir", def, "cluster directory (state, certificates, logs, pods); env LOCALKUBE_DIR")
}

func (c *common) absDir() (string, error) {
	if c.dir == "" {
		return "", errors.New("--dir is required")
	}
	return filepath.Abs(c.dir)
}

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "localkube",
		Short:         "A local Kubernetes: etcd, kube-apiserver, kube-controller-manager and a process kubelet",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newUp(stdout, stderr), newServe(), newDown(stdout), newStatus(stdout), newLogs(stdout))
	return root
}

// defaultBinDirs is where images map to binaries: the dirs given by flag or
// LOCALKUBE_BIN_DIR (colon-separated) first, then localkube's own dir.
func defaultBinDirs(extra []string) []string {
	var dirs []string
	add := func(d string) {
		if d == "" {
			return
		}
		if abs, err := filepath.Abs(d); err == nil {
			d = abs
		}
		for _, x := range dirs {
			if x == d {
				return
			}
		}
		dirs = append(dirs, d)
	}
	for _, d := range extra {
		for _, p := range strings.Split(d, ",") {
			add(p)
		}
	}
	for _, p := range filepath.SplitList(os.Getenv("LOCALKUBE_BIN_DIR")) {
		add(p)
	}
	add(selfDir())
	return dirs
}

func selfDir() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	if r, err := filepath.EvalSymlinks(exe); err == nil {
		exe = r
	}
	return filepath.Dir(exe)
}
