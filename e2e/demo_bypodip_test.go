package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/rand"

	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// TestDemoFiguresByPodIP runs TestDemo's checks (stat against the bots'
// ground truth, TLS by authority, Prometheus against direct scraping,
// check --tls) on the demo's apps wired by pod IP instead of Service
// names, as TestMeshedWorkloadsTalkMutualTLS wires them, so they hold on a
// local cluster without cluster DNS or ClusterIPs too. Authorities are then
// pod addresses; legacy-bot runs uninjected, as in demo/emojivoto.yml.
func TestDemoFiguresByPodIP(t *testing.T) {
	client := localcluster.Client(t)
	kubeconfig := localcluster.Kubeconfig(t)
	kubectl := localcluster.Kubectl(t)
	ns := localcluster.Namespace(t)
	cp := "l5d-" + rand.String(5)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	installYAML := run(t, "install", "--tls=optional", "-L", cp)
	t.Cleanup(func() {
		del := exec.Command(kubectl, "--kubeconfig", kubeconfig, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
		del.Stdin = bytes.NewReader(installYAML)
		_ = del.Run()
	})
	kubectlApply(t, kubectl, kubeconfig, installYAML)
	controller := readyPod(ctx, t, client, cp, contract.ComponentLabel+"=destination")
	readyPod(ctx, t, client, cp, contract.ComponentLabel+"=ca")
	destAddr := fmt.Sprintf("%s:%d", controller.Status.PodIP, contract.DestinationPort)
	// inject injects manifest (or applies it as is, for legacy-bot) with
	// the destination service's pod IP for its DNS name.
	inject := func(manifest string, mesh bool) {
		t.Helper()
		out := []byte(manifest)
		if mesh {
			cmd := exec.Command(linkerdBin, "inject", "--tls=optional", "-L", cp, "-")
			cmd.Stdin = strings.NewReader(manifest)
			var err error
			if out, err = cmd.Output(); err != nil {
				t.Fatalf("linkerd inject: %v", err)
			}
		}
		dnsName := fmt.Sprintf("%s.%s.svc.cluster.local:%d", contract.ControllerComponent, cp, contract.DestinationPort)
		kubectlApply(t, kubectl, kubeconfig, bytes.ReplaceAll(out, []byte(dnsName), []byte(destAddr)))
	}
	inject(demoDeployment(ns, "emoji", "emoji", map[string]string{"GRPC_PORT": "8080"}, 8080)+
		demoDeployment(ns, "voting", "voting", map[string]string{"GRPC_PORT": "8080"}, 8080), true)
	emoji := readyPod(ctx, t, client, ns, "app=emoji")
	voting := readyPod(ctx, t, client, ns, "app=voting")
	inject(demoDeployment(ns, "web", "web", map[string]string{"WEB_PORT": "8080", "EMOJISVC_HOST": emoji.Status.PodIP + ":8080", "VOTINGSVC_HOST": voting.Status.PodIP + ":8080"}, 8080), true)
	web := readyPod(ctx, t, client, ns, "app=web")
	inject(demoDeployment(ns, "vote-bot", "vote-bot", map[string]string{"WEB_HOST": web.Status.PodIP + ":8080", "VOTE_RATE": "1", "TRUTH_PORT": "8802"}, 8802), true)
	inject(demoDeployment(ns, "legacy-bot", "vote-bot", map[string]string{"WEB_HOST": web.Status.PodIP + ":8080", "VOTE_RATE": "0.5", "TRUTH_PORT": "8802"}, 8802), false)
	readyPod(ctx, t, client, ns, "app=vote-bot")
	readyPod(ctx, t, client, ns, "app=legacy-bot")
	ips := map[string]string{"web-svc": web.Status.PodIP + ":8080", "emoji-svc": emoji.Status.PodIP + ":8080", "voting-svc": voting.Status.PodIP + ":8080"}
	verifyDemo(ctx, t, demoMesh{cp: cp, ns: ns, authority: func(svc string) string { return ips[svc] }})
}
