//go:build integration

package e2e

import (
	"bufio"
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

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// TestRequiredTLS is linkerd.io/tls: required on the local cluster. The
// namespace carries the annotation in inject's input, so web (HTTP, with
// an HTTP readiness probe) becomes required without a flag; emoji (gRPC)
// is injected with --tls=required. Then:
//
//   - web is Ready: the kubelet's HTTP probe passes in plain text;
//   - the meshed vote-bot keeps calling web, and web keeps calling emoji,
//     at TLS 100% (web's own row also counts the probes it served in
//     plain text, so vote-bot's share is read with --from);
//   - the unmeshed legacy-bot, and this test as a client from outside the
//     mesh, are refused: HTTP 403 naming no_tls_from_remote (also when the
//     request carries l5d-client-id), gRPC PERMISSION_DENIED;
//   - the refusals are counted (inbound_tls_refused_total), shown by
//     stat -o json per row, and tapped marked refused with legacy-bot's
//     address;
//   - Prometheus still scrapes web's proxy.
func TestRequiredTLS(t *testing.T) {
	// Not parallel: it taps through the APIService v1alpha1.tap.linkerd.io,
	// which is cluster-wide: another test's install would take it over,
	// and its cleanup delete it.
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	ns := localcluster.Namespace(t)
	cp := "l5d-" + rand.String(5)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()

	installControlPlane(t, kubectl, kubeconfig, cp)
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=destination")
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=ca")

	injectTLS(t, kubectl, kubeconfig, cp, "required",
		demoDeployment(ns, "emoji", "emoji", map[string]string{"GRPC_PORT": "8080"}, 8080)+
			demoDeployment(ns, "voting", "voting", map[string]string{"GRPC_PORT": "8080"}, 8080))
	emoji := readyPod(ctx, t, client, ns, "app=emoji")
	voting := readyPod(ctx, t, client, ns, "app=voting")
	// No --tls: the namespace's annotation, in the same input, decides.
	webManifest := fmt.Sprintf("---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  annotations: {%s: %s}\n", ns, contract.TLSAnnotation, contract.TLSRequired) +
		strings.Replace(demoDeployment(ns, "web", "web", map[string]string{
			"WEB_PORT":       "8080",
			"EMOJISVC_HOST":  emoji.Status.PodIP + ":8080",
			"VOTINGSVC_HOST": voting.Status.PodIP + ":8080",
		}, 8080), "tcpSocket: {port: 8080}", "httpGet: {path: /healthz, port: 8080}", 1)
	injectTLS(t, kubectl, kubeconfig, cp, "", webManifest)
	web := readyPod(ctx, t, client, ns, "app=web")
	if env := proxyEnvOf(t, web); env[contract.EnvInboundTLS] != contract.TLSRequired || env[contract.EnvInboundProbes] != "8080:/healthz" {
		t.Fatalf("web's proxy env %v: want required with its probe", env)
	}
	if web.Annotations[contract.TLSAnnotation] != contract.TLSRequired {
		t.Fatalf("web's annotation %q: want the namespace's required", web.Annotations[contract.TLSAnnotation])
	}

	injectApply(t, kubectl, kubeconfig, cp, demoDeployment(ns, "vote-bot", "vote-bot", map[string]string{
		"WEB_HOST": web.Status.PodIP + ":8080", "VOTE_RATE": "5", "TRUTH_PORT": "8802",
	}, 8802))
	// legacy-bot is not injected: plain text from outside the mesh.
	kubectlApply(t, kubectl, kubeconfig, []byte(demoDeployment(ns, "legacy-bot", "vote-bot", map[string]string{
		"WEB_HOST": web.Status.PodIP + ":8080", "VOTE_RATE": "5", "TRUTH_PORT": "8802",
	}, 8802)))
	readyPod(ctx, t, client, ns, "app=vote-bot")
	legacy := readyPod(ctx, t, client, ns, "app=legacy-bot")

	// A plain-text client outside the mesh (this test) is refused, with
	// the reason, identity headers or not.
	for _, hdr := range []string{"", "l5d-client-id"} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:8080/api/list", web.Status.PodIP), nil)
		if hdr != "" {
			req.Header.Set(hdr, "vote-bot.deployment."+ns+".linkerd-managed."+cp+".svc.cluster.local")
		}
		resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), contract.RefusedNoTLS) {
			t.Errorf("plain GET (header %q): %d %q, want 403 naming %s", hdr, resp.StatusCode, body, contract.RefusedNoTLS)
		}
	}
	cc, err := grpc.NewClient("passthrough:///"+emoji.Status.PodIP+":8080", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	err = cc.Invoke(ctx, "/emojivoto.v1.EmojiService/ListAll", &emptypb.Empty{}, &emptypb.Empty{})
	if s := status.Convert(err); s.Code() != codes.PermissionDenied || !strings.Contains(s.Message(), contract.RefusedNoTLS) {
		t.Errorf("plain gRPC to emoji: %v, want PermissionDenied naming %s", err, contract.RefusedNoTLS)
	}

	// The meshed clients keep working over mTLS; legacy-bot's refusals
	// are counted and shown by stat, and web's TLS stays 100%.
	voteBotID := contract.Identity("vote-bot", contract.KindDeployment, ns, cp)
	localcluster.Eventually(t, 3*time.Minute, func() error {
		for _, c := range []struct {
			ip     string
			labels map[string]string
		}{
			{web.Status.PodIP, map[string]string{"direction": "inbound", "tls": "true", "client_id": voteBotID}},
			{emoji.Status.PodIP, map[string]string{"direction": "inbound", "tls": "true"}},
		} {
			if n, err := proxyMetric(c.ip, "request_total", c.labels); err != nil || n == 0 {
				return fmt.Errorf("no mTLS requests %v at %s yet (%v)", c.labels, c.ip, err)
			}
		}
		if n, err := proxyMetric(web.Status.PodIP, "inbound_tls_refused_total", map[string]string{"reason": contract.RefusedNoTLS, "protocol": "http"}); err != nil || n < 3 {
			return fmt.Errorf("web refused %v HTTP requests (%v), want this test's 2 and legacy-bot's", n, err)
		}
		if n, err := proxyMetric(emoji.Status.PodIP, "inbound_tls_refused_total", map[string]string{"protocol": "grpc"}); err != nil || n < 1 {
			return fmt.Errorf("emoji refused %v gRPC calls (%v)", n, err)
		}
		return nil
	})

	localcluster.Eventually(t, 2*time.Minute, func() error {
		rows, err := requiredStatRows("stat", "deploy", "-n", ns, "-L", "kube-public", "-t", "10s", "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			return err
		}
		w, e := rows["web"], rows["emoji"]
		switch {
		case w.RPS == nil || *w.RPS <= 0:
			return fmt.Errorf("web row: rps %v, want traffic", deref(w.RPS))
		case w.Refused <= 0 || w.RefusedReasons[contract.RefusedNoTLS] <= 0:
			return fmt.Errorf("web row refused %v %v, want legacy-bot's", w.Refused, w.RefusedReasons)
		case e.TLS == nil || *e.TLS != 1:
			return fmt.Errorf("emoji row: tls %v, want 100%%", deref(e.TLS))
		}
		// web's own row also counts the kubelet's plain-text probes it
		// served; what vote-bot sent it is all mTLS.
		rows, err = requiredStatRows("stat", "deploy/web", "-n", ns, "--from", "deploy/vote-bot", "-L", "kube-public", "-t", "10s", "--kubeconfig", kubeconfig, "-o", "json")
		if err != nil {
			return err
		}
		if v := rows["web"]; v.TLS == nil || *v.TLS != 1 || v.RPS == nil || *v.RPS <= 0 {
			return fmt.Errorf("vote-bot -> web: tls %v rps %v, want traffic at TLS 100%%", deref(v.TLS), deref(v.RPS))
		}
		return nil
	})

	// tap shows legacy-bot's requests refused, from its address.
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=tap")
	localcluster.Eventually(t, 2*time.Minute, func() error {
		out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "get", "apiservice", contract.TapAPIService,
			"-o", `jsonpath={.status.conditions[?(@.type=="Available")].status}`).CombinedOutput()
		if err != nil || !strings.HasPrefix(string(out), "True") {
			return fmt.Errorf("APIService %s not Available: %s %v", contract.TapAPIService, out, err)
		}
		return nil
	})
	localcluster.Eventually(t, 2*time.Minute, func() error {
		return tapRefused(ctx, []string{"tap", "deploy/web", "-n", ns, "-L", cp, "--kubeconfig", kubeconfig, "-o", "json"}, legacy.Status.PodIP)
	})

	// Prometheus still scrapes the required proxy's admin port.
	prom := readyPod(ctx, t, client, cp, contract.ComponentLabel+"=prometheus")
	localcluster.Eventually(t, 2*time.Minute, func() error {
		return promHasProxyTarget(fmt.Sprintf("http://%s:9090", prom.Status.PodIP), ns, web.Name, "web")
	})
	// And web stayed Ready throughout.
	if p := readyPod(ctx, t, client, ns, "app=web"); p.Name != web.Name {
		t.Errorf("web's pod changed from %s to %s", web.Name, p.Name)
	}
}

// injectTLS is `linkerd inject [--tls=MODE] -L cp - | kubectl apply`.
func injectTLS(t *testing.T, kubectl, kubeconfig, cp, mode, manifest string) {
	t.Helper()
	args := []string{"inject", "-L", cp, "-"}
	if mode != "" {
		args = append(args, "--tls="+mode)
	}
	cmd := exec.Command(linkerdBin, args...)
	cmd.Stdin = strings.NewReader(manifest)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("linkerd inject: %v\n%s", err, stderr.String())
	}
	kubectlApply(t, kubectl, kubeconfig, out)
}

func proxyEnvOf(t *testing.T, p corev1.Pod) map[string]string {
	t.Helper()
	for _, c := range p.Spec.Containers {
		if c.Name == contract.ProxyContainerName {
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			return env
		}
	}
	t.Fatalf("pod %s has no proxy", p.Name)
	return nil
}

type requiredRow struct {
	Name           string             `json:"name"`
	RPS            *float64           `json:"rps"`
	TLS            *float64           `json:"tls"`
	Refused        float64            `json:"refused"`
	RefusedReasons map[string]float64 `json:"refused_reasons"`
}

func requiredStatRows(args ...string) (map[string]requiredRow, error) {
	cmd := exec.Command(linkerdBin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("linkerd %v: %v: %s", args, err, stderr.String())
	}
	var rows []requiredRow
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("linkerd %v: %v: %s", args, err, out)
	}
	m := map[string]requiredRow{}
	for _, r := range rows {
		m[r.Name] = r
	}
	return m, nil
}

// tapRefused runs tap until an end event marked refused comes from src.
func tapRefused(ctx context.Context, args []string, src string) error {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
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
	for sc.Scan() {
		var ev struct {
			Type   string      `json:"type"`
			Source tapPeerJSON `json:"source"`
			End    *struct {
				Refused string `json:"refused"`
			} `json:"end"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("tap -o json printed a line that is not JSON: %q", sc.Text())
		}
		if ev.End != nil && ev.End.Refused == contract.RefusedNoTLS && ev.Source.IP == src {
			return nil
		}
	}
	return fmt.Errorf("no refused tap event from %s; stderr: %s", src, stderr.String())
}
