package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestStockKubectlWorks(t *testing.T) {
	t.Parallel()
	// make localkube builds kubectl beside localkube; any other is fine too.
	kubectl := filepath.Join(filepath.Dir(localkube), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		if kubectl, err = exec.LookPath("kubectl"); err != nil {
			t.Skip("no kubectl beside localkube nor on PATH (make localkube builds bin/kubectl); the client-go tests cover the API")
		}
	}
	ns := namespace(t)
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), appPod("talker"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "talker", 30*time.Second, "Ready", isReady)
	run := func(args ...string) string {
		cmd := exec.Command(kubectl, args...)
		cmd.Env = append(cmd.Environ(), "KUBECONFIG="+filepath.Join(clusterDir, "kubeconfig"))
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if out := run("get", "pods", "-A"); !strings.Contains(out, "talker") || !strings.Contains(out, "Running") {
		t.Errorf("kubectl get pods -A:\n%s", out)
	}
	// kubectl logs goes through kube-apiserver to the kubelet's API.
	if out := run("logs", "-n", ns, "talker"); !strings.Contains(out, "testapp pid") {
		t.Errorf("kubectl logs:\n%s", out)
	}
	if out := run("get", "nodes"); !strings.Contains(out, "localkube") || !strings.Contains(out, "Ready") {
		t.Errorf("kubectl get nodes:\n%s", out)
	}
}

func TestLocalkubeLogsPrintsAContainerLog(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), appPod("logger"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "logger", 30*time.Second, "Ready", isReady)
	out, err := lk("logs", "--dir", clusterDir, "-n", ns, "logger", "-c", "app")
	if err != nil || !strings.Contains(out, "testapp pid") {
		t.Errorf("localkube logs: %v\n%s", err, out)
	}
	out, err = lk("logs", "--dir", clusterDir, "-n", ns, "nosuchpod")
	oneLine(t, out, err, "nosuchpod")
}

func TestFiftyReplicasBecomeReady(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the 50-pod scale test")
	}
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	start := time.Now()
	dep := deployment("fifty", 50)
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		d, err := client.AppsV1().Deployments(ns).Get(ctx, "fifty", metav1.GetOptions{})
		if err == nil && d.Status.ReadyReplicas == 50 {
			break
		}
		if time.Since(start) > 90*time.Second {
			t.Fatalf("50 replicas not Ready within 90s (ready: %d)", d.Status.ReadyReplicas)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("50 replicas Ready %.1fs after create", time.Since(start).Seconds())
	// Scale to zero and let the kubelet end all 50 processes.
	if err := client.AppsV1().Deployments(ns).Delete(ctx, "fifty", metav1.DeleteOptions{PropagationPolicy: ptr(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	for {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil && len(list.Items) == 0 {
			break
		}
		if time.Since(start) > 3*time.Minute {
			t.Fatalf("pods of the deleted deployment remain: %d", len(list.Items))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
