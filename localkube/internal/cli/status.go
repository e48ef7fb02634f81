package cli

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"meshtls/localkube/internal/controlplane"
	"meshtls/localkube/internal/podnet"
	"meshtls/localkube/internal/procutil"
)

func newStatus(stdout io.Writer) *cobra.Command {
	o := &common{}
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Say what runs in --dir (exit 1 when the cluster is not running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := o.absDir()
			if err != nil {
				return err
			}
			return runStatus(cmd.Context(), dir, stdout)
		},
	}
	o.addDir(cmd)
	return cmd
}

func runStatus(ctx context.Context, dir string, out io.Writer) error {
	st, err := readState(dir)
	if err != nil {
		return exitError{code: 1, msg: fmt.Sprintf("no cluster in %s (run `localkube up --dir %s`)", dir, dir)}
	}
	if !running(dir) {
		leftover := procutil.Marked(dir)
		msg := fmt.Sprintf("not running in %s", dir)
		if st.Phase != "stopped" {
			msg += fmt.Sprintf(" (stale: the localkube of pid %d was killed; %d leftover processes; `localkube up` recovers, `localkube down` cleans up)", st.Pid, len(leftover))
		}
		if st.Error != "" {
			msg += "; last error: " + st.Error
		}
		return exitError{code: 1, msg: msg}
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "localkube\t%s\tpid %d, up %s\n", st.Phase, st.Pid, time.Since(st.Started).Round(time.Second))
	fmt.Fprintf(tw, "kubeconfig\t%s\t\n", filepath.Join(dir, "kubeconfig"))
	addr := map[string]string{
		"etcd":                    fmt.Sprintf("http://127.0.0.1:%d", st.Ports.Etcd),
		"kube-apiserver":          st.Server,
		"kube-controller-manager": "",
	}
	pn := podnet.ForBlock(st.Block)
	addr[controlplane.KubeProxyName] = fmt.Sprintf("in netns %s, services %s, healthz %s", pn.NodeNetns, pn.ServiceCIDR,
		controlplane.KubeProxy{HealthzIP: pn.NodeLinkIP}.HealthzURL())
	for _, name := range append(controlplane.Binaries, controlplane.KubeProxyName) {
		pid := st.Pids[name]
		state := "running"
		if !procutil.Alive(pid) {
			state = "NOT RUNNING"
		}
		fmt.Fprintf(tw, "%s\t%s\tpid %d %s\n", name, state, pid, addr[name])
	}
	pods := "?"
	if cfg, err := clientcmd.BuildConfigFromFlags("", filepath.Join(dir, "kubeconfig")); err == nil {
		cfg.Timeout = 5 * time.Second
		if c, err := kubernetes.NewForConfig(cfg); err == nil {
			if list, err := c.CoreV1().Pods("").List(ctx, metav1.ListOptions{}); err == nil {
				ready := 0
				for _, p := range list.Items {
					for _, cond := range p.Status.Conditions {
						if cond.Type == v1.PodReady && cond.Status == v1.ConditionTrue {
							ready++
						}
					}
				}
				pods = fmt.Sprintf("%d pods, %d ready", len(list.Items), ready)
			} else {
				pods = "API error: " + err.Error()
			}
		}
	}
	fmt.Fprintf(tw, "kubelet\trunning\tnode localkube, pod IPs %s on %s in netns %s, %s\n", pn.CIDR, pn.Bridge, pn.NodeNetns, pods)
	fmt.Fprintf(tw, "image dirs\t%v\t\n", st.BinDirs)
	return tw.Flush()
}
