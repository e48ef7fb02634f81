package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestPostStartHookHoldsBackTheNextContainer: as on a kubelet, a
// container's postStart exec hook runs in the container (its env, the
// pod's namespaces) and the next container starts only once it returns.
// The hook waits a moment, then records which containers the kubelet has
// started (the pod dir's containers/*.pid) where the second container
// serves it: it must list the first only.
func TestPostStartHookHoldsBackTheNextContainer(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	first := appContainer("--listen=:8081")
	first.Name, first.ReadinessProbe = "first", nil
	first.Lifecycle = &v1.Lifecycle{PostStart: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{
		"/bin/sh", "-c", `sleep 1; ls "$LOCALKUBE_POD_DIR/containers" > "$LOCALKUBE_POD_DIR/hook-saw"`,
	}}}}
	second := appContainer("--file=$(LOCALKUBE_POD_DIR)/hook-saw")
	second.Name = "second"
	pod := appPod("hooked")
	pod.Spec.Containers = []v1.Container{first, second}
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "hooked", 60*time.Second, "Ready", isReady)
	if saw := strings.Fields(get(t, p.Status.PodIP, "/file")); len(saw) != 1 || saw[0] != "first.pid" {
		t.Errorf("while the first container's postStart hook ran, the started containers were %v, want [first.pid]", saw)
	}
}

// TestFailingPostStartHookKillsTheContainer: a hook that fails kills its
// container, which restarts as the pod's policy says, with a
// FailedPostStartHook event carrying the hook's output.
func TestFailingPostStartHookKillsTheContainer(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	pod := appPod("badhook")
	pod.Spec.Containers[0].Lifecycle = &v1.Lifecycle{PostStart: &v1.LifecycleHandler{Exec: &v1.ExecAction{Command: []string{
		"/bin/sh", "-c", "echo not ready here >&2; exit 3",
	}}}}
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPod(t, ns, "badhook", 60*time.Second, "restarted after its failed hook", func(p *v1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 1
	})
	var last string
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=badhook"})
		if err == nil {
			for _, e := range evs.Items {
				if e.Reason == "FailedPostStartHook" {
					if !strings.Contains(e.Message, "exit status 3") || !strings.Contains(e.Message, "not ready here") {
						t.Errorf("FailedPostStartHook event %q does not carry the exit status and the hook's output", e.Message)
					}
					return
				}
				last += e.Reason + " "
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Errorf("no FailedPostStartHook event; events seen: %s", last)
}
