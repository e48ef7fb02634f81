//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"

	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// TestMeshedWorkloadsTalkMutualTLS is the data plane end to end on the local
// cluster: the real CA issues each workload's Secret, inject wires the
// proxy to it, proxy-init's rules send the apps' traffic through the
// proxies, the destination service tells the client proxy which identity
// the server must present, and `linkerd stat` then reports the traffic at
// TLS 100%, with the server's proxy naming the client's identity.
//
// The proxies reach the destination service by its DNS name, as on any
// cluster; the apps here address each other by pod IP (TestDemo runs the
// shipped manifest, which uses Service names).
func TestMeshedWorkloadsTalkMutualTLS(t *testing.T) {
	t.Parallel()
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	ns := localcluster.Namespace(t)
	cp := "l5d-" + rand.String(5)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	installControlPlane(t, kubectl, kubeconfig, cp)
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=destination")
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=ca")
	inject := func(manifest string) { t.Helper(); injectApply(t, kubectl, kubeconfig, cp, manifest) }

	inject(demoDeployment(ns, "emoji", "emoji", map[string]string{"GRPC_PORT": "8080"}, 8080) +
		demoDeployment(ns, "voting", "voting", map[string]string{"GRPC_PORT": "8080"}, 8080))
	emoji := readyPod(ctx, t, client, ns, "app=emoji")
	voting := readyPod(ctx, t, client, ns, "app=voting")
	inject(demoDeployment(ns, "web", "web", map[string]string{
		"WEB_PORT":       "8080",
		"EMOJISVC_HOST":  emoji.Status.PodIP + ":8080",
		"VOTINGSVC_HOST": voting.Status.PodIP + ":8080",
	}, 8080))
	web := readyPod(ctx, t, client, ns, "app=web")
	inject(demoDeployment(ns, "vote-bot", "vote-bot", map[string]string{
		"WEB_HOST":   web.Status.PodIP + ":8080",
		"VOTE_RATE":  "5",
		"TRUTH_PORT": "8802",
	}, 8802))
	readyPod(ctx, t, client, ns, "app=vote-bot")

	// The server side names its client by the identity in the client's
	// certificate.
	webID := contract.Identity("web", contract.KindDeployment, ns, cp)
	localcluster.Eventually(t, 2*time.Minute, func() error {
		metrics, err := httpGet(fmt.Sprintf("http://%s:%d/metrics", emoji.Status.PodIP, contract.AdminPort))
		if err != nil {
			return err
		}
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, "request_total{") && strings.Contains(line, `direction="inbound"`) &&
				strings.Contains(line, `tls="true"`) && strings.Contains(line, `client_id="`+webID+`"`) {
				return nil
			}
		}
		return fmt.Errorf("emoji's proxy has no inbound mTLS request from %s yet", webID)
	})

	meshedAtFullTLS := func(rows map[string]row) error {
		for _, name := range []string{"emoji", "voting", "web"} {
			r, ok := rows[ns+"/"+name]
			switch {
			case !ok:
				return fmt.Errorf("no stat row for deploy/%s", name)
			case r.RPS == nil || *r.RPS <= 0:
				return fmt.Errorf("deploy/%s has no traffic yet", name)
			case r.TLS == nil || *r.TLS != 1:
				return fmt.Errorf("deploy/%s TLS %v, want 100%% (no_tls %v)", name, deref(r.TLS), r.NoTLS)
			}
		}
		return nil
	}

	// stat, scraping the proxies live, shows the meshed edges at TLS 100%.
	// (-L names a namespace without a Prometheus, so stat scrapes.)
	localcluster.Eventually(t, 2*time.Minute, func() error {
		rows, err := statRows("stat", "deploy", "-n", ns, "-L", "kube-public", "-t", "5s", "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			return err
		}
		return meshedAtFullTLS(rows)
	})

	// install's own Prometheus finds the proxies through Kubernetes service
	// discovery, with its ServiceAccount's credentials, and labels them as
	// stat queries them.
	prom := readyPod(ctx, t, client, cp, contract.ComponentLabel+"=prometheus")
	localcluster.Eventually(t, 2*time.Minute, func() error {
		return promHasProxyTarget(fmt.Sprintf("http://%s:9090", prom.Status.PodIP), ns, emoji.Name, "emoji")
	})
	// And stat, finding it as on any cluster (port-forwarded through the
	// API server), shows the same edges at TLS 100% from it. The window
	// spans at least two of its 10 s scrapes.
	localcluster.Eventually(t, 2*time.Minute, func() error {
		rows, stderr, err := statRowsStderr("stat", "deploy", "-n", ns, "-L", cp, "-t", "30s", "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			return err
		}
		if strings.Contains(stderr, "scraping every meshed proxy directly") {
			return fmt.Errorf("stat did not use the control plane's Prometheus: %s", stderr)
		}
		return meshedAtFullTLS(rows)
	})
}

// promHasProxyTarget asks a Prometheus whether it scrapes pod's proxy, with
// the namespace, pod and deployment labels Linkerd's relabelling gives.
func promHasProxyTarget(url, ns, pod, deployment string) error {
	body, err := httpGet(url + "/api/v1/targets?state=active")
	if err != nil {
		return err
	}
	var resp struct {
		Data struct {
			ActiveTargets []struct {
				ScrapePool string            `json:"scrapePool"`
				Labels     map[string]string `json:"labels"`
				Health     string            `json:"health"`
				LastError  string            `json:"lastError"`
			} `json:"activeTargets"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		return fmt.Errorf("%s/api/v1/targets: %v", url, err)
	}
	for _, tg := range resp.Data.ActiveTargets {
		l := tg.Labels
		if tg.ScrapePool != "linkerd-proxy" || l["namespace"] != ns || l["pod"] != pod {
			continue
		}
		if l["deployment"] != deployment || !strings.HasSuffix(l["instance"], fmt.Sprintf(":%d", contract.AdminPort)) {
			return fmt.Errorf("proxy target of %s/%s has labels %v", ns, pod, l)
		}
		if tg.Health != "up" {
			return fmt.Errorf("proxy target of %s/%s is %s: %s", ns, pod, tg.Health, tg.LastError)
		}
		return nil
	}
	return fmt.Errorf("Prometheus has no linkerd-proxy target for %s/%s yet", ns, pod)
}

// readyPod waits for a Ready pod matching selector and returns it.
func readyPod(ctx context.Context, t *testing.T, client kubernetes.Interface, ns, selector string) corev1.Pod {
	t.Helper()
	var last string
	for {
		pods, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err == nil {
			for _, p := range pods.Items {
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
						return p
					}
				}
				last = fmt.Sprintf("%s: phase %s, %d containers", p.Name, p.Status.Phase, len(p.Status.ContainerStatuses))
			}
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no Ready pod %s in %s: %s", selector, ns, last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// installControlPlane applies `linkerd install --tls=optional -L cp` and
// deletes it when the test ends.
func installControlPlane(t *testing.T, kubectl, kubeconfig, cp string) {
	t.Helper()
	installYAML := run(t, "install", "--tls=optional", "-L", cp)
	t.Cleanup(func() {
		del := exec.Command(kubectl, "--kubeconfig", kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		del.Stdin = bytes.NewReader(installYAML)
		_ = del.Run()
	})
	kubectlApply(t, kubectl, kubeconfig, installYAML)
}

// injectApply is `linkerd inject --tls=optional -L cp - | kubectl apply`.
func injectApply(t *testing.T, kubectl, kubeconfig, cp, manifest string) {
	t.Helper()
	cmd := exec.Command(linkerdBin, "inject", "--tls=optional", "-L", cp, "-")
	cmd.Stdin = strings.NewReader(manifest)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("linkerd inject: %v\n%s", err, stderr.String())
	}
	kubectlApply(t, kubectl, kubeconfig, out)
}

func kubectlApply(t *testing.T, kubectl, kubeconfig string, manifest []byte) {
	t.Helper()
	cmd := exec.Command(kubectl, "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = bytes.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// demoDeployment is one emojivoto component as a Deployment.
func demoDeployment(ns, name, sub string, env map[string]string, port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, `---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  replicas: 1
  selector:
    matchLabels: {app: %[1]s}
  template:
    metadata:
      labels: {app: %[1]s}
    spec:
      containers:
      - name: %[1]s
        image: ghcr.io/meshtls/emojivoto:test
        args: [%[3]s]
        readinessProbe:
          tcpSocket: {port: %[4]d}
        env:
`, name, ns, sub, port)
	for k, v := range env {
		fmt.Fprintf(&b, "        - {name: %s, value: %q}\n", k, v)
	}
	return b.String()
}

func httpGet(url string) (string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// statRows runs linkerd stat -o json and keys its rows by namespace/name,
// returning errors instead of failing so callers can retry.
func statRows(args ...string) (map[string]row, error) {
	rows, _, err := statRowsStderr(args...)
	return rows, err
}

// statRowsStderr is statRows that also returns stat's stderr (its notes,
// such as falling back to scraping).
func statRowsStderr(args ...string) (map[string]row, string, error) {
	cmd := exec.Command(linkerdBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, stderr.String(), fmt.Errorf("linkerd %v: %v: %s", args, err, stderr.String())
	}
	var rows []row
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, stderr.String(), fmt.Errorf("linkerd %v: %v: %s", args, err, out)
	}
	m := map[string]row{}
	for _, r := range rows {
		m[r.Namespace+"/"+r.Name] = r
	}
	return m, stderr.String(), nil
}
