package install

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"regexp"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
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

// m9: install prints no private key unless the user passed one in. The
// tap API's serving key is made in the cluster by the CA, which also sets
// the APIService's caBundle; install leaves it unset and never lets the
// API server skip verification.
func TestInstallPrintsNoPrivateKey(t *testing.T) {
	for _, o := range []Options{
		{Version: "v1", TLS: "optional", ControlNamespace: "mesh"},
		{Version: "v1", TLS: "optional", ControlNamespace: "mesh", ControllerReplicas: 3},
	} {
		out := render(t, o)
		if n := strings.Count(string(out), "PRIVATE KEY"); n != 0 {
			t.Errorf("install output holds %d PRIVATE KEY markers", n)
		}
		docs := tapDocs(t, o)
		// Secret data is base64: decode every value before looking.
		for key, d := range docs {
			if !strings.HasPrefix(key, "Secret/") {
				continue
			}
			data, _ := d["data"].(map[string]any)
			for k, v := range data {
				raw, err := base64.StdEncoding.DecodeString(fmt.Sprint(v))
				if err != nil {
					t.Errorf("%s data %s: %v", key, k, err)
				}
				if k == "tls.key" || bytes.Contains(raw, []byte("PRIVATE KEY")) {
					t.Errorf("install output holds a private key in %s (%s)", key, k)
				}
			}
		}
		if docs["Secret/"+contract.TapServingSecret] != nil {
			t.Error("install prints the tap serving Secret: its key must be made in the cluster")
		}
		api := docs["APIService/"+contract.TapAPIService]
		if api == nil {
			t.Fatal("no APIService v1alpha1.tap.linkerd.io")
		}
		spec := api["spec"].(map[string]any)
		if _, ok := spec["caBundle"]; ok {
			t.Error("install sets the caBundle: the CA sets it from the certificate it makes")
		}
		if spec["insecureSkipTLSVerify"] != false {
			t.Errorf("insecureSkipTLSVerify = %v, want false", spec["insecureSkipTLSVerify"])
		}
		if svc := spec["service"].(map[string]any); svc["name"] != contract.TapComponent || svc["namespace"] != "mesh" {
			t.Errorf("APIService points at %v", svc)
		}
		dep := docs["Deployment/"+contract.TapComponent]
		b, _ := yaml.Marshal(dep)
		if !strings.Contains(string(b), "secretName: "+contract.TapServingSecret) || !strings.Contains(string(b), "optional: true") {
			t.Errorf("the tap Deployment does not mount the CA-written Secret %s optionally", contract.TapServingSecret)
		}
		ca, _ := yaml.Marshal(docs["Deployment/linkerd-ca"])
		if !strings.Contains(string(ca), "--tap-apiservice="+contract.TapAPIService) {
			t.Error("the CA is not told to keep the tap APIService's serving certificate")
		}
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

// m1, M3: every control-plane Deployment that has an identity has its
// own: its pods claim their own Deployment and mount its Secret, so the
// tap API holds the tap identity (the only one proxies' tap ports accept)
// and not the destination service's.
func TestControlPlaneIdentitiesAreTheirOwn(t *testing.T) {
	docs := tapDocs(t, Options{Version: "v1", TLS: "optional", ControlNamespace: "mesh"})
	seen := map[string]bool{}
	for key, d := range docs {
		if !strings.HasPrefix(key, "Deployment/") {
			continue
		}
		var dep appsv1.Deployment
		b, _ := yaml.Marshal(d)
		if err := yaml.Unmarshal(b, &dep); err != nil {
			t.Fatal(err)
		}
		claim := dep.Spec.Template.Labels[contract.KindLabel(contract.KindDeployment)]
		for _, v := range dep.Spec.Template.Spec.Volumes {
			if v.Name == contract.IdentityVolume {
				if want := contract.SecretName(dep.Name, contract.KindDeployment); v.Secret == nil || v.Secret.SecretName != want {
					t.Errorf("%s mounts identity %v, want its own %s", key, v.Secret, want)
				}
				if claim != dep.Name {
					t.Errorf("%s's pods claim the identity of Deployment %q, not their own", key, claim)
				}
				seen[dep.Name] = true
			}
		}
	}
	for _, want := range []string{contract.ControllerComponent, contract.TapComponent} {
		if !seen[want] {
			t.Errorf("Deployment %s has no identity of its own", want)
		}
	}
	if contract.TapIdentity("mesh") == contract.ControllerIdentity(contract.ControllerComponent, "mesh") {
		t.Error("the tap identity is the destination's")
	}
}
