//go:build integration

package check_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/check"
	"meshtls/contract"
	"meshtls/inject"
	"meshtls/install"
	"meshtls/testutil/localcluster"
)

// TestMain: the cluster runs this tree's controller (the real CA, for
// install's image) and the tests run its linkerd CLI.
func TestMain(m *testing.M) {
	// install's Prometheus runs the repository's bin/prometheus (built
	// from the Prometheus module); without it the control plane is not
	// ready and every check test would fail on that.
	for _, name := range []string{"prometheus", "prometheus-server"} {
		if _, err := os.Stat(filepath.Join("..", "bin", name)); err != nil {
			fmt.Fprintf(os.Stderr, "check tests: bin/%s is missing: run `make prometheus`\n", name)
			os.Exit(1)
		}
	}
	os.Exit(localcluster.RunWith(m, localcluster.Options{Commands: []string{"meshtls/cmd/controller", "meshtls/cmd/linkerd"}}))
}

const controlNS = "linkerd"

func kubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	cmd := exec.Command(localcluster.Kubectl(t), append([]string{"--kubeconfig", localcluster.Kubeconfig(t)}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// linkerd runs the built CLI against the local cluster and returns its
// stdout and exit code.
func linkerd(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(localcluster.Binary(t, "linkerd"), append([]string{"--kubeconfig", localcluster.Kubeconfig(t)}, args...)...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if errOut.Len() > 0 {
		t.Logf("linkerd %s stderr: %s", strings.Join(args, " "), errOut.String())
	}
	return out.String(), code
}

func runChecks(t *testing.T, client kubernetes.Interface, mod func(*check.Config)) check.Summary {
	t.Helper()
	cfg := check.Config{ControlNamespace: controlNS, TLS: true, NewClient: func() (kubernetes.Interface, error) { return client, nil }}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return check.Run(ctx, check.Categories(cfg), check.Options{}, nil)
}

func result(t *testing.T, sum check.Summary, description string) check.Result {
	t.Helper()
	for _, r := range sum.Results {
		if r.Description == description {
			return r
		}
	}
	t.Fatalf("no result %q in %s", description, describe(sum))
	return check.Result{}
}

func describe(sum check.Summary) string {
	var b strings.Builder
	for _, r := range sum.Results {
		fmt.Fprintf(&b, "\n  %s %s: %s", r.Status, r.Description, r.Error)
		for _, p := range r.Problems {
			fmt.Fprintf(&b, "\n      %s: %s", p.Object(), p.Reason)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(&b, "\n      note: %s", n)
		}
	}
	return b.String()
}

// expect asserts that the check described has status, and when object is
// given, that one of its problems names it.
func expect(t *testing.T, sum check.Summary, description string, status check.Status, object string) check.Result {
	t.Helper()
	r := result(t, sum, description)
	if r.Status != status {
		t.Fatalf("%q is %s, want %s:%s", description, r.Status, status, describe(sum))
	}
	if object != "" {
		var names []string
		for _, p := range r.Problems {
			names = append(names, p.Object())
			if p.Object() == object && p.Remedy != "" {
				return r
			}
		}
		t.Fatalf("%q does not name %s with a remedy; names %v", description, object, names)
	}
	return r
}

// waitHealthy polls the checks until every one passes, so each scenario
// starts from (and restores) a healthy mesh.
func waitHealthy(t *testing.T, client kubernetes.Interface) check.Summary {
	t.Helper()
	var sum check.Summary
	deadline := time.Now().Add(2 * time.Minute)
	for {
		sum = runChecks(t, client, nil)
		ok := sum.Success
		for _, r := range sum.Results {
			if r.Status != check.StatusOK {
				ok = false
			}
		}
		if ok {
			return sum
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy after 2m:%s", describe(sum))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

const appManifest = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: ghcr.io/meshtls/emojivoto:test, args: [web]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: emoji, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: emoji}}
  template:
    metadata: {labels: {app: emoji}}
    spec:
      containers: [{name: emoji, image: ghcr.io/meshtls/emojivoto:test, args: [emoji]}]
`

// installMesh applies install --tls=optional, its Prometheus included (the
// local kubelet runs bin/prometheus for its image), and an injected
// two-Deployment app, and waits for health.
func installMesh(t *testing.T, client kubernetes.Interface) (appNS string) {
	t.Helper()
	var manifest bytes.Buffer
	if err := install.Render(&manifest, install.Options{Version: "test", TLS: "optional", ControlNamespace: controlNS}); err != nil {
		t.Fatal(err)
	}
	kubectl(t, manifest.Bytes(), "apply", "-f", "-")
	t.Cleanup(func() {
		_ = client.CoreV1().Namespaces().Delete(context.Background(), controlNS, metav1.DeleteOptions{})
	})

	appNS = localcluster.Namespace(t)
	res, err := inject.Inject([]byte(fmt.Sprintf(appManifest, appNS)), "app.yml", inject.Options{Version: "test", TLS: "optional", ControlNamespace: controlNS})
	if err != nil {
		t.Fatal(err)
	}
	kubectl(t, res.YAML, "apply", "-f", "-")
	waitHealthy(t, client)
	return appNS
}

func scaleCA(t *testing.T, client kubernetes.Interface, replicas int) {
	t.Helper()
	kubectl(t, nil, "-n", controlNS, "scale", "deploy/linkerd-ca", fmt.Sprintf("--replicas=%d", replicas))
	localcluster.Eventually(t, 90*time.Second, func() error {
		pods, err := client.CoreV1().Pods(controlNS).List(context.Background(), metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=ca"})
		if err != nil {
			return err
		}
		if replicas == 0 && len(pods.Items) > 0 {
			return fmt.Errorf("%d CA pods left", len(pods.Items))
		}
		return nil
	})
}

type rootKey struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// currentRoot reads the CA's root, key included, to forge leaves the CA
// could have issued.
func currentRoot(t *testing.T, client kubernetes.Interface) rootKey {
	t.Helper()
	s, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKey(s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	return rootKey{certs[0], key.(*ecdsa.PrivateKey)}
}

func otherRoot(t *testing.T) rootKey {
	t.Helper()
	r, keyPEM, err := pki.NewRoot("some other root", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return rootKey{r.Cert, key.(*ecdsa.PrivateKey)}
}

// leaf signs a workload certificate under r; edit changes the template
// (SAN, EKU, dates) to forge one broken property at a time.
func leaf(t *testing.T, r rootKey, identity string, edit func(*x509.Certificate)) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()), Subject: pkix.Name{CommonName: identity}, DNSNames: []string{identity},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.cert, &key.PublicKey, r.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: r.cert.Raw})...)
	return certPEM, keyPEM
}

// replaceSecret puts a Secret the CA did not write in place of the CA's.
// The CA re-creates a deleted Secret of its own at once but refuses to
// touch one written by another field manager, so the forged one stays; the
// loop retries when the CA wins the race. The forged Secret carries the
// CA's labels so the CA sees it deleted afterwards and re-issues at once.
func replaceSecret(t *testing.T, client kubernetes.Interface, ns, name string, certPEM, keyPEM []byte) {
	t.Helper()
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{contract.ControlPlaneNSLabel: controlNS, contract.OwnerKindLabel: contract.KindDeployment}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
	}
	replaceObject(t, func(ctx context.Context) error {
		return client.CoreV1().Secrets(ns).Delete(ctx, name, metav1.DeleteOptions{})
	}, func(ctx context.Context) error {
		_, err := client.CoreV1().Secrets(ns).Create(ctx, s, metav1.CreateOptions{FieldManager: "check-test"})
		return err
	})
}

// restoreSecret deletes a forged Secret; the CA sees it go and re-issues.
func restoreSecret(t *testing.T, client kubernetes.Interface, ns, name string) {
	t.Helper()
	_ = client.CoreV1().Secrets(ns).Delete(context.Background(), name, metav1.DeleteOptions{})
	waitHealthy(t, client)
}

func replaceObject(t *testing.T, del, create func(context.Context) error) {
	t.Helper()
	ctx := context.Background()
	localcluster.Eventually(t, 30*time.Second, func() error {
		if err := del(ctx); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		return create(ctx)
	})
}

func secretName(name string) string { return contract.SecretName(name, contract.KindDeployment) }

func identity(name, ns string) string {
	return contract.Identity(name, contract.KindDeployment, ns, controlNS)
}

func TestCheckTLSAgainstRealCA(t *testing.T) {
	client := localcluster.Client(t)
	ns := installMesh(t, client)
	web := "deploy/web -n " + ns

	t.Run("healthy", func(t *testing.T) {
		sum := waitHealthy(t, client)
		// Both app pods run a real proxy in their own network namespace, so
		// the check dials each one's 4143 and compares what it serves.
		served := result(t, sum, "proxies serve their Secret's certificate")
		// (The destination controller's pod has an identity but no proxy, so
		// it is skipped with a note.)
		if !strings.Contains(strings.Join(served.Notes, " "), "compared 2 of ") {
			t.Errorf("served-certificate check should compare both pods' proxies: %v", served.Notes)
		}
		out, code := linkerd(t, "check", "--tls")
		if code != 0 || strings.Contains(out, "×") || strings.Contains(out, "‼") || !strings.Contains(out, "Status check results are √") {
			t.Errorf("linkerd check --tls: exit %d\n%s", code, out)
		}
		t.Logf("healthy:\n%s", out)
		if out, code := linkerd(t, "check"); code != 0 || strings.Contains(out, "linkerd-ca\n") {
			t.Errorf("plain linkerd check: exit %d\n%s", code, out)
		}
	})

	t.Run("CA scaled to 0", func(t *testing.T) {
		scaleCA(t, client, 0)
		defer func() { scaleCA(t, client, 1); waitHealthy(t, client) }()
		sum := runChecks(t, client, nil)
		expect(t, sum, "control plane Deployments are ready", check.StatusError, "deploy/linkerd-ca -n "+controlNS)
		r := expect(t, sum, "CA Deployment is ready", check.StatusError, "")
		if !strings.Contains(r.Error, "scaled to 0") {
			t.Errorf("error %q should say the CA is scaled to 0", r.Error)
		}
		out, code := linkerd(t, "check", "--tls")
		if code != 1 || !strings.Contains(out, "× CA Deployment is ready") {
			t.Errorf("exit %d\n%s", code, out)
		}
		t.Logf("CA scaled to 0:\n%s", out)
	})

	t.Run("workload Secret deleted", func(t *testing.T) {
		// A running CA re-creates a deleted Secret at once; with the CA
		// down it stays gone, which is the outage to catch.
		scaleCA(t, client, 0)
		defer func() { scaleCA(t, client, 1); waitHealthy(t, client) }()
		if err := client.CoreV1().Secrets(ns).Delete(context.Background(), secretName("web"), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		sum := runChecks(t, client, nil)
		expect(t, sum, "each TLS-enabled owner has its Secret", check.StatusError, web)
		if r := result(t, sum, "workload certificates chain to the current root"); r.Status != check.StatusOK {
			t.Errorf("emoji's Secret is fine, so the chain check should pass: %s", describe(sum))
		}
	})

	t.Run("Secret from another CA", func(t *testing.T) {
		c, k := leaf(t, otherRoot(t), identity("web", ns), nil)
		replaceSecret(t, client, ns, secretName("web"), c, k)
		defer restoreSecret(t, client, ns, secretName("web"))
		sum := runChecks(t, client, nil)
		expect(t, sum, "workload certificates chain to the current root", check.StatusError, web)
		if sum.Success {
			t.Error("summary should fail")
		}
		out, code := linkerd(t, "check", "--tls")
		if code != 1 || !strings.Contains(out, "* "+web+": not signed by the current root") {
			t.Errorf("exit %d\n%s", code, out)
		}
		t.Logf("Secret from another CA:\n%s", out)
	})

	t.Run("Secret of another type", func(t *testing.T) {
		opaque := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName("web"), Namespace: ns,
			Labels: map[string]string{contract.ControlPlaneNSLabel: controlNS, contract.OwnerKindLabel: contract.KindDeployment}},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"token": []byte("x")}}
		replaceObject(t, func(ctx context.Context) error {
			return client.CoreV1().Secrets(ns).Delete(ctx, opaque.Name, metav1.DeleteOptions{})
		}, func(ctx context.Context) error {
			_, err := client.CoreV1().Secrets(ns).Create(ctx, opaque, metav1.CreateOptions{FieldManager: "check-test"})
			return err
		})
		defer restoreSecret(t, client, ns, secretName("web"))
		r := expect(t, runChecks(t, client, nil), "each TLS-enabled owner has its Secret", check.StatusError, web)
		if !strings.Contains(r.Problems[0].Reason, "has type Opaque") {
			t.Errorf("reason %q", r.Problems[0].Reason)
		}
	})

	t.Run("key does not match", func(t *testing.T) {
		root := currentRoot(t, client)
		c, _ := leaf(t, root, identity("web", ns), nil)
		_, k := leaf(t, root, identity("web", ns), nil)
		replaceSecret(t, client, ns, secretName("web"), c, k)
		defer restoreSecret(t, client, ns, secretName("web"))
		r := expect(t, runChecks(t, client, nil), "workload certificates and keys parse and match", check.StatusError, web)
		if !strings.Contains(r.Problems[0].Reason, "does not match") {
			t.Errorf("reason %q", r.Problems[0].Reason)
		}
	})

	t.Run("wrong SAN", func(t *testing.T) {
		c, k := leaf(t, currentRoot(t, client), identity("emoji", ns), nil)
		replaceSecret(t, client, ns, secretName("web"), c, k)
		defer restoreSecret(t, client, ns, secretName("web"))
		sum := runChecks(t, client, nil)
		expect(t, sum, "workload certificates name their identity", check.StatusError, web)
		expect(t, sum, "workload certificates chain to the current root", check.StatusOK, "")
	})

	t.Run("EKU server auth only", func(t *testing.T) {
		c, k := leaf(t, currentRoot(t, client), identity("web", ns), func(c *x509.Certificate) {
			c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		})
		replaceSecret(t, client, ns, secretName("web"), c, k)
		defer restoreSecret(t, client, ns, secretName("web"))
		r := expect(t, runChecks(t, client, nil), "workload certificates allow server and client auth", check.StatusError, web)
		if !strings.Contains(r.Problems[0].Reason, "clientAuth") {
			t.Errorf("reason %q should name clientAuth", r.Problems[0].Reason)
		}
	})

	t.Run("expired leaf", func(t *testing.T) {
		// Expired, but issued while this (minutes-old) root was valid, as a
		// certificate the CA stopped renewing would be.
		root := currentRoot(t, client)
		c, k := leaf(t, root, identity("web", ns), func(c *x509.Certificate) {
			c.NotBefore, c.NotAfter = root.cert.NotBefore, time.Now().Add(-time.Second)
		})
		replaceSecret(t, client, ns, secretName("web"), c, k)
		defer restoreSecret(t, client, ns, secretName("web"))
		sum := runChecks(t, client, nil)
		expect(t, sum, "workload certificates are within their validity period", check.StatusError, web)
		// Reported once, as expired, not again as a broken chain.
		expect(t, sum, "workload certificates chain to the current root", check.StatusOK, "")
	})

	t.Run("leaf within the warn window", func(t *testing.T) {
		c, k := leaf(t, currentRoot(t, client), identity("web", ns), func(c *x509.Certificate) {
			c.NotAfter = time.Now().Add(3 * time.Hour)
		})
		replaceSecret(t, client, ns, secretName("web"), c, k)
		defer restoreSecret(t, client, ns, secretName("web"))
		sum := runChecks(t, client, nil)
		expect(t, sum, "workload certificates are not expiring soon", check.StatusWarning, web)
		if !sum.Success {
			t.Errorf("a warning must not fail the run:%s", describe(sum))
		}
		out, code := linkerd(t, "check", "--tls")
		if code != 0 || !strings.Contains(out, "‼ workload certificates are not expiring soon") {
			t.Errorf("exit %d\n%s", code, out)
		}
		// The same certificate inside --leaf-fail-within is an error.
		out, code = linkerd(t, "check", "--tls", "--leaf-fail-within", "4h", "--leaf-warn-within", "8h")
		if code != 1 || !strings.Contains(out, "× workload certificates are not expiring soon") {
			t.Errorf("exit %d\n%s", code, out)
		}
	})

	t.Run("pod without the volume", func(t *testing.T) {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "bare", Namespace: ns,
				Labels:      map[string]string{contract.ControlPlaneNSLabel: controlNS},
				Annotations: map[string]string{contract.TLSAnnotation: contract.TLSOptional}},
			Spec: corev1.PodSpec{SchedulerName: "meshtls-test-unscheduled", Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
		}
		if _, err := client.CoreV1().Pods(ns).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = client.CoreV1().Pods(ns).Delete(context.Background(), "bare", metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
			waitHealthy(t, client)
		}()
		var sum check.Summary
		localcluster.Eventually(t, 60*time.Second, func() error {
			// The CA issues the bare pod's Secret; only the mount is missing.
			sum = runChecks(t, client, nil)
			if r := result(t, sum, "each TLS-enabled owner has its Secret"); r.Status != check.StatusOK {
				return fmt.Errorf("Secret not issued yet: %s", r.Error)
			}
			return nil
		})
		expect(t, sum, "TLS-enabled pods mount their Secret", check.StatusError, "po/bare -n "+ns)
	})

	t.Run("bundle missing", func(t *testing.T) {
		scaleCA(t, client, 0)
		defer func() { scaleCA(t, client, 1); waitHealthy(t, client) }()
		if err := client.CoreV1().ConfigMaps(ns).Delete(context.Background(), contract.BundleConfigMap, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		expect(t, runChecks(t, client, nil), "trust bundle exists in every namespace with TLS-enabled pods", check.StatusError, "ns/"+ns)
	})

	t.Run("bundle stale", func(t *testing.T) {
		// A running CA rewrites the bundle of a namespace with its TLS
		// pods at once, whoever wrote it; with the CA down it stays stale.
		scaleCA(t, client, 0)
		other := otherRoot(t)
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: contract.BundleConfigMap, Namespace: ns},
			Data: map[string]string{contract.BundleKey: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw}))}}
		replaceObject(t, func(ctx context.Context) error {
			return client.CoreV1().ConfigMaps(ns).Delete(ctx, contract.BundleConfigMap, metav1.DeleteOptions{})
		}, func(ctx context.Context) error {
			_, err := client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{FieldManager: "check-test"})
			return err
		})
		defer func() {
			_ = client.CoreV1().ConfigMaps(ns).Delete(context.Background(), contract.BundleConfigMap, metav1.DeleteOptions{})
			scaleCA(t, client, 1)
			waitHealthy(t, client)
		}()
		sum := runChecks(t, client, nil)
		r := expect(t, sum, "trust bundles hold the current root", check.StatusError, "ns/"+ns)
		if !strings.Contains(r.Problems[0].Remedy, "deploy/web") || !strings.Contains(r.Problems[0].Remedy, "deploy/emoji") {
			t.Errorf("remedy should name the workloads to restart: %q", r.Problems[0].Remedy)
		}
		expect(t, sum, "trust bundles hold only this control plane's roots", check.StatusError, "ns/"+ns)
	})

	// C1: any holder of the edit role can write a ConfigMap named and
	// labelled like the bundle in its own namespace; check names the
	// foreign root wherever it is, with what identifies it.
	t.Run("tenant's root in a bundle", func(t *testing.T) {
		tenant := localcluster.Namespace(t)
		other := otherRoot(t)
		if _, err := client.CoreV1().ConfigMaps(tenant).Create(context.Background(), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: contract.BundleConfigMap, Labels: map[string]string{contract.BundleLabel: controlNS}},
			Data:       map[string]string{contract.BundleKey: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw}))},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer func() {
			_ = client.CoreV1().ConfigMaps(tenant).Delete(context.Background(), contract.BundleConfigMap, metav1.DeleteOptions{})
		}()
		r := expect(t, runChecks(t, client, nil), "trust bundles hold only this control plane's roots", check.StatusError, "ns/"+tenant)
		fp := pki.Fingerprint(other.cert)
		if !strings.Contains(r.Problems[0].Reason, fp) || !strings.Contains(r.Problems[0].Reason, "some other root") {
			t.Errorf("problem should name the root's subject and fingerprint: %+v", r.Problems[0])
		}
		if !strings.Contains(r.Problems[0].Remedy, "kubectl -n "+tenant+" delete configmap "+contract.BundleConfigMap) {
			t.Errorf("remedy %q", r.Problems[0].Remedy)
		}
		out, code := linkerd(t, "check", "--tls")
		if code != 1 || !strings.Contains(out, fp) || !strings.Contains(out, tenant) {
			t.Errorf("linkerd check --tls: exit %d, want 1 naming %s and %s\n%s", code, tenant, fp, out)
		}
		t.Logf("tenant's root in a bundle:\n%s", out)
	})

	// The root scenarios come last: they change what everything chains to.
	t.Run("root replaced by another CA", func(t *testing.T) {
		saved, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r, keyPEM, err := pki.NewRoot("replacement root", 24*time.Hour, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		replaced := saved.DeepCopy()
		replaced.Data = map[string][]byte{corev1.TLSCertKey: r.CertPEM, corev1.TLSPrivateKeyKey: keyPEM}
		if _, err := client.CoreV1().Secrets(controlNS).Update(context.Background(), replaced, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer restoreRoot(t, client, saved)
		sum := runChecks(t, client, nil)
		expect(t, sum, "root Secret exists and parses", check.StatusOK, "")
		expect(t, sum, "workload certificates chain to the current root", check.StatusError, web)
		expect(t, sum, "workload certificates chain to the current root", check.StatusError, "deploy/emoji -n "+ns)
		// The bundles may already hold the new root: the CA watches the root
		// Secret and adds it to every bundle at once. The leaves it signed
		// under the old root are what break.
		out, code := linkerd(t, "check", "--tls")
		if code != 1 {
			t.Errorf("exit %d\n%s", code, out)
		}
		t.Logf("root replaced:\n%s", out)
	})

	t.Run("proxy serves a certificate other than its Secret's", func(t *testing.T) {
		// The pods of web mount a copy of its Secret holding another valid
		// certificate for the same identity: every property of the owner's
		// Secret checks out, and only the served certificate tells.
		const copyName = "web-stale-copy"
		certPEM, keyPEM := leaf(t, currentRoot(t, client), identity("web", ns), nil)
		if _, err := client.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: copyName, Namespace: ns},
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		patch := func(secret string) {
			t.Helper()
			kubectl(t, nil, "-n", ns, "patch", "deployment", "web", "--type=json", "-p",
				`[{"op":"replace","path":"/spec/template/spec/volumes/1/secret/secretName","value":"`+secret+`"}]`)
		}
		if got := kubectl(t, nil, "-n", ns, "get", "deployment", "web", "-o", "jsonpath={.spec.template.spec.volumes[1].name}"); got != contract.IdentityVolume {
			t.Fatalf("web's second volume is %q, want %s; update this test", got, contract.IdentityVolume)
		}
		patch(copyName)
		defer func() {
			patch(secretName("web"))
			_ = client.CoreV1().Secrets(ns).Delete(context.Background(), copyName, metav1.DeleteOptions{})
			waitHealthy(t, client)
		}()
		var r check.Result
		localcluster.Eventually(t, 2*time.Minute, func() error {
			r = result(t, runChecks(t, client, nil), "proxies serve their Secret's certificate")
			if r.Status != check.StatusError {
				return fmt.Errorf("served-certificate check is %s (notes %v)", r.Status, r.Notes)
			}
			return nil
		})
		found := false
		for _, p := range r.Problems {
			if p.Namespace == ns && strings.HasPrefix(p.Name, "web-") && strings.Contains(p.Remedy, "restart deploy/web") {
				found = true
			}
		}
		if !found {
			t.Fatalf("the stale pod of web is not named with a restart remedy: %+v", r.Problems)
		}
		if out, code := linkerd(t, "check", "--tls"); code != 1 || !strings.Contains(out, "proxies serve their Secret's certificate") {
			t.Errorf("linkerd check --tls: exit %d, want 1\n%s", code, out)
		}
	})

	t.Run("root Secret deleted", func(t *testing.T) {
		saved, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if err := client.CoreV1().Secrets(controlNS).Delete(context.Background(), contract.RootSecret, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		defer restoreRoot(t, client, saved)
		sum := runChecks(t, client, nil)
		r := expect(t, sum, "root Secret exists and parses", check.StatusError, "")
		if !strings.Contains(r.Error, "does not exist") {
			t.Errorf("error %q", r.Error)
		}
		expect(t, sum, "workload certificates chain to the current root", check.StatusSkipped, "")
		out, code := linkerd(t, "check", "--tls", "-o", "json")
		if code != 1 || !strings.Contains(out, `"success": false`) {
			t.Errorf("exit %d\n%s", code, out)
		}
	})
}

// restoreRoot puts the CA's root back as it was and waits for health.
func restoreRoot(t *testing.T, client kubernetes.Interface, saved *corev1.Secret) {
	t.Helper()
	ctx := context.Background()
	cur, err := client.CoreV1().Secrets(controlNS).Get(ctx, contract.RootSecret, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		s := saved.DeepCopy()
		s.ResourceVersion, s.UID, s.ManagedFields = "", "", nil
		_, err = client.CoreV1().Secrets(controlNS).Create(ctx, s, metav1.CreateOptions{})
	case err == nil:
		cur.Data = saved.Data
		_, err = client.CoreV1().Secrets(controlNS).Update(ctx, cur, metav1.UpdateOptions{})
	}
	if err != nil {
		t.Fatal(err)
	}
	waitHealthy(t, client)
}
