//go:build integration

package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// startCAUnready starts a CA and waits only for its caches, for tests of
// a CA that must refuse to become ready.
func startCAUnready(t *testing.T, cfg Config) *testCA {
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
		if !ctrl.synced.Load() {
			return errors.New("CA caches not synced")
		}
		return nil
	})
	return tc
}

// makeRoot signs a self-signed CA from tmpl and returns cert and key PEM.
func makeRoot(t *testing.T, tmpl *x509.Certificate) ([]byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	tmpl.KeyUsage = x509.KeyUsageCertSign
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM
}

func putRoot(t *testing.T, client kubernetes.Interface, ns string, cert, key []byte) {
	t.Helper()
	if _, err := client.CoreV1().Secrets(ns).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.RootSecret, Labels: map[string]string{contract.ControlPlaneNSLabel: ns}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: cert, corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func serveAdmin(t *testing.T, c *Controller) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Serve(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + l.Addr().String()
}

func events(t *testing.T, client kubernetes.Interface, ns, reason string) []corev1.Event {
	t.Helper()
	list, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("reason", reason).String(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range list.Items {
		if strings.Contains(e.Message, "PRIVATE KEY") {
			t.Errorf("event %s leaks key material: %s", e.Name, e.Message)
		}
	}
	return list.Items
}

// Defect 1: a root with less life left than a certificate used to make
// the CA issue a leaf that was already due, and rewrite it without pause.
// Now it refuses, says so everywhere, and retries with backoff.
func TestExpiringRootRefusesWithoutLoop(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	now := time.Now()
	// Under 30s left is where the old CA's leaves were due the moment
	// they were issued: it wrote 382 certificates for this one owner in
	// 6s (measured on the tree before this fix).
	cert, key := makeRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: "dying root"},
		NotBefore: now.Add(-365 * 24 * time.Hour), NotAfter: now.Add(25 * time.Second)})
	putRoot(t, client, controlNS, cert, key)
	ca := startCAUnready(t, Config{ControlNamespace: controlNS, Identity: "ca-0", LeafLifetime: time.Hour})
	base := serveAdmin(t, ca.Controller)
	createDeployments(t, client, appNS, controlNS, "web")

	localcluster.Eventually(t, 30*time.Second, func() error {
		if n := testutil.ToFloat64(ca.metrics.refused); n < 1 {
			return fmt.Errorf("refusals %v", n)
		}
		if len(events(t, client, controlNS, "RootExpiring")) == 0 {
			return errors.New("no RootExpiring event on the root Secret")
		}
		if len(events(t, client, appNS, "IssueRefused")) == 0 {
			return errors.New("no IssueRefused event on the Deployment")
		}
		return nil
	})
	// Backoff from 0.5s doubling: within 6s at most a handful of tries,
	// where the old loop rewrote the Secret as fast as the API allowed.
	before := testutil.ToFloat64(ca.metrics.refused)
	time.Sleep(6 * time.Second)
	if n := testutil.ToFloat64(ca.metrics.refused) - before; n > 5 {
		t.Errorf("%v refusals in 6s: retries are not backing off", n)
	}
	if n := testutil.ToFloat64(ca.metrics.issued); n != 0 {
		t.Errorf("issued %v certificates from a root that expires within a certificate lifetime", n)
	}
	if _, err := client.CoreV1().Secrets(appNS).Get(context.Background(), contract.SecretName("web", contract.KindDeployment), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("workload Secret written anyway (err %v)", err)
	}
	resp, err := http.Get(base + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "expires") || !strings.Contains(string(body), RotateCommand) {
		t.Errorf("/ready = %d %q, want 503 saying the root expires and naming %q", resp.StatusCode, body, RotateCommand)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"linkerd_ca_root_can_issue 0", "linkerd_ca_issuance_refused_total", "linkerd_ca_root_expiration_timestamp_seconds"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// Defect 1 and 6: a root whose name constraints exclude the mesh used to
// issue leaves that failed the next check, forever. Loading it now tries
// one issue and check, and refuses it.
func TestConstrainedRootRefusedAtLoad(t *testing.T) {
	client := clusterClient(t)
	controlNS, _ := namespaces(t, client)
	now := time.Now()
	cert, key := makeRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: "example.com only"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), PermittedDNSDomains: []string{"example.com"}})
	putRoot(t, client, controlNS, cert, key)
	ctrl, err := New(client, Config{ControlNamespace: controlNS, Logger: testLogger(t, "constrained")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = ctrl.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "fail verification") {
		t.Fatalf("Run = %v, want a refusal of a root whose certificates fail verification", err)
	}
}

func TestTooShortLifetimeIsRefused(t *testing.T) {
	_, err := New(clusterClient(t), Config{LeafLifetime: 5 * time.Minute})
	if err == nil || !strings.Contains(err.Error(), "kubelet") || !strings.Contains(err.Error(), MinLeafLifetime.String()) {
		t.Fatalf("New with 5m certificates = %v, want a refusal naming the kubelet and %s", err, MinLeafLifetime)
	}
}

// Defect 3: deleting the root Secret used to make a restarted CA generate
// a new root that no bundle trusted. Now a running CA stops issuing and a
// restarted one refuses, both naming the rotation command.
func TestDeletedRootIsRefused(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	first := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-first"})
	createDeployments(t, client, appNS, controlNS, "web")
	waitSecret(t, client, appNS, contract.SecretName("web", contract.KindDeployment), nil)
	localcluster.Eventually(t, 30*time.Second, func() error {
		_, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
		return err
	})
	if err := client.CoreV1().Secrets(controlNS).Delete(context.Background(), contract.RootSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	localcluster.Eventually(t, 30*time.Second, func() error {
		if why := first.NotReadyReason(); !strings.Contains(why, "deleted") || !strings.Contains(why, RotateCommand) {
			return fmt.Errorf("running CA not-ready reason %q", why)
		}
		return nil
	})
	first.stop(t)

	ctrl, err := New(client, Config{ControlNamespace: controlNS, Identity: "ca-second", Logger: testLogger(t, "ca-second")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = ctrl.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), RotateCommand) || !strings.Contains(err.Error(), controlNS+"/"+contract.AnchorsConfigMap) {
		t.Fatalf("restart without the root = %v, want a refusal naming %q and the control plane's anchor record", err, RotateCommand)
	}
	if _, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a new root Secret was generated (err %v)", err)
	}
}

// Defect 5: two control planes with TLS pods in one namespace used to
// overwrite each other's bundle, since both applied as "linkerd-ca".
func TestBundleOfAnotherControlPlaneIsRefused(t *testing.T) {
	client := clusterClient(t)
	controlA, appNS := namespaces(t, client)
	controlB, _ := namespaces(t, client)
	a := startCA(t, Config{ControlNamespace: controlA, Identity: "ca-a"})
	createDeployments(t, client, appNS, controlA, "alpha")
	var bundle *corev1.ConfigMap
	localcluster.Eventually(t, 30*time.Second, func() error {
		var err error
		bundle, err = client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
		return err
	})
	if bundle.Data[contract.BundleKey] != string(a.Root().AnchorsPEM) {
		t.Fatal("bundle does not hold control plane A's root")
	}
	b := startCA(t, Config{ControlNamespace: controlB, Identity: "ca-b"})
	createDeployments(t, client, appNS, controlB, "beta")
	localcluster.Eventually(t, 30*time.Second, func() error {
		if n := testutil.ToFloat64(b.metrics.errors.WithLabelValues("bundle")); n < 1 {
			return fmt.Errorf("B counted %v bundle errors", n)
		}
		if len(events(t, client, appNS, "BundleConflict")) == 0 {
			return errors.New("no BundleConflict event")
		}
		return nil
	})
	got, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Data[contract.BundleKey] != string(a.Root().AnchorsPEM) || got.Labels[contract.BundleLabel] != controlA {
		t.Error("control plane B overwrote A's bundle")
	}
	for _, mf := range got.ManagedFields {
		if mf.Manager == FieldManager(controlB) {
			t.Errorf("B's field manager %s owns fields of A's bundle", mf.Manager)
		}
	}
}

// Least privilege in memory: the Secret cache holds certificates, never
// a workload's private key.
func TestCacheHoldsNoPrivateKeys(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	createDeployments(t, client, appNS, controlNS, "web", "emoji")
	for _, n := range []string{"web", "emoji"} {
		waitSecret(t, client, appNS, contract.SecretName(n, contract.KindDeployment), nil)
	}
	localcluster.Eventually(t, 30*time.Second, func() error {
		if n := len(ca.secretInformer.GetStore().List()); n < 2 {
			return fmt.Errorf("%d Secrets cached", n)
		}
		return nil
	})
	for _, obj := range ca.secretInformer.GetStore().List() {
		s := obj.(*corev1.Secret)
		if len(s.Data[corev1.TLSPrivateKeyKey]) != 0 || strings.Contains(fmt.Sprint(s.Data), "PRIVATE KEY") {
			t.Errorf("cached %s/%s holds its private key", s.Namespace, s.Name)
		}
		if len(s.Data[corev1.TLSCertKey]) == 0 {
			t.Errorf("cached %s/%s lost its certificate", s.Namespace, s.Name)
		}
	}
	ca.writtenMu.Lock()
	for k, w := range ca.written {
		if len(w.secret.Data[corev1.TLSPrivateKeyKey]) != 0 {
			t.Errorf("just-written copy of %s holds its private key", k)
		}
	}
	ca.writtenMu.Unlock()
}

// Events on the owning workload and expiry gauges per owner.
func TestEventsAndExpiryMetrics(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	deps := createDeployments(t, client, appNS, controlNS, "web")
	s := waitSecret(t, client, appNS, contract.SecretName("web", contract.KindDeployment), nil)
	certs, err := pki.ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	localcluster.Eventually(t, 30*time.Second, func() error {
		for _, e := range events(t, client, appNS, "Issued") {
			if e.InvolvedObject.Kind == "Deployment" && e.InvolvedObject.UID == deps["web"].UID {
				return nil
			}
		}
		return errors.New("no Issued event on the Deployment")
	})
	if got := testutil.ToFloat64(ca.metrics.leafExpiry.WithLabelValues(appNS, contract.KindDeployment, "web")); got != float64(certs[0].NotAfter.Unix()) {
		t.Errorf("expiry gauge %v, want %d", got, certs[0].NotAfter.Unix())
	}
	if got := testutil.ToFloat64(ca.metrics.rootExpiry); got != float64(ca.Root().Cert.NotAfter.Unix()) {
		t.Errorf("root expiry gauge %v, want %d", got, ca.Root().Cert.NotAfter.Unix())
	}
}

// Defect 8, the CA's side: Job and CronJob owners get Secrets owned by
// the Job or CronJob, under the names inject mounts.
func TestJobAndCronJobOwners(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	tmpl := func(kind, name string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{
				Labels:      map[string]string{contract.ControlPlaneNSLabel: controlNS, contract.KindLabel(kind): name},
				Annotations: map[string]string{contract.TLSAnnotation: contract.TLSOptional},
			},
			Spec: corev1.PodSpec{SchedulerName: unscheduled, RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "work", Image: "example.invalid/work:1"}}},
		}
	}
	job, err := client.BatchV1().Jobs(appNS).Create(context.Background(), &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "migrate"},
		Spec:       batchv1.JobSpec{Template: tmpl(contract.KindJob, "migrate")},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cron, err := client.BatchV1().CronJobs(appNS).Create(context.Background(), &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly"},
		Spec: batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{
			Spec: batchv1.JobSpec{Template: tmpl(contract.KindCronJob, "nightly")}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Stand in for the CronJob's first run: a Job it owns, as the cronjob
	// controller would create at 03:00.
	run := tmpl(contract.KindCronJob, "nightly")
	yes := true
	if _, err := client.BatchV1().Jobs(appNS).Create(context.Background(), &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "nightly-29000000", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "batch/v1", Kind: "CronJob", Name: "nightly", UID: cron.UID, Controller: &yes}}},
		Spec: batchv1.JobSpec{Template: run},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kind, name, ownerKind string
		uid                   string
	}{
		{contract.KindJob, "migrate", "Job", string(job.UID)},
		{contract.KindCronJob, "nightly", "CronJob", string(cron.UID)},
	} {
		s := waitSecret(t, client, appNS, contract.SecretName(tc.name, tc.kind), nil)
		if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].Kind != tc.ownerKind || string(s.OwnerReferences[0].UID) != tc.uid {
			t.Errorf("%s: owner references %+v, want the %s", s.Name, s.OwnerReferences, tc.ownerKind)
		}
		if got, want := s.Annotations[contract.IdentityAnnotation], contract.Identity(tc.name, tc.kind, appNS, controlNS); got != want {
			t.Errorf("%s: identity %q, want %q", s.Name, got, want)
		}
	}
}

// An intermediate issuer signed by an offline root: leaves carry the
// issuer after them, bundles hold only the root, and openssl agrees.
func TestIntermediateIssuerEndToEnd(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	now := time.Now()
	rootPEM, rootKeyPEM := makeRoot(t, &x509.Certificate{Subject: pkix.Name{CommonName: "offline root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour)})
	rootCert, err := pki.ParseCerts(rootPEM)
	if err != nil {
		t.Fatal(err)
	}
	rootKey, err := pki.ParseKey(rootKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "cluster issuer"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign}, rootCert[0], &issuerKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	issuerPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	issuerKeyPEM, err := pki.EncodeKey(issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(controlNS).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.RootSecret},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: issuerPEM, corev1.TLSPrivateKeyKey: issuerKeyPEM, contract.RootAnchorsKey: rootPEM},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	if !ca.Root().Intermediate() {
		t.Fatal("CA did not load the issuer as an intermediate")
	}
	createDeployments(t, client, appNS, controlNS, "web")
	s := waitSecret(t, client, appNS, contract.SecretName("web", contract.KindDeployment), nil)
	var bundle string
	localcluster.Eventually(t, 30*time.Second, func() error {
		cm, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		bundle = cm.Data[contract.BundleKey]
		return nil
	})
	if bundle != string(rootPEM) {
		t.Errorf("bundle is not the offline root alone")
	}
	certs, err := pki.ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || certs[1].Subject.CommonName != "cluster issuer" {
		t.Fatalf("tls.crt holds %d certificates, want leaf then issuer", len(certs))
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{"bundle.pem": []byte(bundle), "leaf.pem": pki.EncodeCerts(certs[:1]), "issuer.pem": pki.EncodeCerts(certs[1:])} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, purpose := range []string{"sslserver", "sslclient"} {
		out, err := exec.Command("openssl", "verify", "-CAfile", filepath.Join(dir, "bundle.pem"), "-untrusted", filepath.Join(dir, "issuer.pem"),
			"-purpose", purpose, filepath.Join(dir, "leaf.pem")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": OK") {
			t.Errorf("openssl verify (%s) against the offline root: %v\n%s", purpose, err, out)
		}
	}
}
