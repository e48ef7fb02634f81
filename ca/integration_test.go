//go:build integration

package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// unscheduled keeps test pods away from the process kubelet: the CA only
// needs pod objects, and running them would cost processes for nothing.
const unscheduled = "meshtls-test-unscheduled"

type testCA struct {
	*Controller
	cancel context.CancelFunc
	once   sync.Once
	done   chan error
	err    error
}

// stop cancels the CA and waits for Run to return; it is safe to call
// again (the test cleanup does).
func (c *testCA) stop(t *testing.T) {
	t.Helper()
	c.once.Do(func() {
		c.cancel()
		select {
		case c.err = <-c.done:
			if c.err != nil {
				t.Errorf("CA %s stopped with %v", c.cfg.Identity, c.err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("CA %s did not stop within 30s", c.cfg.Identity)
		}
	})
}

func startCA(t *testing.T, cfg Config) *testCA {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t, cfg.Identity)
	}
	ctrl, err := New(clusterClient(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tc := &testCA{Controller: ctrl, cancel: cancel, done: make(chan error, 1)}
	go func() { tc.done <- ctrl.Run(ctx) }()
	t.Cleanup(func() { tc.stop(t) })
	localcluster.Eventually(t, 30*time.Second, func() error {
		if !ctrl.Ready() {
			return errors.New("CA not ready")
		}
		return nil
	})
	return tc
}

// testLogger sends the CA's logs to the test log, so a failure shows them
// and key material would show up if it were ever logged.
func testLogger(t *testing.T, name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})).With("ca", name)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("PRIVATE KEY")) {
		w.t.Errorf("private key in a log line: %s", p)
	}
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// namespaces makes a fresh control-plane namespace and app namespace, so
// tests never share roots, Leases or Secrets.
func namespaces(t *testing.T, client kubernetes.Interface) (controlNS, appNS string) {
	t.Helper()
	suffix := strconv.FormatInt(time.Now().UnixNano()%1e6, 36)
	base := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(base) > 40 {
		base = base[:40]
	}
	controlNS = fmt.Sprintf("%s-ctl-%s", base, suffix)
	appNS = fmt.Sprintf("%s-app-%s", base, suffix)
	for _, ns := range []string{controlNS, appNS} {
		if _, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
		})
	}
	return controlNS, appNS
}

// meshedDeployment is what `linkerd inject --tls=optional` makes of a
// Deployment, reduced to the parts the CA reads.
func meshedDeployment(name, ns, controlNS string) *appsv1.Deployment {
	one := int32(1)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      map[string]string{"app": name, contract.ControlPlaneNSLabel: controlNS, contract.KindLabel(contract.KindDeployment): name},
					Annotations: map[string]string{contract.TLSAnnotation: "optional"},
				},
				Spec: corev1.PodSpec{
					SchedulerName: unscheduled,
					Containers:    []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
				},
			},
		},
	}
}

func createDeployments(t *testing.T, client kubernetes.Interface, ns, controlNS string, names ...string) map[string]*appsv1.Deployment {
	t.Helper()
	out := map[string]*appsv1.Deployment{}
	for _, n := range names {
		d, err := client.AppsV1().Deployments(ns).Create(context.Background(), meshedDeployment(n, ns, controlNS), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out[n] = d
	}
	return out
}

func waitSecret(t *testing.T, client kubernetes.Interface, ns, name string, accept func(*corev1.Secret) error) *corev1.Secret {
	t.Helper()
	var got *corev1.Secret
	localcluster.Eventually(t, 60*time.Second, func() error {
		s, err := client.CoreV1().Secrets(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if accept != nil {
			if err := accept(s); err != nil {
				return err
			}
		}
		got = s
		return nil
	})
	return got
}

func leafSerial(t *testing.T, s *corev1.Secret) string {
	t.Helper()
	certs, err := pki.ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	return certs[0].SerialNumber.Text(16)
}

func TestDeploymentsGetSecretsAndBundle(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	deps := createDeployments(t, client, appNS, controlNS, "web", "emoji")

	bundle := func() *corev1.ConfigMap {
		var cm *corev1.ConfigMap
		localcluster.Eventually(t, 60*time.Second, func() error {
			var err error
			cm, err = client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
			return err
		})
		return cm
	}()
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(bundle.Data[contract.BundleKey])) {
		t.Fatalf("bundle %s has no certificate", contract.BundleKey)
	}
	bundleFile := filepath.Join(t.TempDir(), "bundle.pem")
	if err := os.WriteFile(bundleFile, []byte(bundle.Data[contract.BundleKey]), 0o600); err != nil {
		t.Fatal(err)
	}

	for name, dep := range deps {
		s := waitSecret(t, client, appNS, contract.SecretName(name, contract.KindDeployment), nil)
		if s.Type != corev1.SecretTypeTLS {
			t.Errorf("%s: type %q", s.Name, s.Type)
		}
		if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != dep.UID || s.OwnerReferences[0].Kind != "Deployment" {
			t.Errorf("%s: owner references %+v, want the Deployment %s", s.Name, s.OwnerReferences, dep.UID)
		}
		managers := map[string]bool{}
		for _, mf := range s.ManagedFields {
			managers[mf.Manager] = mf.Operation == metav1.ManagedFieldsOperationApply
		}
		if !managers[FieldManager(controlNS)] {
			t.Errorf("%s: not server-side applied by %s: %+v", s.Name, FieldManager(controlNS), s.ManagedFields)
		}
		certs, err := pki.ParseCerts(s.Data[corev1.TLSCertKey])
		if err != nil {
			t.Fatal(err)
		}
		id := contract.Identity(name, contract.KindDeployment, appNS, controlNS)
		if got := certs[0].DNSNames; len(got) != 1 || got[0] != id {
			t.Errorf("%s: SAN %v, want %s", s.Name, got, id)
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: id,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: Go x509 verify against the bundle: %v", s.Name, err)
		}
		if !bytes.Contains(s.Data[corev1.TLSPrivateKeyKey], []byte("-----BEGIN PRIVATE KEY-----")) {
			t.Errorf("%s: tls.key is not PKCS#8", s.Name)
		}
		leafFile := filepath.Join(t.TempDir(), "leaf.pem")
		if err := os.WriteFile(leafFile, s.Data[corev1.TLSCertKey], 0o600); err != nil {
			t.Fatal(err)
		}
		// openssl reads only the first certificate of the file (the leaf)
		// as the one to verify; -untrusted gives it the issuer after it.
		out, err := exec.Command("openssl", "verify", "-CAfile", bundleFile, "-untrusted", leafFile, "-purpose", "sslserver", leafFile).CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte(": OK")) {
			t.Errorf("%s: openssl verify: %v\n%s", s.Name, err, out)
		}
		out, err = exec.Command("openssl", "verify", "-CAfile", bundleFile, "-untrusted", leafFile, "-purpose", "sslclient", leafFile).CombinedOutput()
		if err != nil {
			t.Errorf("%s: openssl verify as client: %v\n%s", s.Name, err, out)
		}
	}
}

func TestRestartKeepsRootAndReissuesNothing(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	first := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-first"})
	createDeployments(t, client, appNS, controlNS, "a", "b", "c")
	before := map[string]string{}
	for _, n := range []string{"a", "b", "c"} {
		s := waitSecret(t, client, appNS, contract.SecretName(n, contract.KindDeployment), nil)
		before[s.Name] = s.ResourceVersion
	}
	root1, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	first.stop(t)

	second := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-second"})
	if !second.Root().Cert.Equal(first.Root().Cert) {
		t.Fatal("restarted CA has a different root")
	}
	// Pod events after the restart must not re-issue valid certificates.
	pods, err := client.CoreV1().Pods(appNS).List(context.Background(), metav1.ListOptions{})
	if err != nil || len(pods.Items) == 0 {
		t.Fatalf("pods: %v (%d)", err, len(pods.Items))
	}
	for _, p := range pods.Items {
		p.Annotations["touched"] = "yes"
		if _, err := client.CoreV1().Pods(appNS).Update(context.Background(), &p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	localcluster.Eventually(t, 30*time.Second, func() error {
		if testutil.ToFloat64(second.metrics.leader) != 1 {
			return errors.New("second CA not leading yet")
		}
		if n := second.queue.Len(); n != 0 {
			return fmt.Errorf("queue depth %d", n)
		}
		return nil
	})
	time.Sleep(time.Second) // let in-flight reconciles finish
	if n := testutil.ToFloat64(second.metrics.issued); n != 0 {
		t.Errorf("restarted CA issued %v certificates, want 0", n)
	}
	for name, rv := range before {
		s, err := client.CoreV1().Secrets(appNS).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s.ResourceVersion != rv {
			t.Errorf("%s was rewritten after restart (resourceVersion %s → %s)", name, rv, s.ResourceVersion)
		}
	}
	root2, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if root2.ResourceVersion != root1.ResourceVersion {
		t.Error("root Secret was rewritten on restart")
	}
}

func TestDeletedSecretComesBack(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	createDeployments(t, client, appNS, controlNS, "web")
	name := contract.SecretName("web", contract.KindDeployment)
	old := waitSecret(t, client, appNS, name, nil)
	if err := client.CoreV1().Secrets(appNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	back := waitSecret(t, client, appNS, name, func(s *corev1.Secret) error {
		if s.UID == old.UID {
			return errors.New("still the old Secret")
		}
		return nil
	})
	if leafSerial(t, back) == leafSerial(t, old) {
		t.Error("re-created Secret holds the old certificate")
	}

	// A Secret someone broke is replaced too, at once, not at renewal.
	broken := back.DeepCopy()
	broken.Data[corev1.TLSCertKey] = []byte("garbage")
	if _, err := client.CoreV1().Secrets(appNS).Update(context.Background(), broken, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSecret(t, client, appNS, name, func(s *corev1.Secret) error {
		if _, err := pki.ParseCerts(s.Data[corev1.TLSCertKey]); err != nil {
			return fmt.Errorf("still broken: %v", err)
		}
		return nil
	})
}

func TestShortLifetimeRenews(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	// Renewal comes at about two thirds of the lifetime; 15 s leaves the
	// CA 5 s to renew before expiry on a loaded machine.
	const lifetime = 15 * time.Second
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0", LeafLifetime: lifetime, minLeafLifetime: time.Second})
	createDeployments(t, client, appNS, controlNS, "web")
	name := contract.SecretName("web", contract.KindDeployment)
	first := waitSecret(t, client, appNS, name, nil)
	serial := leafSerial(t, first)
	certs, _ := pki.ParseCerts(first.Data[corev1.TLSCertKey])
	renewAt := pki.RenewAtJittered(certs[0].NotBefore, certs[0].NotAfter, certs[0].SerialNumber)

	renewed := waitSecret(t, client, appNS, name, func(s *corev1.Secret) error {
		if leafSerial(t, s) == serial {
			return errors.New("not renewed yet")
		}
		return nil
	})
	// When the CA issued the new certificate is written in it (NotAfter
	// is issue time plus the lifetime, to the second): judge the renewal
	// by that, not by when a loaded API server let the test see it.
	next, _ := pki.ParseCerts(renewed.Data[corev1.TLSCertKey])
	issued := next[0].NotAfter.Add(-lifetime)
	if issued.Add(time.Second).Before(renewAt) {
		t.Errorf("renewed at %s, before two thirds of the lifetime (%s)", issued.Format(time.StampMilli), renewAt.Format(time.StampMilli))
	}
	if !issued.Before(certs[0].NotAfter) {
		t.Errorf("renewed at %s, after the old certificate expired (%s)", issued.Format(time.StampMilli), certs[0].NotAfter)
	}
	localcluster.Eventually(t, 10*time.Second, func() error { // counted just after the write
		if n := testutil.ToFloat64(ca.metrics.renewals); n < 1 {
			return fmt.Errorf("renewals metric %v, want ≥ 1", n)
		}
		return nil
	})
	if _, err := ca.Root().Check(renewed.Data[corev1.TLSCertKey], renewed.Data[corev1.TLSPrivateKeyKey],
		contract.Identity("web", contract.KindDeployment, appNS, controlNS), time.Now()); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
}

func TestTwoReplicasOnlyLeaderWrites(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	// Short enough to keep the test quick, long enough that a loaded machine
	// does not lose the Lease by accident.
	fast := Config{ControlNamespace: controlNS, LeaseDuration: 8 * time.Second, RenewDeadline: 6 * time.Second, RetryPeriod: 500 * time.Millisecond}
	cfgA, cfgB := fast, fast
	cfgA.Identity, cfgB.Identity = "ca-a", "ca-b"
	var a, b *testCA
	var wg sync.WaitGroup
	wg.Go(func() { a = startCA(t, cfgA) })
	wg.Go(func() { b = startCA(t, cfgB) })
	wg.Wait()
	if !a.Root().Cert.Equal(b.Root().Cert) {
		t.Fatal("replicas loaded different roots")
	}
	createDeployments(t, client, appNS, controlNS, "one", "two", "three")
	for _, n := range []string{"one", "two", "three"} {
		waitSecret(t, client, appNS, contract.SecretName(n, contract.KindDeployment), nil)
	}
	leader, standby := a, b
	if testutil.ToFloat64(b.metrics.leader) == 1 {
		leader, standby = b, a
	}
	if testutil.ToFloat64(leader.metrics.leader) != 1 || testutil.ToFloat64(standby.metrics.leader) != 0 {
		t.Fatalf("leader gauges a=%v b=%v, want exactly one leader", testutil.ToFloat64(a.metrics.leader), testutil.ToFloat64(b.metrics.leader))
	}
	// The CA counts a certificate just after the API server has the Secret,
	// so the count can trail what waitSecret saw by a moment.
	waitIssued(t, leader, 3)
	if n := testutil.ToFloat64(standby.metrics.issued); n != 0 {
		t.Errorf("standby %s issued %v certificates", standby.cfg.Identity, n)
	}
	lease, err := client.CoordinationV1().Leases(controlNS).Get(context.Background(), "linkerd-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity != leader.cfg.Identity {
		t.Errorf("Lease holder %v, want %s", lease.Spec.HolderIdentity, leader.cfg.Identity)
	}

	// The standby takes over when the leader goes, and then it writes.
	leader.stop(t)
	localcluster.Eventually(t, 20*time.Second, func() error {
		if testutil.ToFloat64(standby.metrics.leader) != 1 {
			return errors.New("standby has not taken the lease")
		}
		return nil
	})
	name := contract.SecretName("two", contract.KindDeployment)
	if err := client.CoreV1().Secrets(appNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSecret(t, client, appNS, name, nil)
	waitIssued(t, standby, 1) // only the deleted one
}

// waitIssued waits for ca's issued counter to reach want, and fails if it
// goes past it.
func waitIssued(t *testing.T, ca *testCA, want float64) {
	t.Helper()
	localcluster.Eventually(t, 10*time.Second, func() error {
		if n := testutil.ToFloat64(ca.metrics.issued); n != want {
			return fmt.Errorf("%s issued %v certificates, want %v", ca.cfg.Identity, n, want)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond)
	if n := testutil.ToFloat64(ca.metrics.issued); n != want {
		t.Errorf("%s issued %v certificates, want exactly %v", ca.cfg.Identity, n, want)
	}
}

func TestMalformedRootRefusesToStart(t *testing.T) {
	client := clusterClient(t)
	controlNS, _ := namespaces(t, client)
	bad, err := client.CoreV1().Secrets(controlNS).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.RootSecret},
		Type:       corev1.SecretTypeTLS,
		Data: map[string][]byte{
			corev1.TLSCertKey:       []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
			corev1.TLSPrivateKeyKey: []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleQ==\n-----END PRIVATE KEY-----\n"),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctrl, err := New(clusterClient(t), Config{ControlNamespace: controlNS, Logger: testLogger(t, "bad-root")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = ctrl.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "refusing to start") || !strings.Contains(err.Error(), controlNS+"/"+contract.RootSecret) {
		t.Fatalf("Run = %v, want a refusal naming the root Secret", err)
	}
	if strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("error leaks key material: %v", err)
	}
	if ctrl.Ready() {
		t.Error("CA with a malformed root reported ready")
	}
	after, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != bad.ResourceVersion {
		t.Error("the malformed root Secret was overwritten")
	}
}

func TestOwnerDeletionCollectsSecret(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	createDeployments(t, client, appNS, controlNS, "gone")
	name := contract.SecretName("gone", contract.KindDeployment)
	waitSecret(t, client, appNS, name, nil)
	bg := metav1.DeletePropagationBackground
	if err := client.AppsV1().Deployments(appNS).Delete(context.Background(), "gone", metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil {
		t.Fatal(err)
	}
	localcluster.Eventually(t, 60*time.Second, func() error {
		_, err := client.CoreV1().Secrets(appNS).Get(context.Background(), name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("Secret still there (err %v)", err)
	})
}

// A Secret of the same name that the CA did not write is left alone.
func TestForeignSecretIsNotClobbered(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	name := contract.SecretName("web", contract.KindDeployment)
	foreign, err := client.CoreV1().Secrets(appNS).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Data:       map[string][]byte{corev1.TLSCertKey: []byte("theirs")},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	createDeployments(t, client, appNS, controlNS, "web")
	localcluster.Eventually(t, 30*time.Second, func() error {
		if n := testutil.ToFloat64(ca.metrics.errors.WithLabelValues("secret")); n < 1 {
			return fmt.Errorf("no error counted yet (%v)", n)
		}
		return nil
	})
	got, err := client.CoreV1().Secrets(appNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != foreign.ResourceVersion || string(got.Data[corev1.TLSCertKey]) != "theirs" {
		t.Error("the CA overwrote a Secret it does not own")
	}
}

func TestBarePodOwnsItself(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	pod, err := client.CoreV1().Pods(appNS).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "solo", Labels: map[string]string{contract.ControlPlaneNSLabel: controlNS},
			Annotations: map[string]string{contract.TLSAnnotation: "optional"}},
		Spec: corev1.PodSpec{SchedulerName: unscheduled, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := waitSecret(t, client, appNS, contract.SecretName("solo", contract.KindPod), nil)
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != pod.UID {
		t.Errorf("owner references %+v, want the pod", s.OwnerReferences)
	}
	if s.Annotations[contract.IdentityAnnotation] != contract.Identity("solo", contract.KindPod, appNS, controlNS) {
		t.Errorf("identity annotation %q", s.Annotations[contract.IdentityAnnotation])
	}
}
