package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"meshtls/localkube/internal/kubelet"
)

// processOf checks that pid is a live testapp process of the pod and
// returns its environment.
func processOf(t *testing.T, pid int) map[string]string {
	t.Helper()
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	if !strings.Contains(string(cmdline), "testapp") {
		t.Fatalf("process %d runs %q, want testapp", pid, cmdline)
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	env := map[string]string{}
	for _, kv := range strings.Split(string(raw), "\x00") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			env[k] = v
		}
	}
	return env
}

func pidOf(t *testing.T, podIP string) int {
	t.Helper()
	pid, err := strconv.Atoi(get(t, podIP, "/pid"))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

func TestDeploymentOfThreeGivesThreeReadyPodsWithOwnProcessesAndIPs(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	labels := map[string]string{"app": "web"}
	pod := appPod("web")
	pod.Spec.InitContainers = []v1.Container{{Name: "init", Image: appImage, Args: []string{"--listen=127.0.0.1:0", "--exit-after=1ms", "--exit-code=0"}}}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr(int32(3)),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: pod.Spec},
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []v1.Pod
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, nil
		}
		pods = list.Items
		ready := 0
		for i := range pods {
			if isReady(&pods[i]) {
				ready++
			}
		}
		return ready == 3 && len(pods) == 3, nil
	})
	if err != nil {
		for i := range pods {
			t.Log(describe(&pods[i]))
		}
		t.Fatalf("deployment web: 3 Ready pods not reached: %v", err)
	}

	ips, pids := map[string]bool{}, map[int]bool{}
	for _, p := range pods {
		ip := net.ParseIP(p.Status.PodIP).To4()
		if ip == nil || ip[0] != 198 || ip[1] != 18 || int(ip[2]) != podBlock || ip[3] < 2 {
			t.Errorf("pod %s: IP %q is not in 198.18.%d.2-254", p.Name, p.Status.PodIP, podBlock)
			continue
		}
		ips[p.Status.PodIP] = true
		// The app answers on the pod IP, so the IP really is the pod's.
		pid := pidOf(t, p.Status.PodIP)
		pids[pid] = true
		env := processOf(t, pid)
		if env["POD_NAME"] != p.Name || env["POD_NAMESPACE"] != ns || env["POD_IP"] != p.Status.PodIP {
			t.Errorf("pod %s: downward API env POD_NAME=%q POD_NAMESPACE=%q POD_IP=%q", p.Name, env["POD_NAME"], env["POD_NAMESPACE"], env["POD_IP"])
		}
		if got, wantLocal := env[kubelet.EnvPodLocalhost], "127.0.0.1"; got != wantLocal {
			t.Errorf("pod %s: %s=%q, want %q", p.Name, kubelet.EnvPodLocalhost, got, wantLocal)
		}
		if len(p.Status.InitContainerStatuses) != 1 {
			t.Fatalf("pod %s: init statuses %+v", p.Name, p.Status.InitContainerStatuses)
		}
		term := p.Status.InitContainerStatuses[0].State.Terminated
		if term == nil || term.ExitCode != 0 || term.Reason != "Completed" {
			t.Errorf("pod %s: init container state %+v, want completed", p.Name, p.Status.InitContainerStatuses[0].State)
		}
		for _, ct := range []v1.PodConditionType{v1.PodScheduled, v1.PodInitialized, v1.ContainersReady, v1.PodReady} {
			found := false
			for _, c := range p.Status.Conditions {
				found = found || (c.Type == ct && c.Status == v1.ConditionTrue)
			}
			if !found {
				t.Errorf("pod %s: condition %s not True: %s", p.Name, ct, describe(&p))
			}
		}
	}
	if len(ips) != 3 || len(pids) != 3 {
		t.Errorf("want 3 distinct pod IPs and processes, got IPs %v, pids %v", ips, pids)
	}
}

func TestSecretUpdateReachesTheFilesAtomically(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	secret := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls"}, Data: map[string][]byte{"token": []byte("one")}}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := appPod("reader", "--file=/etc/tls/token")
	pod.Spec.Containers[0].Env = append(pod.Spec.Containers[0].Env, v1.EnvVar{Name: "TOKEN_FILE", Value: "/etc/tls/token"})
	pod.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "tls", MountPath: "/etc/tls", ReadOnly: true}}
	pod.Spec.Volumes = []v1.Volume{{Name: "tls", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "tls"}}}}
	if _, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "reader", 30*time.Second, "Ready", isReady)

	// The path in the arg and the env value were rewritten to the pod's dir.
	args := get(t, p.Status.PodIP, "/args")
	tokenFile := get(t, p.Status.PodIP, "/env?name=TOKEN_FILE")
	if !strings.HasPrefix(args, "--file="+clusterDir) || !strings.HasPrefix(tokenFile, clusterDir) || !strings.HasSuffix(tokenFile, "/token") {
		t.Fatalf("paths not rewritten under the cluster dir: args %q, TOKEN_FILE %q", args, tokenFile)
	}
	if got := get(t, p.Status.PodIP, "/file"); got != "one" {
		t.Fatalf("file content %q, want one", got)
	}
	// Kubelet's layout: the file is a link through ..data.
	if target, err := os.Readlink(tokenFile); err != nil || target != "..data/token" {
		t.Errorf("%s: link %q, %v; want ..data/token", tokenFile, target, err)
	}
	before, _ := os.Readlink(filepath.Join(filepath.Dir(tokenFile), "..data"))

	secret.Data["token"] = []byte("two")
	if _, err := client.CoreV1().Secrets(ns).Update(ctx, secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The kubelet syncs each pod about once a second; the deadline only
	// ends a test whose update never arrives, with room for a loaded
	// machine (the time taken is logged).
	updated := time.Now()
	for get(t, p.Status.PodIP, "/file") != "two" {
		if time.Since(updated) > 60*time.Second {
			t.Fatalf("secret update did not reach %s within 60s", tokenFile)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("secret update reached the file after %s", time.Since(updated).Round(time.Millisecond))
	after, _ := os.Readlink(filepath.Join(filepath.Dir(tokenFile), "..data"))
	if before == "" || after == before {
		t.Errorf("..data was not swapped: before %q, after %q", before, after)
	}
}

func TestDeletingAPodEndsItsProcess(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	// The app ignores SIGTERM, so only SIGKILL after the 2s grace ends it.
	pod := appPod("stubborn", "--ignore-sigterm")
	if _, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "stubborn", 30*time.Second, "Ready", isReady)
	pid := pidOf(t, p.Status.PodIP)
	processOf(t, pid)

	deleted := time.Now()
	if err := client.CoreV1().Pods(ns).Delete(ctx, "stubborn", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if !alive(pid) {
		t.Fatalf("process %d ended within 1s although it ignores SIGTERM and the grace period is 2s", pid)
	}
	for alive(pid) {
		if time.Since(deleted) > 10*time.Second {
			t.Fatalf("process %d still runs 10s after the pod was deleted", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("process ended %s after delete", time.Since(deleted).Round(time.Millisecond))
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().Pods(ns).Get(ctx, "stubborn", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("pod object not removed after its process ended: %v", err)
	}
	if _, err := os.Stat(filepath.Join(clusterDir, "pods", ns+"_stubborn_"+string(p.UID))); !os.IsNotExist(err) {
		t.Errorf("pod directory left behind: %v", err)
	}
}

func TestACrashLeadsToARestart(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	pod := appPod("crasher", "--exit-after=300ms", "--exit-code=3")
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "crasher", 30*time.Second, "restarted twice", func(p *v1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].RestartCount >= 2
	})
	last := p.Status.ContainerStatuses[0].LastTerminationState.Terminated
	if last == nil || last.ExitCode != 3 || last.Reason != "Error" {
		t.Errorf("lastState %+v, want terminated with exit code 3", p.Status.ContainerStatuses[0].LastTerminationState)
	}
}

func TestAKilledProcessIsNotReadyThenRestarts(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	if _, err := client.CoreV1().Pods(ns).Create(ctx, appPod("victim"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "victim", 30*time.Second, "Ready", isReady)
	pid := pidOf(t, p.Status.PodIP)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Not Ready from the kill until the restarted process passes its probe,
	// at least the 1s back-off: polling every 50ms must see it.
	waitPod(t, ns, "victim", 5*time.Second, "NotReady after its process was killed", func(p *v1.Pod) bool { return !isReady(p) })
	p = waitPod(t, ns, "victim", 30*time.Second, "Ready again after a restart", func(p *v1.Pod) bool {
		return isReady(p) && p.Status.ContainerStatuses[0].RestartCount == 1
	})
	if term := p.Status.ContainerStatuses[0].LastTerminationState.Terminated; term == nil || term.Signal != int32(syscall.SIGKILL) {
		t.Errorf("lastState %+v, want killed by SIGKILL", p.Status.ContainerStatuses[0].LastTerminationState)
	}
	if newPid := pidOf(t, p.Status.PodIP); newPid == pid {
		t.Errorf("still pid %d after restart", pid)
	}
}

func TestFailingLivenessProbeRestartsTheContainer(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	pod := appPod("sick")
	pod.Spec.Containers[0].LivenessProbe = &v1.Probe{
		ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/live", Port: intOrStr(8080)}},
		PeriodSeconds: 1, FailureThreshold: 1,
	}
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "sick", 30*time.Second, "Ready", isReady)
	get(t, p.Status.PodIP, "/fail-live")
	waitPod(t, ns, "sick", 30*time.Second, "restarted by its liveness probe", func(p *v1.Pod) bool {
		return p.Status.ContainerStatuses[0].RestartCount == 1 && isReady(p)
	})
}

func TestAnUnmappedImageGivesAClearStatus(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	pod := appPod("nginx")
	pod.Spec.Containers[0].Image = "docker.io/library/nginx:1.27"
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "nginx", 30*time.Second, "waiting with reason "+kubelet.ReasonImageNotMapped, func(p *v1.Pod) bool {
		return len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].State.Waiting != nil &&
			p.Status.ContainerStatuses[0].State.Waiting.Reason == kubelet.ReasonImageNotMapped
	})
	msg := p.Status.ContainerStatuses[0].State.Waiting.Message
	if !strings.Contains(msg, `"nginx"`) || !strings.Contains(msg, appBinDir) {
		t.Errorf("message %q should name the binary looked for and where", msg)
	}
	if p.Status.Phase != v1.PodPending || isReady(p) {
		t.Errorf("phase %s ready %v, want Pending and not ready", p.Status.Phase, isReady(p))
	}
}

func TestAPodWaitsForAMissingSecretThenStarts(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	pod := appPod("patient", "--file=/etc/conf/greeting")
	pod.Spec.Containers[0].VolumeMounts = []v1.VolumeMount{{Name: "conf", MountPath: "/etc/conf"}}
	pod.Spec.Volumes = []v1.Volume{{Name: "conf", VolumeSource: v1.VolumeSource{Secret: &v1.SecretVolumeSource{SecretName: "later"}}}}
	if _, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := waitPod(t, ns, "patient", 30*time.Second, "waiting for its volume", func(p *v1.Pod) bool {
		cs := p.Status.ContainerStatuses
		return len(cs) == 1 && cs[0].State.Waiting != nil && strings.Contains(cs[0].State.Waiting.Message, `secret "later" not found`)
	})
	if p.Status.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating" {
		t.Errorf("reason %q, want ContainerCreating", p.Status.ContainerStatuses[0].State.Waiting.Reason)
	}
	secret := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "later"}, StringData: map[string]string{"greeting": "hello"}}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p = waitPod(t, ns, "patient", 30*time.Second, "Ready once the secret exists", isReady)
	if got := get(t, p.Status.PodIP, "/file"); got != "hello" {
		t.Errorf("file %q, want hello", got)
	}
}
