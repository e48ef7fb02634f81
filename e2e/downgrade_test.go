//go:build integration

package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// proxyMetric sums a proxy's series of name whose labels hold every
// want (a value "!x" means "present and not x").
func proxyMetric(podIP, name string, want map[string]string) (float64, error) {
	body, err := httpGet(fmt.Sprintf("http://%s:%d/metrics", podIP, contract.AdminPort))
	if err != nil {
		return 0, err
	}
	var sum float64
lines:
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len(name)+1:], "} ")
		if !ok {
			continue
		}
		for k, v := range want {
			if neg, ok := strings.CutPrefix(v, "!"); ok {
				if !strings.Contains(labels, k+`="`) || strings.Contains(labels, k+`="`+neg+`"`) {
					continue lines
				}
			} else if !strings.Contains(labels, k+`="`+v+`"`) {
				continue lines
			}
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", name, line, err)
		}
		sum += f
	}
	return sum, nil
}

// TestNoPlainTextThroughDiscoveryOutageAndRootRotation is the issue's
// "never downgrade" end to end: two meshed workloads (web serving,
// vote-bot calling) keep exchanging mTLS, or fail visibly, while the
// destination service is scaled to 0, while a fresh client starts during
// the outage, and across a rotation of the CA's root, after which a new
// server and a new client talk mTLS too (the destination service reloads
// its trust anchors). No proxy ever sends or receives a plain-text request
// on these edges: their own metrics say so.
func TestNoPlainTextThroughDiscoveryOutageAndRootRotation(t *testing.T) {
	t.Parallel()
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	ns := localcluster.Namespace(t)
	cp := "l5d-" + rand.String(5)
	ctx, cancel := context.WithTimeout(context.Background(), 14*time.Minute)
	defer cancel()

	installControlPlane(t, kubectl, kubeconfig, cp)
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=destination")
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=ca")
	inject := func(manifest string) { t.Helper(); injectApply(t, kubectl, kubeconfig, cp, manifest) }
	id := func(deploy string) string { return contract.Identity(deploy, contract.KindDeployment, ns, cp) }

	inject(demoDeployment(ns, "emoji", "emoji", map[string]string{"GRPC_PORT": "8080"}, 8080) +
		demoDeployment(ns, "voting", "voting", map[string]string{"GRPC_PORT": "8080"}, 8080))
	emoji := readyPod(ctx, t, client, ns, "app=emoji")
	voting := readyPod(ctx, t, client, ns, "app=voting")
	webEnv := map[string]string{"WEB_PORT": "8080", "EMOJISVC_HOST": emoji.Status.PodIP + ":8080", "VOTINGSVC_HOST": voting.Status.PodIP + ":8080"}
	inject(demoDeployment(ns, "web", "web", webEnv, 8080))
	web := readyPod(ctx, t, client, ns, "app=web")
	bot := func(name, webIP string) {
		inject(demoDeployment(ns, name, "vote-bot", map[string]string{"WEB_HOST": webIP + ":8080", "VOTE_RATE": "5", "TRUTH_PORT": "8802"}, 8802))
	}
	bot("vote-bot", web.Status.PodIP)
	voteBot := readyPod(ctx, t, client, ns, "app=vote-bot")

	// inboundTLS counts the mTLS requests a server's proxy got from a
	// client identity.
	inboundTLS := func(serverIP, clientID string) (float64, error) {
		return proxyMetric(serverIP, "request_total", map[string]string{"direction": "inbound", "tls": "true", "client_id": clientID})
	}
	// noPlainText checks that no proxy in the list sent or received a
	// plain-text request: any request_total series with tls other than
	// "true" on these meshed edges is a downgrade.
	noPlainText := func(what string, podIPs ...string) {
		t.Helper()
		for _, ip := range podIPs {
			n, err := proxyMetric(ip, "request_total", map[string]string{"tls": "!true"})
			if err != nil {
				t.Fatalf("%s: metrics of %s: %v", what, ip, err)
			}
			if n != 0 {
				body, _ := httpGet(fmt.Sprintf("http://%s:%d/metrics", ip, contract.AdminPort))
				var plain []string
				for _, l := range strings.Split(body, "\n") {
					if strings.HasPrefix(l, "request_total{") && !strings.Contains(l, `tls="true"`) {
						plain = append(plain, l)
					}
				}
				logs, _ := exec.Command(kubectl, "--kubeconfig", kubeconfig, "-n", cp, "logs", "-l", contract.ComponentLabel+"=destination", "--tail=40").CombinedOutput()
				t.Fatalf("%s: the proxy at %s counted %v plain-text requests:\n%s\ndestination service log:\n%s", what, ip, n, strings.Join(plain, "\n"), logs)
			}
		}
	}
	growing := func(what string, count func() (float64, error)) {
		t.Helper()
		before, err := count()
		if err != nil {
			t.Fatal(err)
		}
		localcluster.Eventually(t, 2*time.Minute, func() error {
			n, err := count()
			if err != nil {
				return err
			}
			if n <= before {
				return fmt.Errorf("%s: still %v", what, n)
			}
			return nil
		})
	}
	botToWeb := func() (float64, error) { return inboundTLS(web.Status.PodIP, id("vote-bot")) }
	growing("vote-bot → web over mTLS", botToWeb)
	growing("web → emoji over mTLS", func() (float64, error) { return inboundTLS(emoji.Status.PodIP, id("web")) })
	noPlainText("before the outage", web.Status.PodIP, voteBot.Status.PodIP, emoji.Status.PodIP)

	// The destination service goes away.
	scale := func(replicas int) {
		t.Helper()
		out, err := exec.Command(kubectl, "--kubeconfig", kubeconfig, "-n", cp, "scale", "deployment",
			"-l", contract.ComponentLabel+"=destination", "--replicas="+strconv.Itoa(replicas)).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl scale: %v\n%s", err, out)
		}
	}
	scale(0)
	localcluster.Eventually(t, 2*time.Minute, func() error {
		pods, err := client.CoreV1().Pods(cp).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=destination"})
		if err != nil {
			return err
		}
		if len(pods.Items) > 0 {
			return fmt.Errorf("%d destination pods left", len(pods.Items))
		}
		return nil
	})
	// Known edges stay mTLS through the outage.
	growing("vote-bot → web over mTLS with discovery down", botToWeb)
	growing("web → emoji over mTLS with discovery down", func() (float64, error) { return inboundTLS(emoji.Status.PodIP, id("web")) })

	// A client that starts during the outage has never heard of web: its
	// requests fail visibly (counted refusals), never in plain text.
	bot("vote-bot-2", web.Status.PodIP)
	fresh := readyPod(ctx, t, client, ns, "app=vote-bot-2")
	localcluster.Eventually(t, 2*time.Minute, func() error {
		n, err := proxyMetric(fresh.Status.PodIP, "outbound_tls_refused_total", map[string]string{"reason": "discovery_unavailable"})
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("the fresh client's proxy refused nothing yet")
		}
		return nil
	})
	noPlainText("during the outage", web.Status.PodIP, voteBot.Status.PodIP, emoji.Status.PodIP, fresh.Status.PodIP)

	// Back: the fresh client's requests now go over mTLS.
	scale(1)
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=destination")
	growing("vote-bot-2 → web over mTLS once discovery is back", func() (float64, error) { return inboundTLS(web.Status.PodIP, id("vote-bot-2")) })
	noPlainText("after the outage", web.Status.PodIP, voteBot.Status.PodIP, emoji.Status.PodIP, fresh.Status.PodIP)

	// The CA's root is rotated under the running workloads.
	run(t, "ca", "rotate", "-L", cp, "--kubeconfig", kubeconfig, "--propagation-delay", "15s", "--timeout", "5m")
	growing("vote-bot → web over mTLS after the rotation", botToWeb)
	// A server and a client that start after it, with certificates from
	// the new root only: the destination service must vouch for the new
	// server under the new anchors, or the client would be told it has no
	// identity.
	inject(demoDeployment(ns, "web-2", "web", webEnv, 8080))
	web2 := readyPod(ctx, t, client, ns, "app=web-2")
	bot("vote-bot-3", web2.Status.PodIP)
	bot3 := readyPod(ctx, t, client, ns, "app=vote-bot-3")
	growing("vote-bot-3 → web-2 over mTLS", func() (float64, error) { return inboundTLS(web2.Status.PodIP, id("vote-bot-3")) })
	noPlainText("after the rotation", web.Status.PodIP, voteBot.Status.PodIP, emoji.Status.PodIP, fresh.Status.PodIP, web2.Status.PodIP, bot3.Status.PodIP)
}
