//go:build integration

package install

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshtls/contract"
	"meshtls/inject"
	"meshtls/testutil/localcluster"
)

// TestMain: the CA Deployment that install prints really runs (its image
// .../controller:TAG maps to this tree's cmd/controller).
func TestMain(m *testing.M) {
	os.Exit(localcluster.RunWith(m, localcluster.Options{Commands: []string{"meshtls/cmd/controller"}}))
}

func kubectl(t *testing.T, stdin []byte, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(localcluster.Kubectl(t), append([]string{"--kubeconfig", localcluster.Kubeconfig(t)}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func createNamespace(t *testing.T, name string) {
	t.Helper()
	client := localcluster.Client(t)
	if _, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// The API server itself validates every object install prints, without
// persisting them.
func TestInstallPassesServerDryRun(t *testing.T) {
	cert, key := userRoot(t)
	for i, o := range []Options{
		{Version: "v1", ControlNamespace: "dry-plain"},
		{Version: "v1", TLS: "optional", ControlNamespace: "dry-tls"},
		{Version: "v1", TLS: "optional", ControlNamespace: "dry-ha", ControllerReplicas: 3, RootCertPEM: cert, RootKeyPEM: key,
			Now: func() time.Time { return t0 }},
		// Every option a real cluster may need: the API server takes
		// digest references, pull secrets and the pull policy.
		{Version: "v1", TLS: "optional", ControlNamespace: "dry-cluster", Registry: "registry.example:5000/meshtls",
			ImageDigests:    map[string]string{"controller": "sha256:" + strings.Repeat("1", 64)},
			ImagePullPolicy: "Always", ImagePullSecrets: []string{"regcred"}, ClusterDomain: "corp.example"},
	} {
		// Namespaced objects can only be dry-run into a namespace that exists.
		createNamespace(t, o.ControlNamespace)
		out, err := kubectl(t, render(t, o), "apply", "--dry-run=server", "-f", "-")
		if err != nil {
			t.Fatalf("case %d: kubectl apply --dry-run=server: %v\n%s", i, err, out)
		}
		if !strings.Contains(out, "deployment.apps/linkerd-prometheus created (server dry run)") {
			t.Errorf("case %d: unexpected kubectl output:\n%s", i, out)
		}
		if o.TLS != "" && !strings.Contains(out, "deployment.apps/linkerd-ca created (server dry run)") {
			t.Errorf("case %d: no CA in dry run:\n%s", i, out)
		}
	}
}

// The README's flow, for real: install --tls=optional | kubectl apply,
// then inject --tls=optional emojivoto.yml | kubectl apply. The CA runs as
// a pod with install's own RBAC and must serve every emojivoto workload.
func TestInstallThenInjectEmojivoto(t *testing.T) {
	const controlNS = "linkerd"
	out, err := kubectl(t, render(t, Options{Version: "test", TLS: "optional", ControlNamespace: controlNS}), "apply", "-f", "-")
	if err != nil {
		t.Fatalf("apply install: %v\n%s", err, out)
	}
	client := localcluster.Client(t)
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), controlNS, metav1.DeleteOptions{})
	})
	localcluster.Eventually(t, 90*time.Second, func() error {
		pods, err := client.CoreV1().Pods(controlNS).List(context.Background(), metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=ca"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					return nil
				}
			}
		}
		return fmt.Errorf("no ready CA pod among %d", len(pods.Items))
	})

	manifest, err := os.ReadFile(filepath.Join("..", "inject", "testdata", "emojivoto.yml"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := inject.Inject(manifest, "emojivoto.yml", inject.Options{Version: "test", TLS: "optional", ControlNamespace: controlNS})
	if err != nil {
		t.Fatal(err)
	}
	// The proxy images are not built yet, so only the CA's side can be
	// watched here: pods exist, carry the contract, and get Secrets.
	if out, err := kubectl(t, res.YAML, "apply", "-f", "-"); err != nil {
		t.Fatalf("apply injected emojivoto: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), "emojivoto", metav1.DeleteOptions{})
	})
	var bundle string
	localcluster.Eventually(t, 90*time.Second, func() error {
		cm, err := client.CoreV1().ConfigMaps("emojivoto").Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		bundle = cm.Data[contract.BundleKey]
		return nil
	})
	bundleFile := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundleFile, []byte(bundle), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"emoji", "voting", "web", "vote-bot"} {
		var s *corev1.Secret
		localcluster.Eventually(t, 90*time.Second, func() error {
			s, err = client.CoreV1().Secrets("emojivoto").Get(context.Background(), contract.SecretName(name, contract.KindDeployment), metav1.GetOptions{})
			return err
		})
		leaf := filepath.Join(t.TempDir(), name+".crt")
		if err := os.WriteFile(leaf, s.Data[corev1.TLSCertKey], 0o600); err != nil {
			t.Fatal(err)
		}
		// tls.crt is the leaf, then the CA's issuer: openssl verifies the
		// first and takes the issuer from -untrusted.
		if out, err := exec.Command("openssl", "verify", "-CAfile", bundleFile, "-untrusted", leaf, leaf).CombinedOutput(); err != nil {
			t.Errorf("%s: openssl verify: %v\n%s", name, err, out)
		}
		want := "DNS:" + contract.Identity(name, contract.KindDeployment, "emojivoto", controlNS)
		out, err := exec.Command("openssl", "x509", "-in", leaf, "-noout", "-ext", "subjectAltName").CombinedOutput()
		if err != nil || !strings.Contains(string(out), want) {
			t.Errorf("%s: SAN %s, want %s (%v)", name, out, want, err)
		}
	}
}
