package install

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"meshtls/contract"
)

// The tap API's serving certificate is generated at each install, so the
// golden files hold a marker in its place.
var tapServingRe = regexp.MustCompile(`(?m)^(  (?:caBundle|tls\.crt|tls\.key): )\S+$`)

func scrubTapServing(b []byte) []byte {
	return tapServingRe.ReplaceAll(b, []byte("${1}<generated>"))
}

func tapDocs(t *testing.T, o Options) map[string]map[string]any {
	t.Helper()
	out := render(t, o)
	docs := map[string]map[string]any{}
	for _, d := range bytes.Split(out, []byte("\n---\n"))[1:] {
		var m map[string]any
		if err := yaml.Unmarshal(d, &m); err != nil {
			t.Fatal(err)
		}
		md, _ := m["metadata"].(map[string]any)
		docs[m["kind"].(string)+"/"+md["name"].(string)] = m
	}
	return docs
}

// The APIService's caBundle verifies the serving certificate for the
// name the API server dials (the Service's DNS name).
func TestTapServingCertMatchesCABundle(t *testing.T) {
	for _, domain := range []string{"", "corp.example"} {
		t.Run("domain="+domain, func(t *testing.T) { testTapServingCert(t, domain) })
	}
}

func testTapServingCert(t *testing.T, domain string) {
	docs := tapDocs(t, Options{Version: "v1", TLS: "optional", ControlNamespace: "mesh", ClusterDomain: domain})
	api := docs["APIService/"+contract.TapAPIService]
	if api == nil {
		t.Fatal("no APIService v1alpha1.tap.linkerd.io")
	}
	spec := api["spec"].(map[string]any)
	bundle, err := base64.StdEncoding.DecodeString(spec["caBundle"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if svc := spec["service"].(map[string]any); svc["name"] != contract.TapComponent || svc["namespace"] != "mesh" {
		t.Errorf("APIService points at %v", svc)
	}
	sec := docs["Secret/"+contract.TapServingSecret]
	data := sec["data"].(map[string]any)
	crtPEM, _ := base64.StdEncoding.DecodeString(data["tls.crt"].(string))
	blk, _ := pem.Decode(crtPEM)
	if blk == nil {
		t.Fatal("no certificate in the serving Secret")
	}
	crt, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		t.Fatal("caBundle holds no certificate")
	}
	if _, err := crt.Verify(x509.VerifyOptions{DNSName: "linkerd-tap.mesh.svc", Roots: pool}); err != nil {
		t.Errorf("serving certificate does not verify against the caBundle: %v", err)
	}
	// The fully qualified name is in the cluster's domain, and only there.
	if domain == "" {
		domain = contract.DefaultClusterDomain
	}
	if _, err := crt.Verify(x509.VerifyOptions{DNSName: "linkerd-tap.mesh.svc." + domain, Roots: pool}); err != nil {
		t.Errorf("serving certificate does not verify for linkerd-tap.mesh.svc.%s: %v", domain, err)
	}
	if domain != contract.DefaultClusterDomain {
		if _, err := crt.Verify(x509.VerifyOptions{DNSName: "linkerd-tap.mesh.svc." + contract.DefaultClusterDomain, Roots: pool}); err == nil {
			t.Errorf("in cluster domain %s the serving certificate still names %s", domain, contract.DefaultClusterDomain)
		}
	}
	// m9: the serving certificate is a leaf: its key, which the output
	// carries, can sign nothing the caBundle accepts.
	if crt.IsCA || crt.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Error("the tap serving certificate is a CA: a leaked serving key could sign what the caBundle accepts")
	}
	if string(bundle) == string(crtPEM) {
		t.Error("the caBundle is the serving certificate itself")
	}
}

// The tap API reads what it resolves and creates SubjectAccessReviews:
// no writes, no Secrets.
func TestTapRBACIsLeastPrivilege(t *testing.T) {
	docs := tapDocs(t, Options{Version: "v1", TLS: "optional"})
	cr := docs["ClusterRole/linkerd-tap-linkerd"]
	if cr == nil {
		t.Fatal("no ClusterRole linkerd-tap-linkerd")
	}
	b, _ := yaml.Marshal(cr["rules"])
	rules := string(b)
	for _, bad := range []string{"secrets", "update", "patch", "delete", "'*'"} {
		if strings.Contains(rules, bad) {
			t.Errorf("tap ClusterRole mentions %s:\n%s", bad, rules)
		}
	}
	// watch only on pods: the cache that names peer pods in events.
	for _, r := range cr["rules"].([]any) {
		rule := r.(map[string]any)
		rb, _ := yaml.Marshal(rule)
		if strings.Contains(string(rb), "watch") && fmt.Sprint(rule["resources"]) != "[pods]" {
			t.Errorf("tap ClusterRole watches more than pods:\n%s", rules)
		}
	}
	if !strings.Contains(rules, "subjectaccessreviews") {
		t.Errorf("tap ClusterRole cannot create SubjectAccessReviews:\n%s", rules)
	}
	rb := docs["RoleBinding/linkerd-tap-linkerd-auth-reader"]
	if rb == nil || rb["metadata"].(map[string]any)["namespace"] != "kube-system" ||
		rb["roleRef"].(map[string]any)["name"] != "extension-apiserver-authentication-reader" {
		t.Errorf("no binding to extension-apiserver-authentication-reader in kube-system: %v", rb)
	}
	view := docs["ClusterRole/"+contract.TapViewClusterRole("linkerd")]
	if view == nil {
		t.Fatal("no tap-view ClusterRole for users")
	}
	b, _ = yaml.Marshal(view["rules"])
	if s := string(b); !strings.Contains(s, "tap.linkerd.io") || !strings.Contains(s, "- deployments/tap") || !strings.Contains(s, "- watch") || strings.Contains(s, "- get") {
		t.Errorf("tap-view rules:\n%s", s)
	}
}

func TestNoTapWithoutTLS(t *testing.T) {
	docs := tapDocs(t, Options{Version: "v1"})
	if docs["APIService/"+contract.TapAPIService] != nil || docs["Deployment/"+contract.TapComponent] != nil {
		t.Error("tap API installed without --tls: proxies would refuse it")
	}
}
