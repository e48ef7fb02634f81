//go:build integration

package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// tenantRoot is a root a tenant made: the mesh must never trust it.
func tenantRoot(t *testing.T) *pki.Root {
	t.Helper()
	r, _, err := pki.NewRoot("tenant-root", 24*time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// plantBundle is what any holder of the built-in edit role can do in its
// own namespace: a ConfigMap named and labelled like this control plane's
// bundle, holding its own root.
func plantBundle(t *testing.T, client kubernetes.Interface, ns, labelledFor string, root *pki.Root) {
	t.Helper()
	_, err := client.CoreV1().ConfigMaps(ns).Create(context.Background(), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: contract.BundleConfigMap,
			Labels: map[string]string{contract.BundleLabel: labelledFor, contract.ControlPlaneNSLabel: labelledFor}},
		Data: map[string]string{contract.BundleKey: string(root.AnchorsPEM)},
	}, metav1.CreateOptions{FieldManager: "tenant"})
	if err != nil {
		t.Fatal(err)
	}
}

func tenantNamespace(t *testing.T, client kubernetes.Interface) string {
	t.Helper()
	ns := fmt.Sprintf("tenant-%d", time.Now().UnixNano()%1e9)
	if _, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	return ns
}

func holds(pemText string, c *x509.Certificate) bool {
	certs, err := pki.ParseCerts([]byte(pemText))
	if err != nil {
		return false
	}
	for _, have := range certs {
		if have.Equal(c) {
			return true
		}
	}
	return false
}

// C1/M5: a tenant's bundle, planted before the control plane exists, used
// to stop the CA from ever creating its root (and its error sent the admin
// to `linkerd ca rotate`). Now the CA bootstraps, and in a namespace where
// it has TLS pods it overwrites the planted bundle and says so.
func TestTenantBundleNeitherBlocksBootstrapNorStays(t *testing.T) {
	client := clusterClient(t)
	controlNS, _ := namespaces(t, client)
	tenant := tenantNamespace(t, client)
	evil := tenantRoot(t)
	plantBundle(t, client, tenant, controlNS, evil)

	ctrl, err := New(client, Config{ControlNamespace: controlNS, Identity: "ca-0", Logger: testLogger(t, "ca-0")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	localcluster.Eventually(t, 30*time.Second, func() error {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("a tenant's ConfigMap stopped the CA from bootstrapping: %v", err)
		default:
		}
		if !ctrl.Ready() {
			return fmt.Errorf("CA not ready: %s", ctrl.NotReadyReason())
		}
		return nil
	})
	if _, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{}); err != nil {
		t.Fatalf("no root Secret: %v", err)
	}
	localcluster.Eventually(t, 30*time.Second, func() error {
		rec, err := client.CoreV1().ConfigMaps(controlNS).Get(context.Background(), contract.AnchorsConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if rec.Data[contract.BundleKey] != string(ctrl.Root().AnchorsPEM) {
			return errors.New("anchor record does not hold exactly the root")
		}
		return nil
	})

	// The tenant now runs a TLS workload: its bundle is an output.
	createDeployments(t, client, tenant, controlNS, "web")
	waitSecret(t, client, tenant, contract.SecretName("web", contract.KindDeployment), nil)
	localcluster.Eventually(t, 30*time.Second, func() error {
		cm, err := client.CoreV1().ConfigMaps(tenant).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cm.Data[contract.BundleKey] != string(ctrl.Root().AnchorsPEM) {
			return errors.New("the planted bundle was not overwritten with the CA's anchors")
		}
		if len(events(t, client, tenant, "ForeignAnchors")) == 0 {
			return errors.New("no ForeignAnchors event in the tenant's namespace")
		}
		return nil
	})
}

// C1: with the root lost, `linkerd ca rotate` used to union every labelled
// bundle in every namespace into the new root Secret, so a tenant's root
// reached every proxy. Now the bundles keep what the control plane's own
// record holds and nothing a tenant wrote.
func TestLostRootRotationTrustsOnlyTheControlPlane(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	tenant := tenantNamespace(t, client)
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	createDeployments(t, client, appNS, controlNS, "web")
	waitSecret(t, client, appNS, contract.SecretName("web", contract.KindDeployment), nil)
	oldRoot := ca.Root()
	localcluster.Eventually(t, 30*time.Second, func() error {
		_, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
		return err
	})
	evil := tenantRoot(t)
	plantBundle(t, client, tenant, controlNS, evil)

	if err := client.CoreV1().Secrets(controlNS).Delete(context.Background(), contract.RootSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	localcluster.Eventually(t, 30*time.Second, func() error {
		if ca.Ready() {
			return errors.New("CA still ready without its root")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var leaked []string
	res, err := Rotate(ctx, client, RotateOptions{ControlNamespace: controlNS, PropagationDelay: time.Second,
		Progress: func(step, msg string) {
			t.Logf("rotate [%s] %s", step, msg)
			// While leaves move, the new root Secret says what every
			// bundle must hold.
			if root, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{}); err == nil &&
				holds(string(root.Data[contract.RootBundleKey]), evil.Cert) {
				leaked = append(leaked, step)
			}
		}})
	if len(leaked) > 0 {
		t.Fatalf("the tenant's root %q was in the control plane's trust bundle during steps %v", evil.Cert.Subject, leaked)
	}
	if err != nil {
		t.Fatalf("rotation: %v", err)
	}
	if !res.LostRoot {
		t.Error("result does not say the root was lost")
	}
	for _, ns := range []string{appNS, controlNS} {
		cm, err := client.CoreV1().ConfigMaps(ns).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
		if apierrors.IsNotFound(err) && ns == controlNS {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if holds(cm.Data[contract.BundleKey], evil.Cert) {
			t.Errorf("bundle in %s trusts the tenant's root", ns)
		}
		if holds(cm.Data[contract.BundleKey], oldRoot.Cert) {
			t.Errorf("bundle in %s still holds the lost root after the rotation", ns)
		}
	}
	cm, err := client.CoreV1().ConfigMaps(tenant).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
	if err != nil || !holds(cm.Data[contract.BundleKey], evil.Cert) {
		t.Errorf("the CA wrote into a namespace without its TLS pods (err %v)", err)
	}
}

// M5: bundles and Secrets a tenant controls used to hold a rotation in
// its wait steps for good (until the root expired and the mesh fell back
// to plain text). Now the rotation waits only for what the CA writes and
// names what it skipped.
func TestTenantObjectsCannotStallRotation(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	quiet := tenantNamespace(t, client)
	other := tenantNamespace(t, client)
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	createDeployments(t, client, appNS, controlNS, "web")
	waitSecret(t, client, appNS, contract.SecretName("web", contract.KindDeployment), nil)
	evil := tenantRoot(t)

	// A labelled bundle in a namespace without TLS pods.
	plantBundle(t, client, quiet, controlNS, evil)
	// A TLS workload whose namespace holds a bundle naming another control
	// plane, and whose Secret the tenant wrote with a certificate of its own.
	plantBundle(t, client, other, "someone-else", evil)
	leaf, err := evil.Issue(contract.Identity("api", contract.KindDeployment, other, controlNS), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Secrets(other).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.SecretName("api", contract.KindDeployment),
			Labels: map[string]string{contract.ControlPlaneNSLabel: controlNS, contract.OwnerKindLabel: contract.KindDeployment}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM},
	}, metav1.CreateOptions{FieldManager: "tenant"}); err != nil {
		t.Fatal(err)
	}
	createDeployments(t, client, other, controlNS, "api")
	localcluster.Eventually(t, 30*time.Second, func() error {
		if len(events(t, client, other, "BundleConflict")) == 0 {
			return errors.New("no BundleConflict event")
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var skipped []string
	_, err = Rotate(ctx, client, RotateOptions{ControlNamespace: controlNS, PropagationDelay: time.Second,
		Progress: func(step, msg string) {
			t.Logf("rotate [%s] %s", step, msg)
			if step == "conflict" {
				skipped = append(skipped, msg)
			}
		}})
	if err != nil {
		t.Fatalf("a tenant's objects held the rotation: %v", err)
	}
	joined := strings.Join(skipped, "\n")
	for _, want := range []string{other + "/" + contract.BundleConfigMap, other + "/" + contract.SecretName("api", contract.KindDeployment)} {
		if !strings.Contains(joined, want) {
			t.Errorf("the rotation did not report %s as skipped; it said:\n%s", want, joined)
		}
	}
	s, err := client.CoreV1().Secrets(appNS).Get(context.Background(), contract.SecretName("web", contract.KindDeployment), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if s.Annotations[contract.IssuerAnnotation] != pki.Fingerprint(ca.Root().Cert) {
		t.Error("web's certificate was not re-issued from the new root")
	}
}

// M4: the root the CA generates is constrained to the mesh's identities
// and its key is in no Secret: the CA keeps an intermediate issuer.
func TestGeneratedRootKeyStaysOutOfTheCluster(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	createDeployments(t, client, appNS, controlNS, "web")
	waitSecret(t, client, appNS, contract.SecretName("web", contract.KindDeployment), nil)
	r := ca.Root()
	if !r.Intermediate() {
		t.Fatal("the CA issues from its root, whose key is then in the cluster")
	}
	root := r.Anchors[0]
	if len(root.PermittedDNSDomains) != 1 || root.PermittedDNSDomains[0] != contract.IdentityDomain(controlNS) {
		t.Errorf("root name constraints %v, want %s", root.PermittedDNSDomains, contract.IdentityDomain(controlNS))
	}
	for _, ns := range []string{controlNS, appNS} {
		list, err := client.CoreV1().Secrets(ns).List(context.Background(), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range list.Items {
			for k, v := range s.Data {
				key, err := pki.ParseKey(v)
				if err != nil {
					continue
				}
				type equaler interface{ Equal(crypto.PublicKey) bool }
				if pub, ok := key.Public().(equaler); ok && pub.Equal(root.PublicKey) {
					t.Errorf("Secret %s/%s key %s holds the root's private key", ns, s.Name, k)
				}
			}
		}
	}
	cm, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !holds(cm.Data[contract.BundleKey], root) || holds(cm.Data[contract.BundleKey], r.Cert) {
		t.Error("the bundle should hold the root, not the issuer")
	}
}

// M3: a pod that only carries the linkerd.io/proxy-deployment label of an
// existing Deployment used to get that Deployment's identity issued. Now
// the claim must be backed by the pod's controllers; the pod gets an Event
// saying why nothing was issued, and the Deployment's own pod still gets it.
func TestLabelOnlyClaimGetsNoIdentity(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	d := meshedDeployment("web", appNS, controlNS)
	zero := int32(0)
	d.Spec.Replicas = &zero
	if _, err := client.AppsV1().Deployments(appNS).Create(context.Background(), d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	impostor, err := client.CoreV1().Pods(appNS).Create(context.Background(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "impostor", Labels: map[string]string{contract.ControlPlaneNSLabel: controlNS,
			contract.KindLabel(contract.KindDeployment): "web"}, Annotations: map[string]string{contract.TLSAnnotation: contract.TLSOptional}},
		Spec: corev1.PodSpec{SchedulerName: unscheduled, Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	name := contract.SecretName("web", contract.KindDeployment)
	localcluster.Eventually(t, 30*time.Second, func() error {
		for _, e := range events(t, client, appNS, "IdentityRefused") {
			if e.InvolvedObject.Name == impostor.Name {
				return nil
			}
		}
		return errors.New("no IdentityRefused Event on the impostor")
	})
	if _, err := client.CoreV1().Secrets(appNS).Get(context.Background(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a label alone got %s issued (err %v)", name, err)
	}
	// The Deployment's own pod is what the identity is for.
	one := int32(1)
	dep, err := client.AppsV1().Deployments(appNS).Get(context.Background(), "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dep.Spec.Replicas = &one
	if _, err := client.AppsV1().Deployments(appNS).Update(context.Background(), dep, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitSecret(t, client, appNS, name, nil)
}
