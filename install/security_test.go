//go:build integration

package install

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// applyInstall applies install's output for real and removes all of it,
// cluster-scoped objects included, when the test ends.
func applyInstall(t *testing.T, o Options) string {
	t.Helper()
	manifest := render(t, o)
	out, err := kubectl(t, manifest, "apply", "-f", "-")
	if err != nil {
		t.Fatalf("apply install: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		_, _ = kubectl(t, manifest, "delete", "--ignore-not-found", "--wait=false", "-f", "-")
	})
	return out
}

func waitReady(t *testing.T, client kubernetes.Interface, ns, component string, want int) {
	t.Helper()
	localcluster.Eventually(t, 90*time.Second, func() error {
		pods, err := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=" + component})
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		if ready < want {
			return fmt.Errorf("%d of %d %s pods ready (of %d created)", ready, want, component, len(pods.Items))
		}
		return nil
	})
}

// Control-plane pods must be admitted by a namespace that enforces the
// restricted Pod Security Standard, in the HA layout too.
func TestControlPlanePassesRestrictedPodSecurity(t *testing.T) {
	const ns = "pss-restricted"
	client := localcluster.Client(t)
	// The namespace's Pod Security labels come from install itself.
	out := applyInstall(t, Options{Version: "test", TLS: "optional", ControlNamespace: ns, ControllerReplicas: 2})
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	// The negative control: if Pod Security admission were off, or install
	// did not label the namespace, everything below would pass for
	// nothing. A privileged pod must be refused here.
	yes := true
	bad := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "privileged", Namespace: ns}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: "example.invalid/c:1", SecurityContext: &corev1.SecurityContext{Privileged: &yes}}}}}
	if _, err := client.CoreV1().Pods(ns).Create(context.Background(), bad, metav1.CreateOptions{}); err == nil {
		_ = client.CoreV1().Pods(ns).Delete(context.Background(), bad.Name, metav1.DeleteOptions{})
		t.Fatal("a privileged pod was admitted into the control-plane namespace: install does not make it enforce restricted, or Pod Security admission is off")
	} else if !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("privileged pod refused, but not by Pod Security: %v", err)
	}
	if strings.Contains(out, "PodSecurity") {
		t.Errorf("apply warned about Pod Security:\n%s", out)
	}
	if !strings.Contains(out, "poddisruptionbudget.policy/linkerd-ca created") {
		t.Errorf("no PodDisruptionBudget in the HA layout:\n%s", out)
	}
	waitReady(t, client, ns, "ca", 2)
	// Whether Prometheus runs here depends on bin/prometheus being built;
	// that its pod is admitted at all is what this test needs.
	localcluster.Eventually(t, 60*time.Second, func() error {
		pods, err := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=prometheus"})
		if err != nil {
			return err
		}
		if len(pods.Items) == 0 {
			return fmt.Errorf("no Prometheus pod admitted")
		}
		return nil
	})
	evs, err := client.CoreV1().Events(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.Reason == "FailedCreate" {
			t.Errorf("%s %s: %s", e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Message)
		}
	}
}

// What the CA's ServiceAccount may do, asked of the real authorizer and
// tried for real against the real admission chain.
func TestCALeastPrivilege(t *testing.T) {
	const ns = "lp-ca"
	client := localcluster.Client(t)
	applyInstall(t, Options{Version: "test", TLS: "optional", ControlNamespace: ns})
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	app := "lp-app"
	createNamespace(t, app)
	sa := "system:serviceaccount:" + ns + ":linkerd-ca"

	canI := func(args ...string) bool {
		out, err := kubectl(t, nil, append([]string{"auth", "can-i", "--as=" + sa}, args...)...)
		// The answer is the last line; kubectl may warn before it (a
		// cluster-scoped resource asked about in the default namespace).
		lines := strings.Split(strings.TrimSpace(out), "\n")
		switch strings.TrimSpace(lines[len(lines)-1]) {
		case "yes":
			return true
		case "no":
			return false
		}
		t.Fatalf("kubectl auth can-i %v: %v\n%s", args, err, out)
		return false
	}
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"list", "pods", "-A"}, true},
		{[]string{"watch", "pods", "-A"}, true},
		{[]string{"get", "pods", "-n", app}, false},
		{[]string{"create", "secrets", "-n", app}, true},
		{[]string{"patch", "secrets", "-n", app}, true},
		{[]string{"get", "secrets/" + contract.RootSecret, "-n", ns}, true},
		{[]string{"get", "secrets/other", "-n", ns}, false},
		{[]string{"get", "secrets", "-n", app}, false},
		{[]string{"update", "secrets", "-n", app}, false},
		{[]string{"delete", "secrets", "-n", app}, false},
		{[]string{"patch", "configmaps/" + contract.BundleConfigMap, "-n", app}, true},
		{[]string{"patch", "configmaps/other", "-n", app}, false},
		{[]string{"list", "configmaps", "-n", app}, false},
		{[]string{"get", "configmaps/" + contract.BundleConfigMap, "-n", app}, false},
		{[]string{"delete", "configmaps/" + contract.BundleConfigMap, "-n", app}, false},
		{[]string{"create", "events", "-n", app}, true},
		{[]string{"create", "serviceaccounts/token", "-n", "kube-system"}, false},
		{[]string{"get", "deployments", "-n", app}, true},
		{[]string{"list", "deployments", "-n", app}, false},
		// The tap API's serving certificate: that Secret and that
		// APIService only.
		{[]string{"get", "secrets/" + contract.TapServingSecret, "-n", ns}, true},
		{[]string{"get", "secrets/" + contract.TapServingSecret, "-n", app}, false},
		{[]string{"patch", "apiservices/" + contract.TapAPIService}, true},
		{[]string{"patch", "apiservices/v1.apps"}, false},
		{[]string{"create", "apiservices"}, false},
		{[]string{"delete", "apiservices/" + contract.TapAPIService}, false},
	} {
		if got := canI(tc.args...); got != tc.want {
			t.Errorf("can-i %v = %v, want %v", tc.args, got, tc.want)
		}
	}

	cfg := localcluster.Config(t)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: sa}
	asCA := kubernetes.NewForConfigOrDie(cfg)
	ctx := context.Background()
	attempt := func(s *corev1.Secret, dryRun bool) error {
		o := metav1.CreateOptions{}
		if dryRun {
			o.DryRun = []string{metav1.DryRunAll}
		}
		_, err := asCA.CoreV1().Secrets(s.Namespace).Create(ctx, s, o)
		if err == nil && !dryRun {
			_ = client.CoreV1().Secrets(s.Namespace).Delete(ctx, s.Name, metav1.DeleteOptions{})
		}
		return err
	}
	ours := map[string]string{contract.ControlPlaneNSLabel: ns, contract.OwnerKindLabel: contract.KindDeployment}
	tlsData := map[string][]byte{corev1.TLSCertKey: []byte("x"), corev1.TLSPrivateKeyKey: []byte("y")}
	// The policy takes effect a moment after it is created.
	localcluster.Eventually(t, 30*time.Second, func() error {
		err := attempt(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "opaque", Namespace: "kube-system", Labels: ours},
			Type: corev1.SecretTypeOpaque, Data: map[string][]byte{"k": []byte("v")}}, false)
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			return fmt.Errorf("an Opaque Secret in kube-system as the CA: %v, want refused", err)
		}
		return nil
	})
	for _, tc := range []struct {
		name string
		s    *corev1.Secret
	}{
		{"token Secret", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "steal", Namespace: "kube-system", Labels: ours,
			Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}}, Type: corev1.SecretTypeServiceAccountToken}},
		{"unlabelled TLS Secret", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-tls", Namespace: app}, Type: corev1.SecretTypeTLS, Data: tlsData}},
		{"another control plane's label", &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x-deployment-tls-linkerd-io", Namespace: app,
			Labels: map[string]string{contract.ControlPlaneNSLabel: "other", contract.OwnerKindLabel: contract.KindDeployment}}, Type: corev1.SecretTypeTLS, Data: tlsData}},
	} {
		if err := attempt(tc.s, false); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s as the CA: %v, want refused", tc.name, err)
		} else if err != nil {
			t.Logf("%s refused: %v", tc.name, err)
		}
	}
	// What the CA does write still passes (dry run: admission runs, nothing is kept).
	if err := attempt(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-deployment-tls-linkerd-io", Namespace: app, Labels: ours},
		Type: corev1.SecretTypeTLS, Data: tlsData}, true); err != nil {
		t.Errorf("a workload Secret as the CA writes it: %v", err)
	}
	// M2: an existing TLS Secret that is not the mesh's (an Ingress
	// certificate, one named like a workload Secret) cannot be relabelled
	// and overwritten in one request, by patch or by server-side apply.
	for _, name := range []string{"ingress-tls", "web-deployment" + contract.SecretSuffix} {
		victim, err := client.CoreV1().Secrets(app).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: []byte("real"), corev1.TLSPrivateKeyKey: []byte("real")}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q,%q:%q}},"data":{"tls.key":"YXR0YWNrZXI="}}`,
			contract.ControlPlaneNSLabel, ns, contract.OwnerKindLabel, contract.KindDeployment)
		_, err = asCA.CoreV1().Secrets(app).Patch(ctx, name, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("patch relabelling %s as the CA: %v, want refused", name, err)
		}
		apply := corev1ac.Secret(name, app).WithType(corev1.SecretTypeTLS).WithLabels(ours).
			WithData(map[string][]byte{corev1.TLSCertKey: []byte("attacker"), corev1.TLSPrivateKeyKey: []byte("attacker")})
		_, err = asCA.CoreV1().Secrets(app).Apply(ctx, apply, metav1.ApplyOptions{FieldManager: "linkerd-ca/" + ns, Force: true})
		if !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("server-side apply over %s as the CA: %v, want refused", name, err)
		} else {
			t.Logf("apply over %s refused: %v", name, err)
		}
		got, err := client.CoreV1().Secrets(app).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Data[corev1.TLSPrivateKeyKey]) != "real" || got.ResourceVersion != victim.ResourceVersion {
			t.Errorf("%s was changed by the CA's token", name)
		}
	}
	// A Secret that already is the mesh's stays writable by apply (dry run).
	if _, err := client.CoreV1().Secrets(app).Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "api-deployment" + contract.SecretSuffix, Labels: ours},
		Type: corev1.SecretTypeTLS, Data: tlsData}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := asCA.CoreV1().Secrets(app).Apply(ctx, corev1ac.Secret("api-deployment"+contract.SecretSuffix, app).WithType(corev1.SecretTypeTLS).WithLabels(ours).
		WithData(map[string][]byte{corev1.TLSCertKey: []byte("new"), corev1.TLSPrivateKeyKey: []byte("new")}),
		metav1.ApplyOptions{FieldManager: "linkerd-ca/" + ns, Force: true, DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("renewing a workload Secret as the CA: %v", err)
	}
	// The tap serving Secret is the CA's in the control-plane namespace
	// alone: named so in a tenant's namespace, or untyped, it is refused.
	tapLabels := map[string]string{contract.ControlPlaneNSLabel: ns, contract.ComponentLabel: "tap"}
	// (Applied, dry run: the CA may already have written it.)
	if _, err := asCA.CoreV1().Secrets(ns).Apply(ctx, corev1ac.Secret(contract.TapServingSecret, ns).WithType(corev1.SecretTypeTLS).WithLabels(tapLabels).
		WithData(tlsData), metav1.ApplyOptions{FieldManager: "linkerd-ca/" + ns, Force: true, DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Errorf("the tap serving Secret as the CA writes it: %v", err)
	}
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1.ObjectMeta{Name: contract.TapServingSecret, Namespace: app, Labels: tapLabels}, Type: corev1.SecretTypeTLS, Data: tlsData},
		{ObjectMeta: metav1.ObjectMeta{Name: contract.TapServingSecret, Namespace: ns, Labels: tapLabels}, Type: corev1.SecretTypeOpaque, Data: tlsData},
	} {
		if err := attempt(s, true); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
			t.Errorf("%s Secret %s/%s as the CA: %v, want refused", s.Type, s.Namespace, s.Name, err)
		}
	}
	// A TLS Secret not named like a workload Secret cannot be created either.
	if err := attempt(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "webhook-serving", Namespace: app, Labels: ours},
		Type: corev1.SecretTypeTLS, Data: tlsData}, true); !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
		t.Errorf("a labelled TLS Secret not named *%s as the CA: %v, want refused", contract.SecretSuffix, err)
	}

	_, err := asCA.CoreV1().ConfigMaps(app).Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "other",
		Labels: map[string]string{contract.ControlPlaneNSLabel: ns, contract.BundleLabel: ns}}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsForbidden(err) {
		t.Errorf("a ConfigMap not named %s as the CA: %v, want forbidden", contract.BundleConfigMap, err)
	}
}
