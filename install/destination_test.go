//go:build integration

package install

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"meshtls/contract"
	"meshtls/destination/client"
	"meshtls/testutil/localcluster"
)

// The destination service reads what it resolves from and nothing more:
// no Secrets, no writes, no wildcard.
func TestDestinationRBACIsReadOnly(t *testing.T) {
	for _, o := range []Options{{Version: "v1"}, {Version: "v1", TLS: "optional"}} {
		docs := documents(t, render(t, o))
		var cr rbacv1.ClusterRole
		if err := yaml.UnmarshalStrict([]byte(docs["ClusterRole/linkerd-controller-linkerd"]), &cr); err != nil {
			t.Fatal(err)
		}
		granted := map[string]bool{}
		for _, r := range cr.Rules {
			for _, v := range r.Verbs {
				if v != "get" && v != "list" && v != "watch" {
					t.Errorf("destination ClusterRole grants %q", v)
				}
			}
			for _, res := range r.Resources {
				granted[strings.Join(r.APIGroups, ",")+"/"+res] = true
			}
		}
		want := map[string]bool{"/pods": true, "/services": true, "discovery.k8s.io/endpointslices": true}
		if fmt.Sprint(granted) != fmt.Sprint(want) {
			t.Errorf("destination ClusterRole resources %v, want %v", granted, want)
		}
		if _, ok := docs["Service/"+contract.ControllerComponent]; !ok {
			t.Errorf("no Service %s", contract.ControllerComponent)
		}
	}
}

// The installed destination service runs in the cluster under its own
// ServiceAccount, resolves its own Service, and, once the CA has issued its
// certificate, serves the controller identity over TLS.
func TestDestinationRunsInCluster(t *testing.T) {
	const controlNS = "linkerd-dst"
	ctx := context.Background()
	manifest := render(t, Options{Version: "test", TLS: "optional", ControlNamespace: controlNS})
	if out, err := kubectl(t, manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply install: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		// The namespace takes the namespaced objects; RBAC is cluster-wide.
		_, _ = kubectl(t, manifest, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
	})
	kc := localcluster.Client(t)

	var pod corev1.Pod
	localcluster.Eventually(t, 90*time.Second, func() error {
		pods, err := kc.CoreV1().Pods(controlNS).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=" + DestinationComponent})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
					pod = p
					return nil
				}
			}
		}
		return fmt.Errorf("no ready destination pod among %d", len(pods.Items))
	})
	addr := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(contract.DestinationPort))
	self := contract.ControllerComponent + "." + controlNS + ".svc.cluster.local:" + strconv.Itoa(contract.DestinationPort)

	resolveSelf := func(c *client.Client) error {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		eps, err := c.Resolve(rctx, self)
		if err != nil {
			return err
		}
		for _, ep := range eps {
			if ep.Addr.String() == addr && ep.Labels["pod"] == pod.Name && ep.Labels["deployment"] == contract.ControllerComponent {
				return nil
			}
		}
		return fmt.Errorf("%s resolves to %+v, want %s (pod %s)", self, eps, addr, pod.Name)
	}
	plain, err := client.New(client.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = plain.Close() }()
	localcluster.Eventually(t, 60*time.Second, func() error { return resolveSelf(plain) })

	// The CA issues the controller's certificate; the server picks it up
	// from its optional volume and serves it.
	var bundle string
	localcluster.Eventually(t, 90*time.Second, func() error {
		cm, err := kc.CoreV1().ConfigMaps(controlNS).Get(ctx, contract.BundleConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		bundle = cm.Data[contract.BundleKey]
		return nil
	})
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(bundle)) {
		t.Fatalf("bundle has no certificate: %q", bundle)
	}
	id := contract.ControllerIdentity(contract.ControllerComponent, controlNS)
	localcluster.Eventually(t, 90*time.Second, func() error {
		c, err := client.New(client.Config{Addr: addr, TLS: &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: id}})
		if err != nil {
			return err
		}
		defer func() { _ = c.Close() }()
		return resolveSelf(c)
	})

	resp, err := http.Get("http://" + net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(DestinationAdminPort)) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if !strings.Contains(string(body), `destination_get_requests_total{kind="service"}`) {
		t.Errorf("/metrics lacks destination_get_requests_total:\n%.2000s", body)
	}
}
