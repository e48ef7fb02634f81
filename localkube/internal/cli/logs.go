package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"meshtls/localkube/internal/controlplane"
)

func newLogs(stdout io.Writer) *cobra.Command {
	o := &common{}
	var container, namespace string
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs POD|COMPONENT",
		Short: "Print a pod container's log (or etcd, kube-apiserver, kube-controller-manager, kube-proxy, localkube)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := o.absDir()
			if err != nil {
				return err
			}
			path, err := findLog(dir, namespace, args[0], container)
			if err != nil {
				return err
			}
			return printLog(cmd.Context().Done(), path, follow, stdout)
		},
	}
	o.addDir(cmd)
	cmd.Flags().StringVarP(&container, "container", "c", "", "container name (needed when the pod has several)")
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "pod namespace")
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the log grows")
	return cmd
}

func findLog(dir, ns, name, container string) (string, error) {
	matches, _ := filepath.Glob(filepath.Join(dir, "pods", ns+"_"+name+"_*", "logs"))
	if len(matches) == 0 {
		for _, c := range append([]string{"localkube", controlplane.KubeProxyName}, controlplane.Binaries...) {
			if name == c {
				return controlplane.LogPath(dir, c), nil
			}
		}
		return "", fmt.Errorf("no pod %s/%s runs in %s", ns, name, dir)
	}
	logDir := matches[len(matches)-1]
	if container != "" {
		p := filepath.Join(logDir, container+".log")
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("pod %s/%s has no log for container %q (choose one of: %s)", ns, name, container, strings.Join(containers(logDir), ", "))
		}
		return p, nil
	}
	cs := containers(logDir)
	switch len(cs) {
	case 0:
		return "", fmt.Errorf("pod %s/%s has not started a container yet", ns, name)
	case 1:
		return filepath.Join(logDir, cs[0]+".log"), nil
	}
	return "", fmt.Errorf("pod %s/%s has several containers; choose one with -c: %s", ns, name, strings.Join(cs, ", "))
}

func containers(logDir string) []string {
	entries, _ := os.ReadDir(logDir)
	var out []string
	for _, e := range entries {
		if n, ok := strings.CutSuffix(e.Name(), ".log"); ok {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

func printLog(done <-chan struct{}, path string, follow bool, out io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for {
		if _, err := io.Copy(out, f); err != nil {
			return err
		}
		if !follow {
			return nil
		}
		select {
		case <-done:
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		if _, err := os.Stat(path); err != nil {
			return nil // the pod is gone
		}
	}
}
