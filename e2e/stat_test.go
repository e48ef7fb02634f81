//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"meshtls/fixtures"
	"meshtls/stat"
	"meshtls/testutil/localcluster"
)

// TestStatScrapesLivePods runs each meshed pod of the emojivoto capture as
// a real pod whose "proxy" replays that pod's metrics on its pod IP's admin
// port. `linkerd stat` then finds the pods through the API server, scrapes
// them twice, and must print the capture's figures.
//
// Not parallel: it uses the namespace emojivoto and records -A, so it runs
// before the parallel tests start their own namespaces and control planes.
func TestStatScrapesLivePods(t *testing.T) {
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	fsys, err := fixtures.Capture("emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	c, err := stat.OpenCapture(fsys, "builtin:emojivoto")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var created []stat.Pod
	for _, p := range c.Manifest().Pods {
		if !p.Meshed {
			continue
		}
		createReplayPod(ctx, t, client, "builtin:emojivoto", p)
		created = append(created, p)
	}
	for _, p := range created {
		waitReady(ctx, t, client, p.Namespace, p.Name)
	}

	live := statJSON(t, "stat", "authority", "-n", "emojivoto", "-t", "5s", "--kubeconfig", kubeconfig, "-o", "json")
	recorded := statJSON(t, "stat", "authority", "-n", "emojivoto", "--capture", "builtin:emojivoto", "-o", "json")
	compareRows(t, live, recorded)

	deploys := statJSON(t, "stat", "deploy", "-n", "emojivoto", "-t", "3s", "--kubeconfig", kubeconfig, "-o", "json")
	for _, name := range []string{"web", "emoji", "voting", "vote-bot"} {
		row, ok := deploys["emojivoto/"+name]
		if !ok || row.Meshed == nil || *row.Meshed != "1/1" {
			t.Errorf("deploy %s: MESHED %v, want 1/1 from the real pod list", name, row.Meshed)
		}
	}

	// A capture recorded from the live pods gives the same figures again.
	dir := filepath.Join(t.TempDir(), "rec")
	run(t, "capture", "record", dir, "-A", "-t", "5s", "--kubeconfig", kubeconfig)
	rerun := statJSON(t, "stat", "authority", "-n", "emojivoto", "--capture", dir, "-o", "json")
	compareRows(t, rerun, recorded)
}

func createReplayPod(ctx context.Context, t *testing.T, client kubernetes.Interface, capture string, p stat.Pod) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: p.Namespace}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, Labels: p.Labels},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "linkerd-proxy",
				Image: "ghcr.io/meshtls/linkerd:dev",
				Args: []string{"capture", "replay", capture,
					"--pod", p.Namespace + "/" + p.Name, "--listen", "$(POD_IP):4191"},
				Env: []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
				Ports: []corev1.ContainerPort{{Name: "linkerd-admin", ContainerPort: 4191}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/metrics", Port: intstr.FromInt32(4191)}}, PeriodSeconds: 1},
			}},
		},
	}
	if _, err := client.CoreV1().Pods(p.Namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create pod %s/%s: %v", p.Namespace, p.Name, err)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Pods(p.Namespace).Delete(context.Background(), p.Name, metav1.DeleteOptions{})
	})
}

func waitReady(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, name string) {
	t.Helper()
	for {
		pod, err := client.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			for _, c := range pod.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return
				}
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pod %s/%s not Ready: %v (status %+v)", ns, name, err, pod.Status)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

type row struct {
	Namespace string             `json:"namespace"`
	Name      string             `json:"name"`
	Meshed    *string            `json:"meshed"`
	Requests  float64            `json:"requests"`
	Success   *float64           `json:"success"`
	RPS       *float64           `json:"rps"`
	P50       *float64           `json:"latency_ms_p50"`
	P99       *float64           `json:"latency_ms_p99"`
	TLS       *float64           `json:"tls"`
	NoTLS     map[string]float64 `json:"no_tls"`
}

func run(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(linkerdBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("linkerd %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

func statJSON(t *testing.T, args ...string) map[string]row {
	t.Helper()
	var rows []row
	out := run(t, args...)
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("linkerd %v: %v\n%s", args, err, out)
	}
	m := map[string]row{}
	for _, r := range rows {
		m[r.Namespace+"/"+r.Name] = r
	}
	return m
}

// tolerance: the replay pods stamp their samples and stat scales each pod
// to the window by those instants, so a loaded machine does not skew the
// rates; 1% leaves room for millisecond stamps over a 3 s window.
const tolerance = 0.01

func compareRows(t *testing.T, got, want map[string]row) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d rows, want %d", len(got), len(want))
	}
	for key, w := range want {
		g, ok := got[key]
		if !ok {
			t.Errorf("missing row %s", key)
			continue
		}
		for _, f := range []struct {
			name string
			g, w *float64
		}{{"success", g.Success, w.Success}, {"rps", g.RPS, w.RPS}, {"tls", g.TLS, w.TLS}, {"p50", g.P50, w.P50}, {"p99", g.P99, w.P99}} {
			if (f.g == nil) != (f.w == nil) || (f.g != nil && math.Abs(*f.g-*f.w) > tolerance*math.Max(math.Abs(*f.w), 1e-3)) {
				t.Errorf("%s %s: got %v, want %v", key, f.name, deref(f.g), deref(f.w))
			}
		}
	}
}

func deref(v *float64) any {
	if v == nil {
		return nil
	}
	return *v
}
