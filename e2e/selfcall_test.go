//go:build integration

package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"

	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// TestPodCallsItsOwnServiceOverMutualTLS: a meshed pod whose requests go
// to its own Service. Discovery names the pod itself as the endpoint, so
// its proxy dials its own pod IP over mTLS; proxy-init's
// redirect-non-loopback-local-traffic rule sends that connection to the
// same proxy's inbound side, which terminates TLS and forwards to the app
// on 127.0.0.1. Without the rule the ClientHello reaches the app and the
// request fails; with the rule and an inbound side forwarding to the pod
// IP it loops. The proxy's own metrics must show the request both ways
// at tls="true", naming the pod's own identity.
func TestPodCallsItsOwnServiceOverMutualTLS(t *testing.T) {
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

	// vote-bot serves GET /truth on 8802 and sends its rounds to WEB_HOST:
	// here its own Service, so every request it makes comes back to it
	// (answered 404 by the truth server, which is fine: it arrived).
	svc, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "selfcall"},
		Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "selfcall"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8802)}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	injectApply(t, kubectl, kubeconfig, cp, demoDeployment(ns, "selfcall", "vote-bot", map[string]string{
		"WEB_HOST":   svc.Spec.ClusterIP + ":80",
		"VOTE_RATE":  "5",
		"TRUTH_PORT": "8802",
	}, 8802))
	pod := readyPod(ctx, t, client, ns, "app=selfcall")
	self := contract.Identity("selfcall", contract.KindDeployment, ns, cp)

	metricsURL := fmt.Sprintf("http://%s:%d/metrics", pod.Status.PodIP, contract.AdminPort)
	var last string
	localcluster.Eventually(t, 2*time.Minute, func() error {
		metrics, err := httpGet(metricsURL)
		if err != nil {
			return err
		}
		last = metrics
		var in, out bool
		for _, line := range strings.Split(metrics, "\n") {
			if !strings.HasPrefix(line, "request_total{") || !strings.Contains(line, `tls="true"`) {
				continue
			}
			in = in || strings.Contains(line, `direction="inbound"`) && strings.Contains(line, `client_id="`+self+`"`)
			out = out || strings.Contains(line, `direction="outbound"`) && strings.Contains(line, `server_id="`+self+`"`)
		}
		if !in || !out {
			return fmt.Errorf("the pod's proxy has not yet counted a request to itself over mTLS (inbound %v, outbound %v)", in, out)
		}
		return nil
	})
	// Nothing to or from itself in plain text, and no loop.
	for _, line := range strings.Split(last, "\n") {
		if strings.HasPrefix(line, "request_total{") && strings.Contains(line, `direction="inbound"`) && !strings.Contains(line, `tls="true"`) && !strings.HasSuffix(line, " 0") {
			t.Errorf("inbound request not over mTLS: %s", line)
		}
		if strings.HasPrefix(line, "proxy_connection_errors_total{") && strings.Contains(line, `reason="loop"`) && !strings.HasSuffix(line, " 0") {
			t.Errorf("loop counted: %s", line)
		}
	}
}
