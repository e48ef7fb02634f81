//go:build integration

package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshtls/testutil/localcluster"
)

// Typos against a real cluster are errors that name what was not found,
// not "No traffic found.".
func TestStatNotFoundInCluster(t *testing.T) {
	t.Parallel()
	kubeconfig := localcluster.Kubeconfig(t)
	ns := localcluster.Namespace(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"stat", "deploy/nope", "-n", ns}, `deployment "nope" in namespace "` + ns + `" not found`},
		{[]string{"stat", "deploy", "-n", "nope-ns"}, `namespace "nope-ns" not found`},
		{[]string{"stat", "deploy", "-n", ns, "--from", "sts/nope"}, `statefulset "nope" in namespace "` + ns + `" not found`},
		{[]string{"stat", "ns/nope-ns"}, `namespace "nope-ns" not found`},
	}
	for _, tc := range cases {
		cmd := exec.Command(linkerdBin, append(tc.args, "--kubeconfig", kubeconfig, "-t", "2s")...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		exit, ok := err.(*exec.ExitError)
		if !ok || exit.ExitCode() != 1 {
			t.Errorf("%v: %v, want exit 1", tc.args, err)
		}
		if got := strings.TrimSpace(stderr.String()); got != "Error: "+tc.want {
			t.Errorf("%v: stderr %q, want only %q", tc.args, got, "Error: "+tc.want)
		}
		if len(out) != 0 {
			t.Errorf("%v: stdout %q", tc.args, out)
		}
	}
}

// Completion offers namespaces and resource names from the cluster.
func TestStatCompletionFromCluster(t *testing.T) {
	t.Parallel()
	kubeconfig := localcluster.Kubeconfig(t)
	client := localcluster.Client(t)
	ns := localcluster.Namespace(t)
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-svc", Namespace: ns},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := client.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	complete := func(args ...string) []string {
		t.Helper()
		// The word being completed is the last argument.
		out := string(run(t, append([]string{"__complete", "--kubeconfig", kubeconfig}, args...)...))
		var lines []string
		for _, l := range strings.Split(out, "\n") {
			if l != "" && !strings.HasPrefix(l, ":") {
				lines = append(lines, strings.SplitN(l, "\t", 2)[0])
			}
		}
		return lines
	}
	has := func(list []string, want string) bool {
		for _, v := range list {
			if v == want {
				return true
			}
		}
		return false
	}
	if got := complete("stat", "svc", "-n", ns, ""); !has(got, "web-svc") {
		t.Errorf("stat svc <TAB>: %q, want web-svc", got)
	}
	if got := complete("stat", "-n", ns, "svc/"); !has(got, "svc/web-svc") {
		t.Errorf("stat svc/<TAB>: %q, want svc/web-svc", got)
	}
	if got := complete("stat", "deploy", "-n", ""); !has(got, ns) || !has(got, "kube-system") {
		t.Errorf("-n <TAB>: %q, want the cluster's namespaces", got)
	}
}
