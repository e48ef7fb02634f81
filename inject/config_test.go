package inject

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"

	"meshtls/contract"
)

func deployment(annotations string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata: {name: db, namespace: data}
spec:
  selector: {matchLabels: {app: db}}
  template:
    metadata:
      labels: {app: db}
      annotations: {` + annotations + `}
    spec:
      containers:
      - {name: mysql, image: mysql:8}
`
}

// TestPodConfigAnnotations: inject honours Linkerd's port and resource
// annotations (opaque ports reach the proxy's env, skip ports reach
// proxy-init's flags, resources the proxy container with its cores), puts
// the proxy first with a postStart wait so the app starts after it, keeps
// kubectl's default container on the app, and refuses a bad value with a
// line naming the annotation.
func TestPodConfigAnnotations(t *testing.T) {
	res, err := Inject([]byte(deployment(`config.linkerd.io/opaque-ports: "4000,5000-5001", config.linkerd.io/skip-inbound-ports: "9000", config.linkerd.io/skip-outbound-ports: "3306,6000-6001", config.linkerd.io/proxy-cpu-request: 100m, config.linkerd.io/proxy-cpu-limit: "1500m", config.linkerd.io/proxy-memory-request: 32Mi, config.linkerd.io/proxy-memory-limit: 128Mi`)), "db.yml", testOptions)
	if err != nil {
		t.Fatal(err)
	}
	var dep appsv1.Deployment
	if err := yaml.Unmarshal(res.YAML, &dep); err != nil {
		t.Fatal(err)
	}
	spec := dep.Spec.Template.Spec
	if len(spec.Containers) != 2 || spec.Containers[0].Name != contract.ProxyContainerName || spec.Containers[1].Name != "mysql" {
		t.Fatalf("containers %v, want the proxy first", spec.Containers)
	}
	proxy := spec.Containers[0]
	if ls := proxy.Lifecycle; ls == nil || ls.PostStart == nil || ls.PostStart.Exec == nil || !slices.Equal(ls.PostStart.Exec.Command, contract.ProxyAwaitCommand) {
		t.Errorf("proxy lifecycle %+v, want postStart %v", proxy.Lifecycle, contract.ProxyAwaitCommand)
	}
	if got := dep.Spec.Template.Annotations["kubectl.kubernetes.io/default-container"]; got != "mysql" {
		t.Errorf("default container %q, want mysql", got)
	}
	env := map[string]string{}
	for _, e := range proxy.Env {
		env[e.Name] = e.Value
	}
	if got := env[contract.EnvOpaquePorts]; got != contract.DefaultOpaquePorts+",4000,5000-5001" {
		t.Errorf("%s = %q", contract.EnvOpaquePorts, got)
	}
	if got := env[contract.EnvCores]; got != "2" {
		t.Errorf("%s = %q, want 2 (1500m rounded up)", contract.EnvCores, got)
	}
	want := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1500m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
	}
	for _, l := range []struct{ got, want corev1.ResourceList }{{proxy.Resources.Requests, want.Requests}, {proxy.Resources.Limits, want.Limits}} {
		for name, q := range l.want {
			if g := l.got[name]; g.Cmp(q) != 0 {
				t.Errorf("proxy %s = %s, want %s", name, g.String(), q.String())
			}
		}
	}
	args := strings.Join(spec.InitContainers[0].Args, " ")
	if !strings.Contains(args, "--inbound-ports-to-ignore 4190,4191,9000") || !strings.Contains(args, "--outbound-ports-to-ignore 3306,6000-6001") {
		t.Errorf("proxy-init args %q", args)
	}

	for _, bad := range []string{
		`config.linkerd.io/opaque-ports: "3306,http"`,
		`config.linkerd.io/skip-outbound-ports: "70000"`,
		`config.linkerd.io/proxy-cpu-limit: lots`,
		`config.linkerd.io/proxy-memory-request: 1Gi, config.linkerd.io/proxy-memory-limit: 1Mi`,
	} {
		res, err := Inject([]byte(deployment(bad)), "db.yml", testOptions)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Reports) != 1 || res.Reports[0].Outcome != Skipped || res.Reports[0].Check != checkAnnotations {
			t.Errorf("%s: reports %+v, want the workload refused", bad, res.Reports)
			continue
		}
		key, _, _ := strings.Cut(bad, ":")
		if why := res.Reports[0].Reason; !strings.Contains(why, "config.linkerd.io/proxy-memory") && !strings.Contains(why, key) && !strings.Contains(why, "above its limit") {
			t.Errorf("%s: reason %q does not name the annotation", bad, why)
		}
		if strings.Contains(string(res.YAML), contract.ProxyContainerName) {
			t.Errorf("%s: injected anyway", bad)
		}
	}
}
