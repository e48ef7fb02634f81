//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"meshtls/contract"
	"meshtls/fixtures"
	"meshtls/stat"
	"meshtls/testutil/localcluster"
)

// TestStatUsesControlPlanePrometheus runs a real Prometheus as the control
// plane's (a pod labelled linkerd.io/control-plane-component=prometheus in
// the -L namespace) scraping the mixed capture's proxies replayed as real
// pods. Without --prometheus-url, stat must find it, reach it through a
// client-go port-forward via the API server, and print the capture's
// figures, without falling back to scraping proxies.
func TestStatUsesControlPlanePrometheus(t *testing.T) {
	t.Parallel()
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	controlNS := localcluster.Namespace(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	fsys, err := fixtures.Capture("mixed")
	if err != nil {
		t.Fatal(err)
	}
	c, err := stat.OpenCapture(fsys, "builtin:mixed")
	if err != nil {
		t.Fatal(err)
	}
	var targets []map[string]any
	for _, p := range c.Manifest().Pods {
		if !p.Meshed {
			continue
		}
		createReplayPod(ctx, t, client, "builtin:mixed", p)
	}
	for _, p := range c.Manifest().Pods {
		if !p.Meshed {
			continue
		}
		waitReady(ctx, t, client, p.Namespace, p.Name)
		pod, err := client.CoreV1().Pods(p.Namespace).Get(ctx, p.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, map[string]any{
			"targets": []string{fmt.Sprintf("%s:%d", pod.Status.PodIP, contract.AdminPort)},
			"labels":  p.TargetLabels(),
		})
	}
	const interval = "1s"
	cfg, err := yaml.Marshal(map[string]any{
		"global": map[string]any{"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
		"scrape_configs": []any{map[string]any{
			"job_name":       "linkerd-proxy",
			"static_configs": targets,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	// No Prometheus in the control plane yet: stat says so and scrapes the
	// proxies itself.
	var stderr bytes.Buffer
	cmd := exec.Command(linkerdBin, "stat", "deploy", "-n", "mixed", "-t", "2s", "-L", controlNS, "--kubeconfig", kubeconfig, "-o", "json")
	cmd.Stderr = &stderr
	if out, err := cmd.Output(); err != nil || len(parseRows(t, out)) == 0 {
		t.Fatalf("direct scraping: %v, %s\n%s", err, out, stderr.String())
	}
	if !strings.Contains(stderr.String(), "no Prometheus answered (no running Prometheus in namespace "+controlNS) ||
		!strings.Contains(stderr.String(), "scraping every meshed proxy directly") {
		t.Errorf("stderr %q does not say it fell back to scraping, and why", stderr.String())
	}

	startPrometheus(ctx, t, controlNS, string(cfg))

	// The control plane's version, as `linkerd install` stamps it.
	if out := string(run(t, "version", "-L", controlNS, "--kubeconfig", kubeconfig)); !strings.Contains(out, "Server version: e2e-test-version") {
		t.Errorf("linkerd version: %q, want the control plane's version", out)
	}

	// Reach it as stat will, through a port-forward: the local kubelet
	// supports it, so a kubelet that answers it is unsupported is a
	// regression, not a reason to skip.
	cp, err := stat.ConnectControlPlanePrometheus(ctx, localcluster.Config(t), client, controlNS)
	if err != nil {
		t.Fatalf("control plane Prometheus: %v", err)
	}
	cp.Close()

	// Wait until the window ending at `at` holds two samples of every
	// meshed pod (increase() needs them), however late Prometheus's first
	// scrapes came on a loaded machine.
	time.Sleep(8 * time.Second)
	recorded := statJSON(t, "stat", "deploy", "-n", "mixed", "--capture", "builtin:mixed", "-o", "json")
	var (
		at   string
		live map[string]row
	)
	localcluster.Eventually(t, 60*time.Second, func() error {
		at = time.Now().Add(-2 * time.Second).UTC().Truncate(time.Second).Format(time.RFC3339)
		args := []string{"stat", "deploy", "-n", "mixed", "-t", "6s", "--at", at, "-L", controlNS, "--kubeconfig", kubeconfig, "-o", "json"}
		cmd := exec.Command(linkerdBin, args...)
		var stdout bytes.Buffer
		stderr.Reset()
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("linkerd %v: %v: %s", args, err, stderr.String())
		}
		if strings.Contains(stderr.String(), "scraping every meshed proxy directly") {
			t.Fatalf("stat fell back to scraping: %s", stderr.String())
		}
		var rows []row
		if err := json.Unmarshal(stdout.Bytes(), &rows); err != nil {
			return fmt.Errorf("linkerd %v: %v: %s", args, err, stdout.String())
		}
		live = map[string]row{}
		for _, r := range rows {
			if w, ok := recorded[r.Namespace+"/"+r.Name]; ok && w.Success != nil && r.Success == nil {
				return fmt.Errorf("no requests in the window ending %s for %s/%s yet", at, r.Namespace, r.Name)
			}
			live[r.Namespace+"/"+r.Name] = r
		}
		return nil
	})

	// Through the port-forward, stat gets exactly what the same Prometheus
	// answers when asked directly for the same window.
	pods, err := client.CoreV1().Pods(controlNS).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=prometheus"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("Prometheus pods in %s: %v (%v)", controlNS, pods, err)
	}
	promURL := fmt.Sprintf("http://%s:9090", pods.Items[0].Status.PodIP)
	direct := statJSON(t, "stat", "deploy", "-n", "mixed", "-t", "6s", "--at", at, "--prometheus-url", promURL, "--kubeconfig", kubeconfig, "-o", "json")
	if len(direct) == 0 || len(direct) != len(live) {
		t.Errorf("%d rows through the port-forward, %d asking %s directly", len(live), len(direct), promURL)
	}
	for key, d := range direct {
		g := live[key]
		for _, f := range []struct {
			name string
			g, d *float64
		}{{"success", g.Success, d.Success}, {"tls", g.TLS, d.TLS}, {"rps", g.RPS, d.RPS}, {"p50", g.P50, d.P50}} {
			if (f.g == nil) != (f.d == nil) || f.g != nil && abs(*f.g-*f.d) > 1e-9 {
				t.Errorf("%s %s: through the port-forward %v, directly %v", key, f.name, deref(f.g), deref(f.d))
			}
		}
	}

	// And the ratios are the capture's. (Rates depend on where the live
	// scrapes fall against the window's edges; cli's Prometheus test checks
	// them exactly on a replay aligned to the scrape grid.)
	for key, w := range recorded {
		g, ok := live[key]
		if !ok {
			t.Errorf("missing row %s (got %v)", key, live)
			continue
		}
		for _, f := range []struct {
			name string
			g, w *float64
		}{{"success", g.Success, w.Success}, {"tls", g.TLS, w.TLS}} {
			if (f.g == nil) != (f.w == nil) || f.g != nil && abs(*f.g-*f.w) > 0.01*max(abs(*f.w), 1e-3) {
				t.Errorf("%s %s: via Prometheus %v, capture %v", key, f.name, deref(f.g), deref(f.w))
			}
		}
	}
}

func startPrometheus(ctx context.Context, t *testing.T, ns, config string) {
	t.Helper()
	client := localcluster.Client(t)
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "linkerd-prometheus-config", Namespace: ns},
		Data: map[string]string{"prometheus.yml": config}}
	if _, err := client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{contract.ComponentLabel: stat.PrometheusComponent}
	replicas := int32(1)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "linkerd-prometheus", Namespace: ns, Labels: labels},
	}
	dep.Spec.Replicas = &replicas
	dep.Spec.Selector = &metav1.LabelSelector{MatchLabels: labels}
	dep.Spec.Template = corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{contract.CreatedByAnnotation: "linkerd/cli e2e-test-version"}},
		Spec: corev1.PodSpec{
			Volumes: []corev1.Volume{
				{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
					LocalObjectReference: corev1.LocalObjectReference{Name: cm.Name}}}},
				{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			},
			Containers: []corev1.Container{{
				Name:  "prometheus",
				Image: "prom/prometheus:v2.42.0",
				Args: []string{
					"--config.file=/etc/prometheus/prometheus.yml",
					"--storage.tsdb.path=/data",
					"--web.listen-address=0.0.0.0:9090",
				},
				Env: []corev1.EnvVar{{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{
					FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}}},
				Ports: []corev1.ContainerPort{{Name: "admin-http", ContainerPort: 9090}},
				VolumeMounts: []corev1.VolumeMount{
					{Name: "config", MountPath: "/etc/prometheus", ReadOnly: true},
					{Name: "data", MountPath: "/data"},
				},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
					Path: "/-/ready", Port: intstr.FromString("admin-http")}}, PeriodSeconds: 1},
			}},
		},
	}
	if _, err := client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = client.AppsV1().Deployments(ns).Delete(context.Background(), dep.Name, metav1.DeleteOptions{})
	})
	localcluster.Eventually(t, 2*time.Minute, func() error {
		l, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=prometheus"})
		if err != nil {
			return err
		}
		for _, p := range l.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		return fmt.Errorf("no ready Prometheus pod in %s", ns)
	})
}

func parseRows(t *testing.T, out []byte) map[string]row {
	t.Helper()
	var rows []row
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	m := map[string]row{}
	for _, r := range rows {
		m[r.Namespace+"/"+r.Name] = r
	}
	return m
}

func abs(v float64) float64 {
	if v < 0 {
		return -v
	}
	return v
}
