package e2e

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
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
		// A timeout, not a speed target: the package's other tests run
		// beside this one on a shared machine (the time is logged).
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("50 replicas not Ready within 5m (ready: %d)", d.Status.ReadyReplicas)
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

// TestKubectlPortForwardAndExec drives stock kubectl through kube-apiserver
// to the kubelet's streaming endpoints.
func TestKubectlPortForwardAndExec(t *testing.T) {
	t.Parallel()
	kubectl := filepath.Join(filepath.Dir(localkube), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		t.Fatalf("no kubectl beside localkube (make localkube builds bin/kubectl): %v", err)
	}
	ns := namespace(t)
	// The app listens on the pod's loopback only: port-forward must reach
	// it from inside the pod, as a container runtime does.
	p := appPod("streams", "--listen=127.0.0.1:8080")
	p.Spec.Containers[0].ReadinessProbe = nil // the node cannot reach the pod's loopback
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, ns, "streams", 30*time.Second, "running", func(p *v1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Running != nil
	})
	env := append(os.Environ(), "KUBECONFIG="+filepath.Join(clusterDir, "kubeconfig"))

	pf := exec.Command(kubectl, "port-forward", "-n", ns, "pod/streams", ":8080")
	pf.Env = env
	stdout, err := pf.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pf.Process.Kill(); _ = pf.Wait() })
	// "Forwarding from 127.0.0.1:PORT -> 8080"
	local := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if f := strings.Fields(sc.Text()); len(f) >= 3 && f[0] == "Forwarding" && strings.HasPrefix(f[2], "127.0.0.1:") {
				local <- f[2]
				return
			}
		}
	}()
	var addr string
	select {
	case addr = <-local:
	case <-time.After(30 * time.Second):
		t.Fatal("kubectl port-forward never said where it listens")
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/whoami")
	if err != nil {
		t.Fatalf("GET through port-forward: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(b), "local=127.0.0.1:8080") {
		t.Errorf("through port-forward the app saw %q, want a connection to its 127.0.0.1:8080", b)
	}

	run := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(kubectl, args...)
		cmd.Env = env
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// exec runs in the pod's network namespace: it sees the pod's eth0.
	out, err := run("", "exec", "-n", ns, "streams", "--", "ip", "-4", "-o", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, pod.Status.PodIP+"/24") {
		t.Errorf("kubectl exec ip addr: %v\n%s", err, out)
	}
	if out, err := run("piped through", "exec", "-i", "-n", ns, "streams", "--", "cat"); err != nil || out != "piped through" {
		t.Errorf("kubectl exec -i cat: %v: %q", err, out)
	}
	_, err = run("", "exec", "-n", ns, "streams", "--", "sh", "-c", "exit 7")
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("kubectl exec of exit 7: %v, want exit code 7", err)
	}
}
