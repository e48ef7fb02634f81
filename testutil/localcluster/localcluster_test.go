//go:build integration

package localcluster

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestMain(m *testing.M) { os.Exit(Run(m)) }

func TestClientTalksToARealAPIServerWithARegisteredNode(t *testing.T) {
	client := Client(t)
	v, err := client.Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	// localkube builds Kubernetes v1.36 (localkube/localkube.mk).
	if !strings.HasPrefix(v.GitVersion, "v1.36.") || v.Major != "1" || v.Minor != "36" {
		t.Errorf("server version %+v", v)
	}
	node, err := client.CoreV1().Nodes().Get(context.Background(), "localkube", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready := false
	for _, c := range node.Status.Conditions {
		ready = ready || (c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue)
	}
	if !ready {
		t.Errorf("node localkube not Ready: %+v", node.Status.Conditions)
	}
}

func TestConfigIsACopy(t *testing.T) {
	a := Config(t)
	a.Host = "https://example.invalid"
	if Config(t).Host == a.Host {
		t.Error("changing one Config changed the next")
	}
}

func TestNamespaceAcceptsPodsAndControllersRun(t *testing.T) {
	ns := Namespace(t)
	client := Client(t)
	ctx := context.Background()
	// A ConfigMap created by kube-controller-manager shows it is running.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := client.CoreV1().ConfigMaps(ns).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("kube-root-ca.crt never appeared: is kube-controller-manager running?")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestKubeconfigWorksForKubectl(t *testing.T) {
	out, err := exec.Command(Kubectl(t), "--kubeconfig", Kubeconfig(t), "get", "namespaces").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "kube-system") {
		t.Errorf("kubectl get namespaces: %v\n%s", err, out)
	}
}
