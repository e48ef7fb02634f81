//go:build integration

package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"meshtls/ca"
	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// TestLiveTap is the tap API end to end: linkerd install adds controller
// tap behind the real API server (APIService tap.linkerd.io), the CLI
// reaches it with nothing but a kubeconfig, the API server and the tap
// controller authorise the user, and the controller taps the injected
// deployment's real proxies over mTLS with the controller identity.
func TestLiveTap(t *testing.T) {
	// Not parallel: it needs its own control plane behind the tap API
	// (check, tap, the dashboard), and the APIService v1alpha1.tap.linkerd.io
	// is cluster-wide: another install would take it over.
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	ns := localcluster.Namespace(t)
	cp := "l5d-" + rand.String(5)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	installControlPlane(t, kubectl, kubeconfig, cp)
	_ = client.AppsV1().Deployments(cp).Delete(ctx, "linkerd-prometheus", metav1.DeleteOptions{})
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=destination")
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=ca")
	tapPod := readyPod(ctx, t, client, cp, contract.ComponentLabel+"=tap")
	inject := func(manifest string) { t.Helper(); injectApply(t, kubectl, kubeconfig, cp, manifest) }
	inject(demoDeployment(ns, "emoji", "emoji", map[string]string{"GRPC_PORT": "8080"}, 8080) +
		demoDeployment(ns, "voting", "voting", map[string]string{"GRPC_PORT": "8080"}, 8080))
	emoji := readyPod(ctx, t, client, ns, "app=emoji")
	voting := readyPod(ctx, t, client, ns, "app=voting")
	inject(demoDeployment(ns, "web", "web", map[string]string{
		"WEB_PORT": "8080", "EMOJISVC_HOST": emoji.Status.PodIP + ":8080", "VOTINGSVC_HOST": voting.Status.PodIP + ":8080",
	}, 8080))
	web := readyPod(ctx, t, client, ns, "app=web")
	inject(demoDeployment(ns, "vote-bot", "vote-bot", map[string]string{
		"WEB_HOST": web.Status.PodIP + ":8080", "VOTE_RATE": "5", "TRUTH_PORT": "8802",
	}, 8802))
	voteBot := readyPod(ctx, t, client, ns, "app=vote-bot")

	// linkerd check says when the APIService is Available.
	localcluster.Eventually(t, 2*time.Minute, func() error {
		out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "apiservice", contract.TapAPIService,
			"-o", `jsonpath={.status.conditions[?(@.type=="Available")].status} {.status.conditions[?(@.type=="Available")].message}`).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "True") {
			return fmt.Errorf("APIService %s not Available: %s %v", contract.TapAPIService, out, err)
		}
		return nil
	})

	// Two ServiceAccounts: one bound to the tap-view ClusterRole in the
	// namespace, one with nothing.
	for _, sa := range []string{"tapper", "nobody"} {
		if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := client.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tapper-tap-view"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: contract.TapViewClusterRole(cp)},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "tapper", Namespace: ns}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	tapperKC := saKubeconfig(t, kubectl, kubeconfig, ns, "tapper")
	nobodyKC := saKubeconfig(t, kubectl, kubeconfig, ns, "nobody")

	t.Run("allowed user sees mTLS requests", func(t *testing.T) {
		emojiID := contract.Identity("emoji", contract.KindDeployment, ns, cp)
		votingID := contract.Identity("voting", contract.KindDeployment, ns, cp)
		localcluster.Eventually(t, 2*time.Minute, func() error {
			return tapUntil(ctx, 60*time.Second, []string{"tap", "deploy/web", "-n", ns, "-L", cp, "--kubeconfig", tapperKC, "-o", "json"},
				func(ev tapJSON) bool {
					// web calls emoji and voting through its outbound
					// proxy, with mTLS to the server's identity.
					return ev.Type == "req" && ev.Proxy == "out" && ev.TLS.Status == "true" &&
						(ev.TLS.ServerID == emojiID || ev.TLS.ServerID == votingID)
				})
		})
	})

	t.Run("inbound source is named after the calling pod", func(t *testing.T) {
		// web's proxy knows vote-bot only by its address; the tap API
		// names it from its pod cache.
		var seen tapJSON
		localcluster.Eventually(t, 2*time.Minute, func() error {
			return tapUntil(ctx, 60*time.Second, []string{"tap", "deploy/web", "-n", ns, "-L", cp, "--kubeconfig", tapperKC, "-o", "json"},
				func(ev tapJSON) bool {
					if ev.Type != "req" || ev.Proxy != "in" || ev.Source.IP != voteBot.Status.PodIP {
						return false
					}
					seen = ev
					return true
				})
		})
		if seen.Source.Resource != "deploy/vote-bot" || seen.Source.Metadata["pod"] != voteBot.Name || seen.Source.Metadata["namespace"] != ns {
			t.Errorf("inbound request from vote-bot's pod %s: source %+v, want resource deploy/vote-bot, pod %s, namespace %s",
				voteBot.Status.PodIP, seen.Source, voteBot.Name, ns)
		}
		if seen.Destination.Resource != "deploy/web" {
			t.Errorf("inbound destination %+v, want deploy/web", seen.Destination)
		}
	})

	t.Run("ServiceAccount without the permission gets 403", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, linkerdBin, "tap", "deploy/web", "-n", ns, "-L", cp, "--kubeconfig", nobodyKC)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		if err == nil {
			t.Fatal("tap as a ServiceAccount without tap-view succeeded")
		}
		want := fmt.Sprintf(`user "system:serviceaccount:%s:nobody" cannot watch deployments/tap in namespace %q`, ns, ns)
		lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
		if len(lines) != 1 || !strings.Contains(lines[0], want) || !strings.Contains(lines[0], contract.TapViewClusterRole(cp)) {
			t.Errorf("stderr:\n%s\nwant one line with %q and the ClusterRole to bind", stderr.String(), want)
		}
	})

	t.Run("the serving key is made in the cluster and only the CA sets the caBundle", func(t *testing.T) {
		sec, err := client.CoreV1().Secrets(cp).Get(ctx, contract.TapServingSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if mf := sec.ManagedFields; !slices.ContainsFunc(mf, func(m metav1.ManagedFieldsEntry) bool { return m.Manager == ca.FieldManager(cp) }) {
			t.Errorf("Secret %s/%s written by %v, want the CA (%s)", cp, contract.TapServingSecret, mf, ca.FieldManager(cp))
		}
		out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "apiservice", contract.TapAPIService, "-o", "jsonpath={.spec.caBundle}").Output()
		if err != nil {
			t.Fatal(err)
		}
		bundle, err := base64.StdEncoding.DecodeString(string(out))
		if err != nil || !bytes.Equal(bundle, sec.Data[ca.TapServingCAKey]) {
			t.Errorf("APIService caBundle (%d bytes, %v) is not the CA-written %s", len(bundle), err, ca.TapServingCAKey)
		}
		// The tap API's own token cannot plant a root for its API nor
		// replace its serving key: asked, and tried.
		tapSA := "system:serviceaccount:" + cp + ":" + contract.TapComponent
		for _, args := range [][]string{
			{"patch", "apiservices/" + contract.TapAPIService},
			{"update", "secrets/" + contract.TapServingSecret, "-n", cp},
			{"create", "secrets", "-n", cp},
		} {
			out, _ := exec.Command(kubectl, append([]string{"--kubeconfig", kubeconfig, "auth", "can-i", "--as", tapSA}, args...)...).Output()
			if strings.TrimSpace(string(out)) != "no" {
				t.Errorf("kubectl auth can-i %v as %s: %q, want no", args, tapSA, out)
			}
		}
		// The tap API holds its own identity, the only one proxies'
		// tap ports accept, not the destination service's.
		idSec, err := client.CoreV1().Secrets(cp).Get(ctx, contract.SecretName(contract.TapComponent, contract.KindDeployment), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := idSec.Annotations[contract.IdentityAnnotation]; got != contract.TapIdentity(cp) {
			t.Errorf("the tap API's identity is %q, want %q", got, contract.TapIdentity(cp))
		}
		for _, v := range tapPod.Spec.Volumes {
			if v.Secret != nil && v.Secret.SecretName == contract.SecretName(contract.ControllerComponent, contract.KindDeployment) {
				t.Errorf("the tap pod mounts the destination's identity Secret %s", v.Secret.SecretName)
			}
		}
		tapKC := saKubeconfig(t, kubectl, kubeconfig, cp, contract.TapComponent)
		out, err = exec.Command(kubectl, "--kubeconfig", tapKC, "patch", "apiservice", contract.TapAPIService, "--type=merge",
			"-p", `{"spec":{"caBundle":"`+base64.StdEncoding.EncodeToString([]byte("planted"))+`"}}`).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "forbidden") {
			t.Errorf("the tap ServiceAccount patched the APIService: %v %s", err, out)
		}
		// A caBundle changed by anyone else is set back by the CA (it
		// checks every minute), and the tap API is Available again.
		if out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "patch", "apiservice", contract.TapAPIService, "--type=merge",
			"-p", `{"spec":{"caBundle":"`+base64.StdEncoding.EncodeToString(sec.Data[corev1.TLSCertKey])+`"}}`).CombinedOutput(); err != nil {
			t.Fatalf("patch the caBundle as the admin: %v %s", err, out)
		}
		localcluster.Eventually(t, 3*time.Minute, func() error {
			out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "apiservice", contract.TapAPIService,
				"-o", `jsonpath={.spec.caBundle} {.status.conditions[?(@.type=="Available")].status}`).Output()
			if err != nil {
				return err
			}
			b64, avail, _ := strings.Cut(string(out), " ")
			bundle, _ := base64.StdEncoding.DecodeString(b64)
			if !bytes.Equal(bundle, sec.Data[ca.TapServingCAKey]) || avail != "True" {
				return fmt.Errorf("caBundle not set back yet (Available %q)", avail)
			}
			return nil
		})
	})

	t.Run("the tap API trusts only the front proxy and asks the API server", func(t *testing.T) {
		pki := filepath.Join(localcluster.Dir(t), "pki")
		sec, err := client.CoreV1().Secrets(cp).Get(ctx, contract.TapServingSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(sec.Data[ca.TapServingCAKey]) {
			t.Fatalf("Secret %s/%s holds no %s", cp, contract.TapServingSecret, ca.TapServingCAKey)
		}
		url := fmt.Sprintf("https://%s:%d/apis/tap.linkerd.io/v1alpha1/watch/namespaces/%s/deployments/web/tap", tapPod.Status.PodIP, contract.TapAPIPort, ns)
		call := func(certFile, keyFile, user string) (int, string) {
			t.Helper()
			cfg := &tls.Config{RootCAs: roots, ServerName: contract.TapComponent + "." + cp + ".svc"}
			if certFile != "" {
				c, err := tls.LoadX509KeyPair(filepath.Join(pki, certFile), filepath.Join(pki, keyFile))
				if err != nil {
					t.Fatal(err)
				}
				// Sent even when the server asks for another CA's.
				cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
			}
			hc := http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
			req, _ := http.NewRequest(http.MethodPost, url, nil)
			if user != "" {
				req.Header.Set("X-Remote-User", user)
				req.Header.Add("X-Remote-Group", "system:serviceaccounts")
				req.Header.Add("X-Remote-Group", "system:authenticated")
			}
			resp, err := hc.Do(req)
			if err != nil {
				// The handshake refused the certificate.
				return 0, err.Error()
			}
			defer resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return resp.StatusCode, ""
			}
			var st metav1.Status
			_ = json.NewDecoder(resp.Body).Decode(&st)
			return resp.StatusCode, st.Message
		}
		nobody := "system:serviceaccount:" + ns + ":nobody"
		// Headers alone are not trusted: a caller must hold the front
		// proxy's client certificate.
		if code, msg := call("", "", nobody); code != http.StatusUnauthorized || !strings.Contains(msg, "no client certificate") {
			t.Errorf("no client certificate: %d %s", code, msg)
		}
		if code, msg := call("admin.crt", "admin.key", "system:admin"); code != 0 || !strings.Contains(msg, "certificate") {
			t.Errorf("a certificate of the cluster CA, not the front proxy's, was not refused at the handshake: %d %s", code, msg)
		}
		// The front proxy's certificate with a user the API server did
		// not authorise: the controller's own SubjectAccessReview says no.
		want := fmt.Sprintf(`user %q cannot watch deployments/tap in namespace %q`, nobody, ns)
		if code, msg := call("front-proxy-client.crt", "front-proxy-client.key", nobody); code != http.StatusForbidden || !strings.Contains(msg, want) {
			t.Errorf("front proxy, user without tap-view: %d %s", code, msg)
		}
		if code, msg := call("front-proxy-client.crt", "front-proxy-client.key", "system:serviceaccount:"+ns+":tapper"); code != http.StatusOK {
			t.Errorf("front proxy, user with tap-view: %d %s", code, msg)
		}
	})

	t.Run("linkerd check sees the tap API", func(t *testing.T) {
		out, err := exec.CommandContext(ctx, linkerdBin, "check", "-L", cp, "--kubeconfig", kubeconfig, "-o", "json").Output()
		if err != nil && len(out) == 0 {
			t.Fatalf("linkerd check: %v", err)
		}
		var res struct {
			Categories []struct {
				Checks []struct {
					Description string `json:"description"`
					Status      string `json:"status"`
				} `json:"checks"`
			} `json:"categories"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("linkerd check -o json: %v\n%s", err, out)
		}
		found := false
		var all []struct {
			Description string `json:"description"`
			Status      string `json:"status"`
		}
		for _, c := range res.Categories {
			all = append(all, c.Checks...)
		}
		for _, r := range all {
			if r.Description == "tap API is available" {
				found = true
				if r.Status != "ok" {
					t.Errorf("tap API check: %s\n%s", r.Status, out)
				}
			}
		}
		if !found {
			t.Errorf("linkerd check has no tap API check:\n%s", out)
		}
	})

	t.Run("max-rps across the proxies, and the drops are reported", func(t *testing.T) {
		// vote-bot sends 10 requests a second to web, each making one
		// or two more: far above 1 request a second.
		cmd := exec.CommandContext(ctx, linkerdBin, "tap", "deploy/web", "-n", ns, "-L", cp, "--kubeconfig", tapperKC, "--max-rps", "1", "-o", "json")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		started := time.Now()
		// Count the requests shown as they come; the clock starts at the
		// first, so a slow start-up (CLI, API aggregation, the tap
		// controller's dial) neither empties nor inflates the count.
		first := make(chan time.Time, 1)
		var reqs atomic.Int64
		scanned := make(chan struct{})
		go func() {
			defer close(scanned)
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if strings.Contains(sc.Text(), `"type":"req"`) && reqs.Add(1) == 1 {
					first <- time.Now()
				}
			}
		}()
		var from time.Time
		select {
		case from = <-first:
		case <-time.After(90 * time.Second):
			_ = cmd.Process.Kill()
			<-scanned
			_ = cmd.Wait()
			t.Fatalf("no request shown at --max-rps 1 within 90 s\n%s", stderr.String())
		}
		time.Sleep(5 * time.Second)
		_ = cmd.Process.Signal(os.Interrupt)
		<-scanned
		if err := cmd.Wait(); err != nil {
			t.Fatalf("tap stopped with Ctrl-C: %v\n%s", err, stderr.String())
		}
		// One second's burst, then one a second: at most 1 + s + 1 in the
		// s seconds measured from the first shown request to the end.
		s := time.Since(from).Seconds()
		if n := reqs.Load(); float64(n) > 2+math.Ceil(s) {
			t.Errorf("%d requests shown at --max-rps 1 over %.1f s", n, s)
		}
		if !strings.Contains(stderr.String(), "dropped by the source") {
			t.Errorf("no drop count on stderr: %q", stderr.String())
		}
		t.Logf("--max-rps 1: %d requests shown in %.1f s from the first (%.1f s after start); %s", reqs.Load(), s, from.Sub(started).Seconds(), strings.TrimSpace(stderr.String()))
	})

	t.Run("the TUI in a real terminal, live", func(t *testing.T) {
		if _, err := exec.LookPath("tmux"); err != nil {
			t.Fatal("tmux is not installed: run `make deps` (installs Debian's tmux package)")
		}
		sock := filepath.Join(t.TempDir(), "tmux.sock")
		tmux := func(args ...string) (string, error) {
			out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
			return string(out), err
		}
		t.Cleanup(func() { _, _ = tmux("kill-server") })
		command := strings.Join([]string{linkerdBin, "tap", "deploy/web", "-n", ns, "-L", cp, "--kubeconfig", tapperKC, "--tui"}, " ")
		if out, err := tmux("-f", "/dev/null", "new-session", "-d", "-s", "tap", "-x", "160", "-y", "30",
			"-e", "LANG=C.UTF-8", "-e", "TERM=xterm-256color", command); err != nil {
			t.Fatalf("tmux new-session: %v: %s", err, out)
		}
		var screen string
		deadline := time.Now().Add(60 * time.Second)
		for {
			screen, _ = tmux("capture-pane", "-p", "-t", "tap")
			// Web's outbound calls to emoji are mutual TLS, marked with
			// the lock; the status bar counts the proxy.
			if strings.Contains(screen, "deploy/web ") && strings.Contains(screen, "deploy/emoji") && strings.Contains(screen, "🔒 mtls") && strings.Contains(screen, "proxies 1") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the live TUI never showed web's mTLS calls:\n%s", screen)
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Logf("linkerd tap deploy/web --tui, live, captured from tmux:\n%s", screen)
		_, _ = tmux("send-keys", "-t", "tap", "q")
	})

	t.Run("unknown deployment is named", func(t *testing.T) {
		cmd := exec.CommandContext(ctx, linkerdBin, "tap", "deploy/nope", "-n", ns, "-L", cp, "--kubeconfig", tapperKC)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), `deployment "nope" not found in namespace "`+ns+`"`) {
			t.Errorf("tap of a missing deployment: %v\n%s", err, stderr.String())
		}
	})

	t.Run("a stalled tap client does not slow the traffic", func(t *testing.T) {
		url := fmt.Sprintf("http://%s:8080/api/list", web.Status.PodIP)
		dropsURL := fmt.Sprintf("http://%s:%d/metrics", tapPod.Status.PodIP, contract.TapAdminPort)
		before := loadLatency(t, url, 3*time.Second)
		// A client that opens an uncapped tap and never reads it: the
		// API server's and the controller's buffers fill, and then the
		// controller drops (it never waits on a client, and proxies never
		// wait on it).
		cfg, err := clientcmd.BuildConfigFromFlags("", tapperKC)
		if err != nil {
			t.Fatal(err)
		}
		// The same tap, read as fast as it comes: what tapping itself
		// costs on this machine (the proxy reports every request, the
		// controller and the API server pass it on).
		reader := openStalledTap(t, cfg, ns)
		readDone := make(chan int64)
		go func() { n, _ := io.Copy(io.Discard, reader); readDone <- n }()
		reading := loadLatency(t, url, 3*time.Second)
		reader.Close()
		if n := <-readDone; n == 0 {
			t.Fatal("the reading tap client received nothing")
		}
		drops0 := metricValue(t, dropsURL, "tap_events_dropped_total")
		stalled := openStalledTap(t, cfg, ns)
		defer stalled.Close()
		localcluster.Eventually(t, 90*time.Second, func() error {
			loadLatency(t, url, time.Second)
			if d := metricValue(t, dropsURL, "tap_events_dropped_total"); d <= drops0 {
				return fmt.Errorf("the stalled client has not filled the buffers yet (%v events dropped)", d-drops0)
			}
			return nil
		})
		// A stall that reached the traffic would hold requests for as long
		// as the client stalls: loadLatency fails on any request that
		// takes its client's 10 s timeout. Meanwhile the controller keeps
		// dropping the events of the requests that go through. Medians
		// taken at different moments on a shared machine are logged, not
		// compared.
		drops1 := metricValue(t, dropsURL, "tap_events_dropped_total")
		during := loadLatency(t, url, 3*time.Second)
		if d := metricValue(t, dropsURL, "tap_events_dropped_total"); d <= drops1 {
			t.Errorf("no events dropped while requests went by with a stalled tap client (%v before, %v after): did something wait on it?", drops1, d)
		}
		t.Logf("median latency of GET /api/list through web's proxy under load: %v without a tap, %v with a tap client reading everything, %v with a stalled tap client (whose events the controller drops)", before, reading, during)
	})
}

// loadLatency sends requests from 8 clients for d and returns their
// median latency.
func loadLatency(t *testing.T, url string, d time.Duration) time.Duration {
	t.Helper()
	var mu sync.Mutex
	var ds []time.Duration
	var failed error
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := http.Client{Timeout: 10 * time.Second}
			for time.Now().Before(deadline) {
				start := time.Now()
				resp, err := c.Get(url)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("GET %s: %s", url, resp.Status)
					}
				}
				mu.Lock()
				if err != nil && failed == nil {
					failed = err
				}
				ds = append(ds, time.Since(start))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		t.Fatal(failed)
	}
	slices.Sort(ds)
	return ds[len(ds)/2]
}

func metricValue(t *testing.T, url, name string) float64 {
	t.Helper()
	body, err := httpGet(url)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %q", name, line)
			}
			return f
		}
	}
	t.Fatalf("no %s in %s", name, url)
	return 0
}

type tapJSON struct {
	Type        string      `json:"type"`
	Proxy       string      `json:"proxy"`
	Source      tapPeerJSON `json:"source"`
	Destination tapPeerJSON `json:"destination"`
	TLS         struct {
		Status   string `json:"status"`
		ServerID string `json:"server_id"`
		ClientID string `json:"client_id"`
	} `json:"tls"`
}

type tapPeerJSON struct {
	IP       string            `json:"ip"`
	Resource string            `json:"resource"`
	Metadata map[string]string `json:"metadata"`
}

// tapUntil runs linkerd with args until an output line satisfies ok.
func tapUntil(ctx context.Context, limit time.Duration, args []string, ok func(tapJSON) bool) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, linkerdBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var seen []string
	for sc.Scan() {
		var ev tapJSON
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("tap -o json printed a line that is not JSON: %q", sc.Text())
		}
		if ok(ev) {
			return nil
		}
		if len(seen) < 5 {
			seen = append(seen, sc.Text())
		}
	}
	cancel()
	_ = cmd.Wait()
	return fmt.Errorf("no matching tap event (first lines %v); stderr: %s", seen, stderr.String())
}

// saKubeconfig writes a kubeconfig that authenticates as a ServiceAccount
// with a fresh token.
func saKubeconfig(t *testing.T, kubectl, adminKC, ns, sa string) string {
	t.Helper()
	tok, err := exec.Command(kubectl, "--kubeconfig", adminKC, "create", "token", sa, "-n", ns, "--duration=1h").Output()
	if err != nil {
		t.Fatalf("kubectl create token %s: %v", sa, err)
	}
	admin, err := clientcmd.LoadFromFile(adminKC)
	if err != nil {
		t.Fatal(err)
	}
	ctx := admin.Contexts[admin.CurrentContext]
	cl := admin.Clusters[ctx.Cluster]
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["c"] = cl
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: strings.TrimSpace(string(tok))}
	cfg.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: sa, Namespace: ns}
	cfg.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), sa+".kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// openStalledTap opens an uncapped tap of the namespace and never reads
// it.
func openStalledTap(t *testing.T, cfg *rest.Config, ns string) io.ReadCloser {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// An empty ObserveRequest: every request, no max_rps.
	req, err := http.NewRequest(http.MethodPost, strings.TrimSuffix(cfg.Host, "/")+"/apis/tap.linkerd.io/v1alpha1/watch/namespaces/"+ns+"/deployments/web/tap", bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		t.Fatalf("stalled tap: %s: %s", resp.Status, b)
	}
	return resp.Body
}
