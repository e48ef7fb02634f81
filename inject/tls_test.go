package inject

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"meshtls/contract"
)

// podTemplates decodes the injected output's pod templates by workload
// name.
func podTemplates(t *testing.T, out []byte) map[string]corev1.PodTemplateSpec {
	t.Helper()
	got := map[string]corev1.PodTemplateSpec{}
	for _, d := range splitDocuments(out) {
		var obj struct {
			Kind     string
			Metadata struct{ Name string }
			Spec     struct{ Template corev1.PodTemplateSpec }
		}
		if err := yaml.Unmarshal(d.text, &obj); err != nil {
			t.Fatal(err)
		}
		if obj.Kind == "Deployment" {
			got[obj.Metadata.Name] = obj.Spec.Template
		}
	}
	return got
}

func proxyEnv(t *testing.T, tmpl corev1.PodTemplateSpec) map[string]string {
	t.Helper()
	for _, c := range tmpl.Spec.Containers {
		if c.Name == contract.ProxyContainerName {
			env := map[string]string{}
			for _, e := range c.Env {
				env[e.Name] = e.Value
			}
			return env
		}
	}
	t.Fatal("no proxy container")
	return nil
}

const requiredInput = `
apiVersion: v1
kind: Namespace
metadata:
  name: strict
  annotations:
    linkerd.io/tls: required
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: strict}
spec:
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        ports: [{name: http, containerPort: 8080}, {containerPort: 9090}]
        livenessProbe: {httpGet: {path: /live, port: http}}
        readinessProbe: {httpGet: {path: "/ready?full=1", port: 9090}}
        startupProbe: {tcpSocket: {port: 8080}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: relaxed, namespace: strict}
spec:
  template:
    metadata:
      annotations: {linkerd.io/tls: optional}
    spec:
      containers: [{name: relaxed}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: elsewhere, namespace: other}
spec:
  template:
    metadata:
      annotations: {config.linkerd.io/tls-exempt-ports: "9000, 9100-9102"}
    spec:
      containers: [{name: elsewhere}]
`

func TestRequiredModes(t *testing.T) {
	for _, flag := range []string{"", "optional", "required"} {
		o := testOptions
		o.TLS = flag
		res, err := Inject([]byte(requiredInput), "in", o)
		if err != nil {
			t.Fatal(err)
		}
		tm := podTemplates(t, res.YAML)
		// The namespace's default, whatever the flag.
		web := tm["web"]
		if got := web.Annotations[contract.TLSAnnotation]; got != "required" {
			t.Errorf("--tls=%q: web tls = %q, want the namespace's required", flag, got)
		}
		env := proxyEnv(t, web)
		if env[contract.EnvInboundTLS] != "required" {
			t.Errorf("--tls=%q: web %s = %q", flag, contract.EnvInboundTLS, env[contract.EnvInboundTLS])
		}
		if env[contract.EnvTLSCert] == "" {
			t.Errorf("--tls=%q: required web has no certificate env: required implies optional", flag)
		}
		if got, want := env[contract.EnvInboundProbes], "8080:/live 9090:/ready"; got != want {
			t.Errorf("--tls=%q: probes = %q, want %q (named port resolved, query dropped, tcp probe not listed)", flag, got, want)
		}
		// The pod's own annotation wins over the namespace's.
		relaxed := podTemplates(t, res.YAML)["relaxed"]
		if got := relaxed.Annotations[contract.TLSAnnotation]; got != "optional" {
			t.Errorf("--tls=%q: relaxed tls = %q, want its own optional", flag, got)
		}
		if e := proxyEnv(t, relaxed); e[contract.EnvInboundTLS] != "" || e[contract.EnvTLSCert] == "" {
			t.Errorf("--tls=%q: relaxed env %v: want TLS without enforcement", flag, e)
		}
		// No annotation anywhere: the flag decides.
		other := tm["elsewhere"]
		if got := other.Annotations[contract.TLSAnnotation]; got != flag {
			t.Errorf("--tls=%q: elsewhere tls = %q", flag, got)
		}
		oe := proxyEnv(t, other)
		if flag == "required" {
			if oe[contract.EnvInboundTLSExemptPorts] != "9000,9100-9102" || oe[contract.EnvInboundTLS] != "required" {
				t.Errorf("--tls=required: elsewhere env %v", oe)
			}
		} else if oe[contract.EnvInboundTLS] != "" || oe[contract.EnvInboundTLSExemptPorts] != "" {
			t.Errorf("--tls=%q: elsewhere is not required but has %v", flag, oe)
		}

		// Injecting again keeps the modes: inject's own annotation does
		// not pin the pod, the namespace and the flag decide again.
		again, err := Inject(res.YAML, "again", o)
		if err != nil {
			t.Fatal(err)
		}
		if string(again.YAML) != string(res.YAML) {
			t.Errorf("--tls=%q: second injection changed the output", flag)
		}
	}
}

func TestRequiredReinjectFollowsFlag(t *testing.T) {
	o := testOptions
	o.TLS = "optional"
	in := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {template: {spec: {containers: [{name: a}]}}}\n"
	res, err := Inject([]byte(in), "in", o)
	if err != nil {
		t.Fatal(err)
	}
	o.TLS = "required"
	res, err = Inject(res.YAML, "in", o)
	if err != nil {
		t.Fatal(err)
	}
	if got := podTemplates(t, res.YAML)["a"].Annotations[contract.TLSAnnotation]; got != "required" {
		t.Fatalf("re-injected with --tls=required: tls = %q", got)
	}
}

func TestRequiredBadInput(t *testing.T) {
	o := testOptions
	for _, tc := range []struct{ in, want string }{
		{"kind: Namespace\nmetadata: {name: shop, annotations: {linkerd.io/tls: strict}}\n", `namespace shop: annotation linkerd.io/tls: "strict"`},
	} {
		if _, err := Inject([]byte(tc.in), "in", o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.in, err, tc.want)
		}
	}
	// A bad pod annotation or exempt port skips that workload, clearly.
	for _, ann := range []string{"linkerd.io/tls: strict", `config.linkerd.io/tls-exempt-ports: "http"`} {
		in := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {template: {metadata: {annotations: {" + ann + "}}, spec: {containers: [{name: a}]}}}\n"
		res, err := Inject([]byte(in), "in", o)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Reports) != 1 || res.Reports[0].Outcome != Skipped || res.Reports[0].Check != checkAnnotations {
			t.Errorf("%s: reports %+v, want skipped for its annotation", ann, res.Reports)
		}
	}
	// Required without a name: no identity, so not injected at all.
	o.TLS = "required"
	res, err := Inject([]byte("kind: Pod\nmetadata: {generateName: w-}\nspec: {containers: [{name: a}]}\n"), "in", o)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Reports) != 1 || res.Reports[0].Outcome != Skipped || !strings.Contains(res.Reports[0].Reason, "required") {
		t.Errorf("generateName pod: reports %+v, want skipped naming required", res.Reports)
	}
	if strings.Contains(string(res.YAML), contract.ProxyContainerName) {
		t.Error("generateName pod was injected")
	}
}
