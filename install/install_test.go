package install

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"debug/buildinfo"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"meshtls/ca/pki"
	"meshtls/contract"
	"meshtls/internal/golden"
	"meshtls/testutil/needs"
)

var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// fixedRoot is a deterministic-enough user root for the golden file: the
// key is random, so the golden test replaces the PEM with a marker.
func userRoot(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "user root"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err = pki.EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM
}

func render(t *testing.T, o Options) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	golden.Assert(t, "install.golden", render(t, Options{Version: "v0.1.0"}))
	golden.Assert(t, "install_tls.golden", scrubTapServing(render(t, Options{Version: "v0.1.0", TLS: "optional"})))
	golden.Assert(t, "install_tls_ha.golden", scrubTapServing(render(t, Options{
		Version: "v0.1.0", TLS: "optional", ControllerReplicas: 3, ControlNamespace: "mesh",
		Registry: "registry.example/meshtls", PrometheusImage: "registry.example/prometheus:v2.42.0", CertLifetime: time.Hour,
	})))
	// Everything a real cluster may ask for: another registry, a digest,
	// a pull policy, pull secrets and another cluster domain.
	golden.Assert(t, "install_cluster.golden", scrubTapServing(render(t, Options{
		Version: "v0.1.0", TLS: "optional", Registry: "registry.example:5000/meshtls",
		ImageDigests:    map[string]string{"controller": "sha256:1111111111111111111111111111111111111111111111111111111111111111"},
		ImagePullPolicy: "Always", ImagePullSecrets: []string{"regcred", "mirror"}, ClusterDomain: "corp.example",
	})))
}

func documents(t *testing.T, out []byte) map[string]string {
	t.Helper()
	docs := map[string]string{}
	for _, d := range strings.Split(string(out), "\n---\n")[1:] {
		var h struct {
			Kind     string
			Metadata struct{ Name string }
		}
		if err := yaml.Unmarshal([]byte(d), &h); err != nil {
			t.Fatal(err)
		}
		docs[h.Kind+"/"+h.Metadata.Name] = d
	}
	return docs
}

func TestNoCAWithoutTLS(t *testing.T) {
	plain := documents(t, render(t, Options{Version: "v1"}))
	for k := range plain {
		if strings.Contains(k, "linkerd-ca") {
			t.Errorf("install without --tls has %s", k)
		}
	}
	if _, ok := plain["Deployment/linkerd-prometheus"]; !ok {
		t.Error("no Prometheus deployment")
	}
	tls := documents(t, render(t, Options{Version: "v1", TLS: "optional", ControllerReplicas: 2}))
	d, ok := tls["Deployment/linkerd-ca"]
	if !ok {
		t.Fatal("install --tls=optional has no CA deployment")
	}
	var dep appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(d), &dep); err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *dep.Spec.Replicas)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if c.Image != "ghcr.io/meshtls/controller:v1" || c.Args[0] != "ca" {
		t.Errorf("CA container %s %v", c.Image, c.Args)
	}
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/ready" {
		t.Error("CA has no /ready readiness probe")
	}
	if _, ok := tls["Secret/"+contract.RootSecret]; ok {
		t.Error("a generated-root install must not ship a root Secret (the CA creates it)")
	}
}

// The CA must not be able to do more than its job: no wildcard, nothing
// cluster-wide beyond pods, owners, Secrets, its bundle ConfigMap and
// Events; in its own namespace, its root and its Lease. The roles are found
// through the bindings of the CA's ServiceAccount, so a renamed or unbound
// role fails here instead of passing with nothing to check.
func TestCARBACIsLeastPrivilege(t *testing.T) {
	out := render(t, Options{Version: "v1", TLS: "optional"})
	docs := documents(t, out)
	const sa, ns = "linkerd-ca", "linkerd"
	// allowed[scope][group/resource] lists the verbs the CA may hold there.
	allowed := map[string]map[string][]string{
		"ClusterRole": {
			"/pods":                   {"list", "watch"},
			"/replicationcontrollers": {"get"},
			"apps/deployments":        {"get"},
			"apps/statefulsets":       {"get"},
			"apps/daemonsets":         {"get"},
			"apps/replicasets":        {"get"},
			"batch/jobs":              {"get"},
			"batch/cronjobs":          {"get"},
			"/secrets":                {"list", "watch", "create", "patch"},
			"/configmaps":             {"list", "watch", "create", "patch"},
			"/events":                 {"create", "patch"},
		},
		"Role": {
			"/secrets":                   {"get"},
			"/configmaps":                {"get", "create", "patch"},
			"coordination.k8s.io/leases": {"create", "get", "update"},
		},
	}
	// Resources the CA may only reach by name.
	named := map[string][]string{
		"ClusterRole//configmaps": {contract.BundleConfigMap},
		"Role//secrets":           {contract.RootSecret},
		"Role//configmaps":        {contract.AnchorsConfigMap, contract.BundleConfigMap},
	}
	bound := map[string]bool{}
	for key, d := range docs {
		kind, _, _ := strings.Cut(key, "/")
		if kind != "ClusterRoleBinding" && kind != "RoleBinding" {
			continue
		}
		var b rbacv1.RoleBinding // a ClusterRoleBinding has the same fields
		if err := yaml.UnmarshalStrict([]byte(d), &b); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if !slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == "ServiceAccount" && s.Name == sa && s.Namespace == ns
		}) {
			continue
		}
		role := b.RoleRef.Kind + "/" + b.RoleRef.Name
		rd, ok := docs[role]
		if !ok {
			t.Fatalf("%s binds the CA to %s, which install does not ship", key, role)
		}
		if kind == "ClusterRoleBinding" && b.RoleRef.Kind != "ClusterRole" || kind == "RoleBinding" && b.RoleRef.Kind != "Role" {
			t.Errorf("%s refers to a %s: the CA's namespaced grants must stay namespaced", key, b.RoleRef.Kind)
		}
		bound[role] = true
		var r rbacv1.ClusterRole // a Role has the same fields
		if err := yaml.UnmarshalStrict([]byte(rd), &r); err != nil {
			t.Fatalf("%s: %v", role, err)
		}
		if len(r.Rules) == 0 || r.AggregationRule != nil {
			t.Errorf("%s: %d rules, aggregation %v: want explicit rules", role, len(r.Rules), r.AggregationRule)
		}
		for i, rule := range r.Rules {
			if len(rule.NonResourceURLs) > 0 {
				t.Errorf("%s rule %d grants non-resource URLs %v", role, i, rule.NonResourceURLs)
			}
			for _, g := range rule.APIGroups {
				for _, res := range rule.Resources {
					gr := g + "/" + res
					ok, known := allowed[b.RoleRef.Kind][gr]
					if !known {
						t.Errorf("%s rule %d grants %s, which the CA does not need", role, i, gr)
						continue
					}
					for _, v := range rule.Verbs {
						if !slices.Contains(ok, v) {
							t.Errorf("%s rule %d grants %q on %s", role, i, v, gr)
						}
					}
					if want, ok := named[b.RoleRef.Kind+"/"+gr]; ok && (len(rule.ResourceNames) == 0 || slices.ContainsFunc(rule.ResourceNames, func(n string) bool { return !slices.Contains(want, n) })) {
						t.Errorf("%s rule %d: %s by names %v, want only %v", role, i, gr, rule.ResourceNames, want)
					}
				}
			}
		}
	}
	// Both scopes must be bound: a rename that unbinds one is a failure,
	// not a role with nothing left to check.
	if !bound["ClusterRole/linkerd-ca-"+ns] || !bound["Role/linkerd-ca"] || len(bound) != 2 {
		t.Fatalf("the CA's ServiceAccount is bound to %v, want one ClusterRole and one Role", bound)
	}
}

func TestUserRoot(t *testing.T) {
	cert, key := userRoot(t)
	o := Options{Version: "v1", TLS: "optional", RootCertPEM: cert, RootKeyPEM: key, Now: func() time.Time { return t0 }}
	docs := documents(t, render(t, o))
	s, ok := docs["Secret/"+contract.RootSecret]
	if !ok {
		t.Fatal("no root Secret with --root-cert/--root-key")
	}
	if !strings.Contains(s, "type: kubernetes.io/tls") {
		t.Errorf("root Secret is not kubernetes.io/tls:\n%s", s)
	}

	bad := []struct {
		name string
		o    Options
		want string
	}{
		{"cert without key", Options{Version: "v1", TLS: "optional", RootCertPEM: cert}, "go together"},
		{"root without tls", Options{Version: "v1", RootCertPEM: cert, RootKeyPEM: key}, "--tls=optional"},
		{"mismatched", Options{Version: "v1", TLS: "optional", RootCertPEM: cert, RootKeyPEM: []byte("junk"), Now: o.Now}, "supplied root: root key"},
		{"root about to expire", Options{Version: "v1", TLS: "optional", RootCertPEM: cert, RootKeyPEM: key,
			Now: func() time.Time { return t0.Add(365*24*time.Hour - time.Hour) }}, "expires within one certificate lifetime"},
		{"bad tls", Options{Version: "v1", TLS: "required"}, `"optional"`},
		{"bad replicas", Options{Version: "v1", ControllerReplicas: -1}, "replicas"},
		{"bad namespace", Options{Version: "v1", ControlNamespace: "Not_Valid"}, "namespace"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			err := Render(&b, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if b.Len() != 0 {
				t.Error("wrote output despite the error")
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Error("error leaks key material")
			}
		})
	}
}

// promtool is Prometheus's own validator; it must accept the config as is.
// It is bin/promtool (built from install/prometheus): Debian's promtool
// lacks Kubernetes service discovery and so rejects any config that uses it.
func TestPrometheusConfigPassesPromtool(t *testing.T) {
	promtool, err := filepath.Abs(filepath.Join("..", "bin", "promtool"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(promtool); err != nil {
		needs.Missing(t, promtool+" is missing: run `make prometheus` (Debian's promtool lacks Kubernetes service discovery)")
	}
	// It checks the config against the Prometheus install deploys: the
	// module it was built from is the one DefaultPrometheusImage names
	// (TestPrometheusImageMatchesModule).
	bi, err := buildinfo.ReadFile(promtool)
	if err != nil {
		t.Fatalf("%s: %v", promtool, err)
	}
	built := ""
	if bi.Main.Path == "github.com/prometheus/prometheus" {
		built = bi.Main.Version
	}
	for _, d := range bi.Deps {
		if d.Path == "github.com/prometheus/prometheus" {
			built = d.Version
		}
	}
	mod, err := os.ReadFile(filepath.Join("prometheus", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if built == "" || !strings.Contains(string(mod), "github.com/prometheus/prometheus "+built+"\n") {
		t.Fatalf("%s was built from github.com/prometheus/prometheus %q, not the version install/prometheus/go.mod pins: rebuild it with `make prometheus`", promtool, built)
	}
	for _, ns := range []string{"linkerd", "mesh"} {
		path := filepath.Join(t.TempDir(), "prometheus.yml")
		if err := os.WriteFile(path, []byte(PrometheusConfig(ns)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(promtool, "check", "config", path).CombinedOutput()
		if err != nil {
			if strings.Contains(string(out), "kubernetes_sd_configs not found") {
				t.Fatalf("%s was built without Kubernetes service discovery (Debian's is); build bin/promtool with `make prometheus`:\n%s", promtool, out)
			}
			t.Fatalf("%s check config: %v\n%s", promtool, err, out)
		}
	}
	// The same text is what install ships in its ConfigMap.
	if !strings.Contains(string(render(t, Options{Version: "v1"})), "__meta_kubernetes_pod_label_linkerd_io_proxy_(.+)") {
		t.Error("install output lacks the proxy label map")
	}
}

// An intermediate issuer signed by an offline root: the root Secret holds
// the issuer and its key, and the offline root only as ca.crt.
func TestIntermediateIssuer(t *testing.T) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "offline root"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(10 * 365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, _ := x509.ParseCertificate(rootDER)
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	issuerDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "issuer"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(365 * 24 * time.Hour), IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign}, rootCert, &issuerKey.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	issuerKeyPEM, err := pki.EncodeKey(issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	rootPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER})
	issuerPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuerDER})
	now := func() time.Time { return t0 }
	docs := documents(t, render(t, Options{Version: "v1", TLS: "optional", IssuerCertPEM: issuerPEM, IssuerKeyPEM: issuerKeyPEM, TrustAnchorsPEM: rootPEM, Now: now}))
	var s struct {
		Type string
		Data map[string][]byte
	}
	if err := yaml.Unmarshal([]byte(docs["Secret/"+contract.RootSecret]), &s); err != nil {
		t.Fatal(err)
	}
	if s.Type != "kubernetes.io/tls" || string(s.Data["tls.crt"]) != string(issuerPEM) || string(s.Data[contract.RootAnchorsKey]) != string(rootPEM) {
		t.Errorf("root Secret type %q, tls.crt is the issuer: %v, ca.crt is the offline root: %v", s.Type,
			string(s.Data["tls.crt"]) == string(issuerPEM), string(s.Data[contract.RootAnchorsKey]) == string(rootPEM))
	}
	otherCert, _ := userRoot(t)
	for _, tc := range []struct {
		name string
		o    Options
		want string
	}{
		{"issuer without anchors", Options{Version: "v1", TLS: "optional", IssuerCertPEM: issuerPEM, IssuerKeyPEM: issuerKeyPEM, Now: now}, "go together"},
		{"root and issuer", Options{Version: "v1", TLS: "optional", RootCertPEM: rootPEM, RootKeyPEM: issuerKeyPEM, IssuerCertPEM: issuerPEM, IssuerKeyPEM: issuerKeyPEM, TrustAnchorsPEM: rootPEM, Now: now}, "exclude each other"},
		{"wrong anchors", Options{Version: "v1", TLS: "optional", IssuerCertPEM: issuerPEM, IssuerKeyPEM: issuerKeyPEM, TrustAnchorsPEM: otherCert, Now: now}, "not signed by any of the trust anchors"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Render(&bytes.Buffer{}, tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Error("error leaks key material")
			}
		})
	}
}

func TestLifetimeFloorAndHALayout(t *testing.T) {
	err := Render(&bytes.Buffer{}, Options{Version: "v1", TLS: "optional", CertLifetime: 3 * time.Second})
	if err == nil || !strings.Contains(err.Error(), "kubelet") {
		t.Errorf("3s certificates: %v, want a refusal naming the kubelet", err)
	}
	if _, ok := documents(t, render(t, Options{Version: "v1", TLS: "optional"}))["PodDisruptionBudget/linkerd-ca"]; ok {
		t.Error("a single-replica CA has a PodDisruptionBudget")
	}
	ha := documents(t, render(t, Options{Version: "v1", TLS: "optional", ControllerReplicas: 3}))
	if _, ok := ha["PodDisruptionBudget/linkerd-ca"]; !ok {
		t.Error("the HA layout has no PodDisruptionBudget for the CA")
	}
	for _, name := range []string{"Deployment/linkerd-ca", "Deployment/linkerd-prometheus"} {
		var dep appsv1.Deployment
		if err := yaml.UnmarshalStrict([]byte(ha[name]), &dep); err != nil {
			t.Fatal(err)
		}
		c := dep.Spec.Template.Spec.Containers[0]
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("%s has no resource requests", name)
		}
	}
}

// The Prometheus install deploys is the one the tests run: the release of
// the module install/prometheus/go.mod pins (module v0.XYY.Z is
// Prometheus X.Y.Z, as Prometheus tags its Go module).
func TestPrometheusImageMatchesModule(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("prometheus", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/prometheus/prometheus v0\.(\d+)\.(\d+)\s*$`).FindStringSubmatch(string(data))
	if m == nil {
		t.Fatal("install/prometheus/go.mod pins no github.com/prometheus/prometheus v0.X.Y")
	}
	minor, _ := strconv.Atoi(m[1])
	want := fmt.Sprintf("prom/prometheus:v%d.%d.%s", minor/100, minor%100, m[2])
	if DefaultPrometheusImage != want {
		t.Errorf("install deploys %s but the tests run %s (module v0.%s.%s): set DefaultPrometheusImage to %s", DefaultPrometheusImage, want, m[1], m[2], want)
	}
	if out := render(t, Options{Version: "v1"}); !strings.Contains(string(out), "image: "+want+"\n") {
		t.Errorf("install output does not reference %s", want)
	}
}
