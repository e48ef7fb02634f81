package inject

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"meshtls/contract"
	"meshtls/internal/golden"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var testOptions = Options{Version: "v0.1.0", Registry: "ghcr.io/meshtls"}

func injectFile(t *testing.T, name string, o Options) *Result {
	t.Helper()
	in, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	res, err := Inject(in, name, o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func report(res ...*Result) []byte {
	var b bytes.Buffer
	WriteReport(&b, res)
	return b.Bytes()
}

func TestGolden(t *testing.T) {
	tlsOpts := testOptions
	tlsOpts.TLS = "optional"
	// Everything a real cluster may ask for: another registry, digests,
	// a pull policy, pull secrets and another cluster domain.
	clusterOpts := tlsOpts
	clusterOpts.Registry = "registry.example:5000/meshtls"
	clusterOpts.ImageDigests = map[string]string{
		"proxy":      "sha256:2222222222222222222222222222222222222222222222222222222222222222",
		"proxy-init": "sha256:3333333333333333333333333333333333333333333333333333333333333333",
	}
	clusterOpts.ImagePullPolicy = "Always"
	clusterOpts.ImagePullSecrets = []string{"regcred"}
	clusterOpts.ClusterDomain = "corp.example"
	for _, tc := range []struct {
		input, golden string
		o             Options
	}{
		{"emojivoto.yml", "emojivoto_tls.golden", tlsOpts},
		{"emojivoto.yml", "emojivoto.golden", testOptions},
		{"kinds.yaml", "kinds_tls.golden", tlsOpts},
		{"emojivoto.yml", "emojivoto_cluster.golden", clusterOpts},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			res := injectFile(t, tc.input, tc.o)
			golden.Assert(t, tc.golden, res.YAML)
			golden.Assert(t, strings.TrimSuffix(tc.golden, ".golden")+"_report.golden", report(res))
		})
	}
}

// decodeAll turns injected output back into typed objects to check the
// contract field by field, independently of the golden files.
func decodeAll(t *testing.T, out []byte) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, d := range splitDocuments(out) {
		var m map[string]any
		if err := yaml.Unmarshal(d.text, &m); err != nil {
			t.Fatalf("output document %d: %v", d.index, err)
		}
		objs = append(objs, m)
	}
	return objs
}

func TestEmojivotoContract(t *testing.T) {
	o := testOptions
	o.TLS = "optional"
	res := injectFile(t, "emojivoto.yml", o)
	var deployments int
	for _, d := range splitDocuments(res.YAML) {
		var probe struct{ Kind string }
		if err := yaml.Unmarshal(d.text, &probe); err != nil {
			t.Fatal(err)
		}
		if probe.Kind != "Deployment" {
			continue
		}
		deployments++
		var dep appsv1.Deployment
		if err := yaml.UnmarshalStrict(d.text, &dep); err != nil {
			t.Fatalf("deployment does not decode strictly: %v", err)
		}
		tmpl := dep.Spec.Template
		if got := tmpl.Labels["linkerd.io/proxy-deployment"]; got != dep.Name {
			t.Errorf("%s: linkerd.io/proxy-deployment = %q", dep.Name, got)
		}
		if got := tmpl.Labels["linkerd.io/control-plane-ns"]; got != "linkerd" {
			t.Errorf("%s: control-plane-ns = %q", dep.Name, got)
		}
		if tmpl.Annotations["linkerd.io/tls"] != "optional" || tmpl.Annotations["linkerd.io/proxy-version"] != "v0.1.0" {
			t.Errorf("%s: annotations %v", dep.Name, tmpl.Annotations)
		}
		var proxy *corev1.Container
		for i := range tmpl.Spec.Containers {
			if tmpl.Spec.Containers[i].Name == contract.ProxyContainerName {
				proxy = &tmpl.Spec.Containers[i]
			}
		}
		if proxy == nil {
			t.Fatalf("%s: no %s container", dep.Name, contract.ProxyContainerName)
		}
		if proxy.Image != "ghcr.io/meshtls/proxy:v0.1.0" {
			t.Errorf("proxy image %q", proxy.Image)
		}
		ports := map[string]int32{}
		for _, p := range proxy.Ports {
			ports[p.Name] = p.ContainerPort
		}
		if ports["linkerd-proxy"] != 4143 || ports["linkerd-admin"] != 4191 || ports["linkerd-tap"] != 4190 {
			t.Errorf("proxy ports %v", ports)
		}
		env := map[string]string{}
		for _, e := range proxy.Env {
			env[e.Name] = e.Value
		}
		wantID := dep.Name + ".deployment.$(LINKERD2_PROXY_POD_NAMESPACE).linkerd-managed.linkerd.svc.cluster.local"
		if env[contract.EnvTLSPodIdentity] != wantID {
			t.Errorf("%s = %q, want %q", contract.EnvTLSPodIdentity, env[contract.EnvTLSPodIdentity], wantID)
		}
		if env[contract.EnvTLSCert] != "/var/linkerd-io/identity/tls.crt" || env[contract.EnvTLSPrivateKey] != "/var/linkerd-io/identity/tls.key" ||
			env[contract.EnvTLSTrustAnchors] != "/var/linkerd-io/trust-anchors/trust-anchors.pem" {
			t.Errorf("TLS paths: %v", env)
		}
		if env[contract.EnvTLSControllerID] != "linkerd-controller.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local" {
			t.Errorf("controller identity %q", env[contract.EnvTLSControllerID])
		}
		var secretVol, bundleVol *corev1.Volume
		for i, v := range tmpl.Spec.Volumes {
			switch v.Name {
			case contract.IdentityVolume:
				secretVol = &tmpl.Spec.Volumes[i]
			case contract.TrustAnchorsVolume:
				bundleVol = &tmpl.Spec.Volumes[i]
			}
		}
		if secretVol == nil || secretVol.Secret == nil || secretVol.Secret.SecretName != dep.Name+"-deployment-tls-linkerd-io" ||
			secretVol.Secret.Optional == nil || !*secretVol.Secret.Optional {
			t.Errorf("%s: secret volume %+v", dep.Name, secretVol)
		}
		if bundleVol == nil || bundleVol.ConfigMap == nil || bundleVol.ConfigMap.Name != "linkerd-ca-bundle" ||
			bundleVol.ConfigMap.Optional == nil || !*bundleVol.ConfigMap.Optional {
			t.Errorf("%s: bundle volume %+v", dep.Name, bundleVol)
		}
		if len(tmpl.Spec.InitContainers) != 1 || tmpl.Spec.InitContainers[0].Name != contract.InitContainerName ||
			!strings.HasSuffix(strings.SplitN(tmpl.Spec.InitContainers[0].Image, ":", 2)[0], "/proxy-init") {
			t.Errorf("%s: init containers %+v", dep.Name, tmpl.Spec.InitContainers)
		}
	}
	if deployments != 4 {
		t.Errorf("found %d deployments, want emoji, voting, web, vote-bot", deployments)
	}
	if res.Documents != 11 || res.InjectedDocuments != 4 {
		t.Errorf("documents %d injected %d, want 11 and 4", res.Documents, res.InjectedDocuments)
	}
}

func TestIdempotent(t *testing.T) {
	for _, tls := range []string{"", "optional"} {
		for _, in := range []string{"emojivoto.yml", "kinds.yaml"} {
			o := testOptions
			o.TLS = tls
			once := injectFile(t, in, o)
			twice, err := Inject(once.YAML, "once", o)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(once.YAML, twice.YAML) {
				t.Errorf("%s tls=%q: second injection changed the output:\n%s", in, tls, golden.FirstDiff(twice.YAML, once.YAML))
			}
		}
	}
	// Re-injecting without TLS removes the TLS parts rather than stacking.
	o := testOptions
	o.TLS = "optional"
	withTLS := injectFile(t, "emojivoto.yml", o)
	plain, err := Inject(withTLS.YAML, "tls", testOptions)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(plain.YAML, []byte("linkerd.io/tls")) || bytes.Contains(plain.YAML, []byte(contract.IdentityVolume)) {
		t.Error("re-inject without --tls kept TLS parts")
	}
	proxies := 0
	for _, d := range splitDocuments(plain.YAML) {
		var dep appsv1.Deployment
		if err := yaml.Unmarshal(d.text, &dep); err != nil {
			t.Fatal(err)
		}
		for _, c := range dep.Spec.Template.Spec.Containers {
			if c.Name == contract.ProxyContainerName {
				proxies++
			}
		}
	}
	if proxies != 4 {
		t.Errorf("found %d proxy containers after re-inject, want 4", proxies)
	}
}

func TestKindsAndSkips(t *testing.T) {
	o := testOptions
	o.TLS = "optional"
	res := injectFile(t, "kinds.yaml", o)
	got := map[string]Report{}
	noted := map[string]Report{}
	for _, r := range res.Reports {
		if r.Outcome == Noted {
			noted[r.Kind+"/"+r.Name] = r
			continue
		}
		got[r.Kind+"/"+r.Name] = r
	}
	for _, name := range []string{"statefulset/db", "daemonset/agent", "replicaset/cache", "replicationcontroller/legacy", "pod/solo", "deployment/listed", "job/migrate", "cronjob/nightly"} {
		if r, ok := got[name]; !ok || r.Outcome != Injected {
			t.Errorf("%s: %+v, want injected", name, r)
		}
	}
	for _, name := range []string{"job/migrate", "cronjob/nightly"} {
		if r := noted[name]; r.Check != checkJob {
			t.Errorf("%s: no caveat that the proxy outlives the job (%+v)", name, r)
		}
	}
	for name, check := range map[string]string{"daemonset/node-exporter": checkHostNetwork, "deployment/coredns": checkKubeSystem, "deployment/opted-out": checkDisabled,
		"deployment/istioed": checkSidecar} {
		if r := got[name]; r.Outcome != Skipped || r.Check != check {
			t.Errorf("%s: %+v, want skipped by %s", name, r, check)
		}
	}
	if r := got["pod/worker-"]; r.Outcome != Injected || r.Check != checkTLS {
		t.Errorf("generateName pod: %+v, want injected without TLS", r)
	}
	out := string(res.YAML)
	if !strings.Contains(out, "futureField:\n") || !strings.Contains(out, "keep: me") {
		t.Error("unknown field futureField was dropped")
	}
	if !strings.Contains(out, `big: "12345678901234567890"`) {
		t.Error("string data changed")
	}
	if !strings.Contains(out, "solo-pod-tls-linkerd-io") {
		t.Error("bare pod has no Secret volume named after itself")
	}
	// A CronJob's pods are named after the CronJob, which outlives each
	// Job it starts; the CA owns their Secret by the same kind.
	for _, want := range []string{"linkerd.io/proxy-cronjob: nightly", "nightly-cronjob-tls-linkerd-io", "linkerd.io/proxy-job: migrate", "migrate-job-tls-linkerd-io"} {
		if !strings.Contains(out, want) {
			t.Errorf("injected output lacks %q", want)
		}
	}
	rep := string(report(res))
	for _, want := range []string{
		"hostNetwork: pods do not use host networking" + strings.Repeat(".", reportWidth-len("hostNetwork: pods do not use host networking")) + "[warn]",
		`  -- daemonset/node-exporter uses "hostNetwork: true"`,
		"  -- deployment/coredns is in the kube-system namespace",
		"  -- deployment/istioed already has Istio's istio-proxy; not injected",
		"Summary: 9 of 13 YAML documents injected",
	} {
		if !strings.Contains(rep, want) {
			t.Errorf("report lacks %q:\n%s", want, rep)
		}
	}
	// Skipped objects come out exactly as they went in.
	for _, obj := range decodeAll(t, res.YAML) {
		md, _ := obj["metadata"].(map[string]any)
		if md["name"] == "node-exporter" && strings.Contains(mustYAML(t, obj), "linkerd") {
			t.Error("skipped hostNetwork DaemonSet was modified")
		}
	}
}

func mustYAML(t *testing.T, v any) string {
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestInvalidYAMLNamesDocumentAndLine(t *testing.T) {
	in := "apiVersion: v1\nkind: Service\nmetadata:\n  name: ok\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [broken\n"
	_, err := Inject([]byte(in), "app.yml", testOptions)
	if err == nil {
		t.Fatal("no error for invalid YAML")
	}
	msg := err.Error()
	if !strings.Contains(msg, "app.yml: document 2, line ") || strings.Contains(msg, "\n") {
		t.Fatalf("error %q should name the file and document 2 on one line", msg)
	}
	in2 := "kind: Pod\nmetadata:\n  name: a\n  labels: x: y\n"
	_, err = Inject([]byte(in2), "-", testOptions)
	if err == nil || !strings.Contains(err.Error(), "document 1, line 4:") {
		t.Fatalf("error = %v, want document 1, line 4", err)
	}
	for _, bad := range []string{"just a string\n", "- a\n- b\n", "metadata: {name: x}\n"} {
		if _, err := Inject([]byte(bad), "x", testOptions); err == nil || !strings.Contains(err.Error(), "document 1") {
			t.Errorf("input %q: error %v, want one naming document 1", bad, err)
		}
	}
}

func TestBadOptions(t *testing.T) {
	o := testOptions
	o.TLS = "strict"
	if _, err := Inject([]byte("kind: Pod\n"), "x", o); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("err = %v", err)
	}
}

// Large inputs must stay fast: inject runs in CI pipelines over big
// manifests. This also guards against accidental quadratic behaviour.
func BenchmarkInjectEmojivoto(b *testing.B) {
	in, err := os.ReadFile("testdata/emojivoto.yml")
	if err != nil {
		b.Fatal(err)
	}
	o := testOptions
	o.TLS = "optional"
	for b.Loop() {
		if _, err := Inject(in, "emojivoto.yml", o); err != nil {
			b.Fatal(err)
		}
	}
}

// `kubectl get deploy -o json | linkerd inject -` hands inject a JSON List.
func TestJSONListInput(t *testing.T) {
	in := `{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"apps/v1","kind":"Deployment",
	"metadata":{"name":"web","namespace":"shop","resourceVersion":"12345678901234567"},
	"spec":{"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},
	"spec":{"containers":[{"name":"web","image":"example/web:1"}]}}}}]}`
	o := testOptions
	o.TLS = "optional"
	res, err := Inject([]byte(in), "stdin", o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reports) != 1 || res.Reports[0].Outcome != Injected || res.Reports[0].Name != "web" {
		t.Fatalf("reports %+v", res.Reports)
	}
	out := string(res.YAML)
	if !strings.Contains(out, "web-deployment-tls-linkerd-io") || !strings.Contains(out, `resourceVersion: "12345678901234567"`) {
		t.Errorf("JSON list not injected faithfully:\n%s", out)
	}
}

// m7: the injected containers carry Linkerd's hardening, and the identity
// key is not readable by every user in the pod.
func TestInjectedContainersAreHardened(t *testing.T) {
	o := testOptions
	o.TLS = "optional"
	res := injectFile(t, "emojivoto.yml", o)
	checked := 0
	for _, d := range splitDocuments(res.YAML) {
		var dep appsv1.Deployment
		if err := yaml.Unmarshal(d.text, &dep); err != nil || dep.Kind != "Deployment" {
			continue
		}
		spec := dep.Spec.Template.Spec
		find := func(list []corev1.Container, name string) *corev1.Container {
			for i := range list {
				if list[i].Name == name {
					return &list[i]
				}
			}
			t.Fatalf("%s: no container %s", dep.Name, name)
			return nil
		}
		for _, c := range []struct {
			c   *corev1.Container
			add []corev1.Capability
		}{{find(spec.Containers, contract.ProxyContainerName), nil}, {find(spec.InitContainers, contract.InitContainerName), []corev1.Capability{"NET_ADMIN", "NET_RAW"}}} {
			sc := c.c.SecurityContext
			switch {
			case sc == nil:
				t.Fatalf("%s/%s: no securityContext", dep.Name, c.c.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s/%s: allowPrivilegeEscalation not false", dep.Name, c.c.Name)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s/%s: root filesystem not read-only", dep.Name, c.c.Name)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(sc.Capabilities.Add, c.add):
				t.Errorf("%s/%s: capabilities %+v, want drop ALL, add %v", dep.Name, c.c.Name, sc.Capabilities, c.add)
			case sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
				t.Errorf("%s/%s: seccompProfile %+v", dep.Name, c.c.Name, sc.SeccompProfile)
			case sc.Privileged != nil && *sc.Privileged:
				t.Errorf("%s/%s: privileged", dep.Name, c.c.Name)
			}
		}
		proxy := find(spec.Containers, contract.ProxyContainerName)
		if sc := proxy.SecurityContext; sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != contract.ProxyUID {
			t.Errorf("%s: proxy runs as %v (nonRoot %v), want uid %d", dep.Name, sc.RunAsUser, sc.RunAsNonRoot, contract.ProxyUID)
		}
		for _, v := range spec.Volumes {
			if v.Name == contract.IdentityVolume {
				if v.Secret == nil || v.Secret.DefaultMode == nil || *v.Secret.DefaultMode&0o007 != 0 {
					t.Errorf("%s: identity volume %+v: the key is world-readable", dep.Name, v.Secret)
				}
				checked++
			}
		}
	}
	if checked == 0 {
		t.Fatal("no injected Deployment with an identity volume was checked")
	}
}
