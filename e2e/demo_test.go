//go:build integration

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"

	"meshtls/contract"
	"meshtls/demo/emojivoto"
	"meshtls/testutil/localcluster"
)

// TestDemo is `make demo`'s flow on the local cluster, with the real CA,
// real proxies behind proxy-init's rules, the control plane's real
// Prometheus and demo/emojivoto.yml as shipped (apps reach Services by
// DNS name), checked against what the bots themselves sent:
//
//   - stat authority and stat deploy, from the control plane's Prometheus,
//     agree with vote-bot's and legacy-bot's ground truth (RPS within 15%,
//     success within 2 points);
//   - meshed-to-meshed authorities are at TLS 100%; web-svc, which the
//     unmeshed legacy-bot also calls, is below it, for no_tls_from_remote;
//   - Prometheus and direct scraping of the proxies agree;
//   - check --tls passes, and fails naming the owner when its Secret is
//     deleted while the CA is down.
//
// The apps and proxies reach Services by DNS name, so the test first waits
// for a pod to reach web-svc by name, and fails saying what the last probe
// saw when none does.
func TestDemo(t *testing.T) {
	// Not parallel: it needs its own control plane behind the tap API
	// (check, tap, the dashboard), and the APIService v1alpha1.tap.linkerd.io
	// is cluster-wide: another install would take it over.
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	cp := "l5d-demo-" + rand.String(4)
	ns := "emojivoto-" + rand.String(5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	lk := func(args ...string) (string, int) {
		return linkerdCode(t, append(args, "-L", cp, "--kubeconfig", kubeconfig)...)
	}

	// linkerd install --tls=optional | kubectl apply -f -
	installControlPlane(t, kubectl, kubeconfig, cp)
	if out, code := lk("check", "--tls", "--wait", "3m"); code != 0 {
		t.Fatalf("linkerd check --tls on a fresh install: exit %d\n%s", code, out)
	}

	// linkerd inject --tls=optional demo/emojivoto.yml | kubectl apply -f -
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	kubectlApply(t, kubectl, kubeconfig, injectDemo(t, cp, ns))
	for _, app := range []string{"emoji-svc", "voting-svc", "web-svc", "vote-bot", "legacy-bot"} {
		readyPod(ctx, t, client, ns, "app="+app)
	}
	waitServiceDNS(ctx, t, client, ns)
	t.Logf("control plane and emojivoto up in %s", time.Since(start).Round(time.Second))
	verifyDemo(ctx, t, demoMesh{cp: cp, ns: ns, authority: func(svc string) string { return svc + "." + ns + ":" }})

	// The tap API on the same running demo: web's requests carry tls=true
	// with a proven peer identity, and legacy-bot's plain text shows as such.
	tapArgs := []string{"tap", "deploy/web", "-n", ns, "-o", "json", "-L", cp, "--kubeconfig", kubeconfig}
	if err := tapUntil(ctx, 90*time.Second, tapArgs, func(ev tapJSON) bool {
		return ev.TLS.Status == "true" && (ev.TLS.ServerID != "" || ev.TLS.ClientID != "")
	}); err != nil {
		t.Errorf("linkerd tap deploy/web -n %s -o json: no request with tls=true and a peer identity: %v", ns, err)
	}
	if err := tapUntil(ctx, 90*time.Second, tapArgs, func(ev tapJSON) bool {
		return ev.Proxy == "in" && ev.TLS.Status == "no_identity"
	}); err != nil {
		t.Errorf("linkerd tap deploy/web -n %s -o json: legacy-bot's plain-text requests never showed: %v", ns, err)
	}
	// Before TLS is required anywhere: who would be refused.
	verifyPreview(t, cp, ns)
	t.Logf("demo test body took %s", time.Since(start).Round(time.Second))
}

// demoMesh is a running demo: its control plane and app namespaces, and
// the authority prefix of each Service's requests (svc.ns: by DNS name).
type demoMesh struct {
	cp, ns    string
	authority func(svc string) string
}

// verifyDemo checks a running demo's figures against the bots' truth, the
// direct scrape, and check --tls.
func verifyDemo(ctx context.Context, t *testing.T, m demoMesh) {
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	cp, ns := m.cp, m.ns
	start := time.Now()
	lk := func(args ...string) (string, int) {
		return linkerdCode(t, append(args, "-L", cp, "--kubeconfig", kubeconfig)...)
	}
	authorityRow := func(rows map[string]row, svc, _ string) *row {
		for _, r := range rows {
			if strings.HasPrefix(r.Name, m.authority(svc)) {
				return &r
			}
		}
		return nil
	}

	// Traffic reaches the control plane's Prometheus.
	localcluster.Eventually(t, 3*time.Minute, func() error {
		rows, stderr, err := statRowsStderr("stat", "authority", "-n", ns, "-L", cp, "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			return err
		}
		if strings.Contains(stderr, "scraping every meshed proxy directly") {
			return fmt.Errorf("stat did not use the control plane's Prometheus: %s", stderr)
		}
		for _, a := range []string{"web-svc", "emoji-svc", "voting-svc"} {
			if r := authorityRow(rows, a, ns); r == nil || r.RPS == nil || *r.RPS <= 0 {
				return fmt.Errorf("no traffic on %s yet", a)
			}
		}
		return nil
	})
	t.Logf("first live table %s after the apps were up", time.Since(start).Round(time.Second))

	// The bots' ground truth over one window, against stat's figures for
	// the same window from Prometheus.
	bots := map[string]string{}
	for _, app := range []string{"vote-bot", "legacy-bot"} {
		bots[app] = fmt.Sprintf("http://%s:8802/truth", readyPod(ctx, t, client, ns, "app="+app).Status.PodIP)
	}
	const window = 40 * time.Second
	time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
	before := truths(t, bots)
	time.Sleep(window)
	after := truths(t, bots)
	at := after["vote-bot"].At.UTC().Truncate(time.Second)
	measured := after["vote-bot"].At.Sub(before["vote-bot"].At).Seconds()
	sent := func(bot string) (sent, failed float64) {
		for _, route := range []string{"/api/list", "/api/vote"} {
			a, b := after[bot].Targets[route], before[bot].Targets[route]
			if a == nil {
				continue
			}
			sent += float64(a.Sent)
			failed += float64(a.Failed)
			if b != nil {
				sent -= float64(b.Sent)
				failed -= float64(b.Failed)
			}
		}
		return sent, failed
	}
	meshedSent, meshedFailed := sent("vote-bot")
	plainSent, plainFailed := sent("legacy-bot")
	wantRPS := (meshedSent + plainSent) / measured
	wantSuccess := 1 - (meshedFailed+plainFailed)/(meshedSent+plainSent)
	wantTLS := meshedSent / (meshedSent + plainSent)
	t.Logf("truth over %.1fs: vote-bot %v sent (%v failed), legacy-bot %v sent (%v failed): %.3f rps to web, success %.4f, TLS share %.3f",
		measured, meshedSent, meshedFailed, plainSent, plainFailed, wantRPS, wantSuccess, wantTLS)
	if meshedSent == 0 || plainSent == 0 {
		t.Fatalf("the bots sent nothing in the window: %+v / %+v", before, after)
	}

	var authority, deploy map[string]row
	atArgs := []string{"-t", fmt.Sprintf("%ds", int(window.Seconds())), "--at", at.Format(time.RFC3339), "-L", cp, "--kubeconfig", kubeconfig, "-o", "json"}
	localcluster.Eventually(t, 90*time.Second, func() error {
		var err error
		// Prometheus must have scraped past the window's end first.
		if authority, err = statRows(append([]string{"stat", "authority", "-n", ns}, atArgs...)...); err != nil {
			return err
		}
		if deploy, err = statRows(append([]string{"stat", "deploy", "-n", ns}, atArgs...)...); err != nil {
			return err
		}
		if r := authorityRow(authority, "web-svc", ns); r == nil || r.Success == nil {
			return fmt.Errorf("no web-svc figures for the window ending %s yet", at)
		}
		return nil
	})
	web := authorityRow(authority, "web-svc", ns)
	for _, g := range []struct {
		name string
		r    *row
	}{{"authority web-svc", web}, {"deploy/web", rowPtr(deploy, ns+"/web")}} {
		if g.r == nil || g.r.RPS == nil || g.r.Success == nil {
			t.Errorf("%s: no figures: %+v", g.name, g.r)
			continue
		}
		if rel := math.Abs(*g.r.RPS-wantRPS) / wantRPS; rel > 0.15 {
			t.Errorf("%s: %.3f rps, the bots sent %.3f rps (%.0f%% off, over 15%%)", g.name, *g.r.RPS, wantRPS, 100*rel)
		}
		if d := math.Abs(*g.r.Success - wantSuccess); d > 0.02 {
			t.Errorf("%s: success %.4f, the bots saw %.4f (%.1f points off, over 2)", g.name, *g.r.Success, wantSuccess, 100*d)
		}
	}

	// TLS: web → emoji and web → voting are meshed to meshed; web-svc also
	// gets legacy-bot's plain text, named no_tls_from_remote.
	for _, a := range []string{"emoji-svc", "voting-svc"} {
		if r := authorityRow(authority, a, ns); r == nil || r.TLS == nil || *r.TLS != 1 {
			t.Errorf("authority %s: %+v, want TLS 100%% (meshed to meshed)", a, r)
		}
	}
	switch {
	case web.TLS == nil || *web.TLS >= 1:
		t.Errorf("authority web-svc: TLS %v, want below 100%% (legacy-bot is not meshed)", deref(web.TLS))
	case math.Abs(*web.TLS-wantTLS) > 0.05:
		t.Errorf("authority web-svc: TLS %.3f, vote-bot's share of the requests is %.3f", *web.TLS, wantTLS)
	}
	if web.NoTLS["no_tls_from_remote"] <= 0 {
		t.Errorf("authority web-svc: no_tls %v, want no_tls_from_remote for legacy-bot's requests", web.NoTLS)
	}

	// Prometheus and direct scraping agree: stat scrapes the proxies itself
	// when the -L namespace has no Prometheus, over a window whose end the
	// Prometheus query then uses.
	direct, stderr, err := statRowsStderr("stat", "deploy", "-n", ns, "-L", "kube-public", "-t", "30s", "--kubeconfig", kubeconfig, "-o", "json")
	if err != nil || !strings.Contains(stderr, "scraping every meshed proxy directly") {
		t.Fatalf("direct scraping: %v: %s", err, stderr)
	}
	end := time.Now().UTC().Truncate(time.Second)
	var viaProm map[string]row
	localcluster.Eventually(t, 90*time.Second, func() error {
		var err error
		viaProm, err = statRows("stat", "deploy", "-n", ns, "-t", "30s", "--at", end.Format(time.RFC3339), "-L", cp, "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			return err
		}
		if r := rowPtr(viaProm, ns+"/web"); r == nil || r.Success == nil {
			return fmt.Errorf("no deploy/web figures for the window ending %s yet", end)
		}
		return nil
	})
	for _, name := range []string{"web", "emoji", "voting"} {
		d, p := rowPtr(direct, ns+"/"+name), rowPtr(viaProm, ns+"/"+name)
		if d == nil || p == nil || d.RPS == nil || p.RPS == nil || d.Success == nil || p.Success == nil || d.TLS == nil || p.TLS == nil {
			t.Errorf("deploy/%s: direct %+v, Prometheus %+v", name, d, p)
			continue
		}
		if rel := math.Abs(*d.RPS-*p.RPS) / *p.RPS; rel > 0.15 {
			t.Errorf("deploy/%s: %.3f rps scraped directly, %.3f rps from Prometheus", name, *d.RPS, *p.RPS)
		}
		// The two windows cannot have the same edges (Prometheus samples
		// every 10 s, stat's own scrapes at the window's ends), so they
		// hold different requests, and which votes fail is random (the
		// bots pick emoji at random; one of them always fails): allow two
		// edge requests' share plus three standard errors of the
		// difference of two such shares.
		n := *p.RPS * 30
		fail := 1 - *p.Success
		tol := 0.01 + 2/n + 3*math.Sqrt(2*fail*(1-fail)/n)
		if math.Abs(*d.Success-*p.Success) > tol || math.Abs(*d.TLS-*p.TLS) > 0.05+2/n {
			t.Errorf("deploy/%s: success %.4f / TLS %.3f scraped directly, %.4f / %.3f from Prometheus (success tolerance %.4f)", name, *d.Success, *d.TLS, *p.Success, *p.TLS, tol)
		}
	}

	// check --tls passes on the running demo, and fails naming the owner
	// whose Secret is gone while the CA is down (a running CA would
	// re-create it at once).
	if out, code := lk("check", "--tls"); code != 0 {
		t.Fatalf("linkerd check --tls on the running demo: exit %d\n%s", code, out)
	}
	scale := func(n int) {
		kubectlRun(t, kubectl, kubeconfig, "-n", cp, "scale", "deploy/linkerd-ca", fmt.Sprintf("--replicas=%d", n))
	}
	scale(0)
	t.Cleanup(func() { scale(1) })
	localcluster.Eventually(t, 90*time.Second, func() error {
		pods, err := client.CoreV1().Pods(cp).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=ca"})
		if err != nil || len(pods.Items) > 0 {
			return fmt.Errorf("CA pods left: %v", err)
		}
		return nil
	})
	secret := contract.SecretName("web", contract.KindDeployment)
	if err := client.CoreV1().Secrets(ns).Delete(ctx, secret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	out, code := lk("check", "--tls")
	if code == 0 || !strings.Contains(out, "deploy/web -n "+ns) {
		t.Errorf("check --tls with web's Secret deleted and the CA down: exit %d, want a failure naming deploy/web -n %s:\n%s", code, ns, out)
	}
	scale(1)
	localcluster.Eventually(t, 2*time.Minute, func() error {
		if out, code := lk("check", "--tls"); code != 0 {
			return fmt.Errorf("check --tls after the CA came back: exit %d\n%s", code, out)
		}
		return nil
	})
	t.Logf("demo test body took %s", time.Since(start).Round(time.Second))
}

// injectDemo is `linkerd inject --tls=optional demo/emojivoto.yml` with the
// namespace renamed to ns, so the test owns everything it creates.
func injectDemo(t *testing.T, cp, ns string) []byte {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("..", "demo", "emojivoto.yml"))
	if err != nil {
		t.Fatal(err)
	}
	m := string(src)
	for _, r := range []struct{ old, new string }{
		{"\n  name: emojivoto\n", "\n  name: " + ns + "\n"},
		{"namespace: emojivoto\n", "namespace: " + ns + "\n"},
		{".emojivoto:", "." + ns + ":"},
		// Four times the demo's pace, so a window holds enough requests
		// that one failure more or less at its edges moves success by
		// well under a point; legacy-bot keeps a third of web's traffic.
		{"- name: VOTE_RATE\n          value: \"1\"", "- name: VOTE_RATE\n          value: \"4\""},
		{"- name: VOTE_RATE\n          value: \"0.5\"", "- name: VOTE_RATE\n          value: \"2\""},
	} {
		if !strings.Contains(m, r.old) {
			t.Fatalf("demo/emojivoto.yml no longer has %q; update this test", r.old)
		}
		m = strings.ReplaceAll(m, r.old, r.new)
	}
	cmd := exec.Command(linkerdBin, "inject", "--tls=optional", "-L", cp, "-")
	cmd.Stdin = strings.NewReader(m)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("linkerd inject: %v\n%s", err, stderr.String())
	}
	return out
}

// waitServiceDNS runs one-shot pods that resolve and dial web-svc.NS:80 as
// the apps do, one after another, until one succeeds. kube-proxy and
// CoreDNS may be slow to pick up a new Service on a loaded machine, hence
// the retries; but the apps and proxies depend on DNS, so a cluster where
// no probe ever succeeds fails the test with what the last pod saw.
func waitServiceDNS(ctx context.Context, t *testing.T, client kubernetes.Interface, ns string) {
	t.Helper()
	const wait = 90 * time.Second
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	for try := 1; ; try++ {
		reason := serviceDNSProbe(ctx, client, ns, fmt.Sprintf("dns-probe-%d", try))
		if reason == "" {
			if try > 1 {
				t.Logf("web-svc.%s:80 reachable by name at try %d", ns, try)
			}
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no pod could reach web-svc.%s:80 by name in %v (%d tries; cluster DNS or the Service's ClusterIP); the last probe: %s", ns, wait, try, reason)
		case <-time.After(time.Second):
		}
	}
}

// serviceDNSProbe runs a one-shot pod NAME that resolves and dials
// web-svc.NS:80; it returns "" when that worked, else what the pod saw.
// It watches the pod rather than polling it, and deletes it.
func serviceDNSProbe(ctx context.Context, client kubernetes.Interface, ns, name string) string {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "probe", Image: "ghcr.io/meshtls/emojivoto:test",
				Args: []string{"lookup", "--connect", "web-svc." + ns + ":80"},
			}},
		},
	}
	created, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return "create the probe pod: " + err.Error()
	}
	defer func() {
		zero := int64(0)
		_ = client.CoreV1().Pods(ns).Delete(context.Background(), name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
	}()
	phase, rv := created.Status.Phase, created.ResourceVersion
	for phase != corev1.PodSucceeded && phase != corev1.PodFailed {
		w, err := client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name, ResourceVersion: rv})
		if err != nil {
			return fmt.Sprintf("probe pod %s, watch: %v", phase, err)
		}
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				rv = "" // an error (an expired version): the next watch starts from the pod as it is
				continue
			}
			phase, rv = p.Status.Phase, p.ResourceVersion
			if phase == corev1.PodSucceeded || phase == corev1.PodFailed {
				break
			}
		}
		w.Stop()
		if ctx.Err() != nil {
			return fmt.Sprintf("probe pod still %s", phase)
		}
	}
	if phase == corev1.PodSucceeded {
		return ""
	}
	logs, err := client.CoreV1().Pods(ns).GetLogs(name, &corev1.PodLogOptions{}).DoRaw(context.Background())
	if err != nil {
		return fmt.Sprintf("probe pod %s, logs: %v", phase, err)
	}
	return strings.TrimSpace(strings.SplitN(string(logs), "\n", 2)[0])
}

// truths reads each bot's ground truth.
func truths(t *testing.T, bots map[string]string) map[string]emojivoto.Truth {
	t.Helper()
	out := map[string]emojivoto.Truth{}
	for name, url := range bots {
		body, err := httpGet(url)
		if err != nil {
			t.Fatalf("%s's truth: %v", name, err)
		}
		var tr emojivoto.Truth
		if err := json.Unmarshal([]byte(body), &tr); err != nil {
			t.Fatalf("%s's truth: %v: %s", name, err, body)
		}
		out[name] = tr
	}
	return out
}

func rowPtr(rows map[string]row, key string) *row {
	if r, ok := rows[key]; ok {
		return &r
	}
	return nil
}

// linkerdCode runs the CLI and returns its combined output and exit code.
func linkerdCode(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(linkerdBin, args...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}

func kubectlRun(t *testing.T, kubectl, kubeconfig string, args ...string) {
	t.Helper()
	if out, err := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
