package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	digestController = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	digestProxy      = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	digestInit       = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

func writeDigests(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "digests.json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// Each bad value is one line naming the flag, and exit 2, before anything
// reaches stdout.
func TestImageFlagsBadValues(t *testing.T) {
	good := writeDigests(t, `{"version":"v9","images":{"controller":"`+digestController+`","proxy":"`+digestProxy+`","proxy-init":"`+digestInit+`"}}`)
	other := writeDigests(t, `{"version":"v8","images":{"controller":"`+digestController+`"}}`)
	noInit := writeDigests(t, `{"version":"v9","images":{"proxy":"`+digestProxy+`"}}`)
	badDigest := writeDigests(t, `{"version":"v9","images":{"controller":"sha256:xyz"}}`)
	junk := writeDigests(t, `not json`)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"install", "--version", "v9", "--image-pull-policy", "Sometimes"}, `invalid --image-pull-policy "Sometimes": want Always, IfNotPresent or Never`},
		{[]string{"install", "--version", "v9", "--image-pull-policy", "always"}, `invalid --image-pull-policy "always"`},
		{[]string{"install", "--version", "v9", "--registry", "https://ghcr.io/x"}, `invalid --registry "https://ghcr.io/x"`},
		{[]string{"install", "--version", "v9", "--registry", "ghcr.io/x/"}, `invalid --registry "ghcr.io/x/"`},
		{[]string{"install", "--version", "v9", "--registry", "ghcr.io/X"}, `invalid --registry "ghcr.io/X"`},
		{[]string{"install", "--version", "v9", "--registry", ""}, `invalid --registry ""`},
		{[]string{"install", "--version", "v1 ; rm"}, `invalid --version "v1 ; rm"`},
		{[]string{"install", "--version", ""}, `empty --version`},
		{[]string{"install", "--version", "v9", "--image-pull-secret", "Bad_Name"}, `invalid --image-pull-secret "Bad_Name"`},
		{[]string{"install", "--version", "v9", "--cluster-domain", "cluster.local."}, `invalid --cluster-domain "cluster.local."`},
		{[]string{"install", "--version", "v9", "--cluster-domain", ""}, `invalid --cluster-domain ""`},
		{[]string{"install", "--version", "v9", "--cluster-domain", "a b"}, `invalid --cluster-domain "a b"`},
		{[]string{"install", "--version", "v9", "--image-digests", filepath.Join(t.TempDir(), "none.json")}, `cannot read --image-digests`},
		{[]string{"install", "--version", "v9", "--image-digests", junk}, `is not a digest file`},
		{[]string{"install", "--version", "v9", "--image-digests", other}, `holds version "v8", not "v9"`},
		{[]string{"install", "--version", "v9", "--image-digests", badDigest}, `has digest "sha256:xyz"`},
		{[]string{"inject", "--proxy-version", "v9", "--image-digests", noInit, "-"}, `no digest for image "proxy-init"`},
		{[]string{"inject", "--proxy-version", "v9", "--image-pull-policy", "Nope", "-"}, `invalid --image-pull-policy "Nope"`},
		{[]string{"inject", "--proxy-version", "v9", "--registry", "a b", "-"}, `invalid --registry "a b"`},
		{[]string{"inject", "--proxy-version", "v9", "--cluster-domain", "-x", "-"}, `invalid --cluster-domain "-x"`},
		{[]string{"inject", "--proxy-version", "", "-"}, `empty --proxy-version`},
		{[]string{"install", "--version", "v9", "--image-digests", good}, ""},
	}
	for _, c := range cases {
		r := executeWithInput(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: a}]}\n", c.args...)
		if c.want == "" {
			if r.code != 0 {
				t.Errorf("%q: exit %d: %s", c.args, r.code, r.errOut)
			}
			continue
		}
		lines := strings.Split(strings.TrimSpace(r.errOut), "\n")
		if r.code != 2 || len(lines) != 1 || !strings.Contains(lines[0], c.want) || r.out != "" {
			t.Errorf("%q: exit %d, stderr %q, %d bytes on stdout; want exit 2 and one line with %q", c.args, r.code, r.errOut, len(r.out), c.want)
		}
	}
}

func TestImageFlagsApplied(t *testing.T) {
	digests := writeDigests(t, `{"version":"v9","images":{"controller":"`+digestController+`","proxy":"`+digestProxy+`","proxy-init":"`+digestInit+`"}}`)
	r := execute(t, false, "install", "--tls=optional", "--version", "v9", "--registry", "localhost:5000/mesh",
		"--image-pull-policy", "Always", "--image-pull-secret", "regcred", "--image-pull-secret", "regcred", "--image-pull-secret", "other",
		"--image-digests", digests, "--cluster-domain", "corp.example")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.errOut)
	}
	if n := strings.Count(r.out, "image: localhost:5000/mesh/controller:v9@"+digestController+"\n"); n != 3 {
		t.Errorf("install references the pinned controller %d times, want 3 (ca, destination, tap)", n)
	}
	if strings.Contains(r.out, "IfNotPresent") || strings.Count(r.out, "imagePullPolicy: Always") != 4 {
		t.Errorf("install: want imagePullPolicy Always on all 4 containers")
	}
	if n := strings.Count(r.out, "imagePullSecrets:\n      - name: regcred\n      - name: other\n"); n != 4 {
		t.Errorf("install: %d pod specs with imagePullSecrets [regcred other], want 4", n)
	}
	if n := strings.Count(r.out, "--cluster-domain=corp.example"); n != 3 {
		t.Errorf("install passes --cluster-domain to %d controllers, want 3", n)
	}
	if strings.Contains(r.out, "cluster.local") {
		t.Errorf("install --cluster-domain corp.example still says cluster.local")
	}
	if r.errOut != "" {
		t.Errorf("install of a published version warns: %q", r.errOut)
	}

	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: app}\nspec:\n  imagePullSecrets: [{name: own}, {name: regcred}]\n  containers: [{name: a, image: a}]\n"
	r = executeWithInput(t, pod, "inject", "--tls=optional", "--proxy-version", "v9", "--registry", "localhost:5000/mesh",
		"--image-pull-policy", "Never", "--image-pull-secret", "regcred", "--image-pull-secret", "more",
		"--image-digests", digests, "--cluster-domain", "corp.example", "-")
	if r.code != 0 {
		t.Fatalf("inject exit %d: %s", r.code, r.errOut)
	}
	for _, want := range []string{
		"image: localhost:5000/mesh/proxy:v9@" + digestProxy + "\n",
		"image: localhost:5000/mesh/proxy-init:v9@" + digestInit + "\n",
		"imagePullSecrets:\n  - name: own\n  - name: regcred\n  - name: more\n",
		"value: linkerd-controller.linkerd.svc.corp.example:",
		"value: p.pod.$(LINKERD2_PROXY_POD_NAMESPACE).linkerd-managed.linkerd.svc.corp.example\n",
		"value: linkerd-controller.deployment.linkerd.linkerd-managed.linkerd.svc.corp.example\n",
	} {
		if !strings.Contains(r.out, want) {
			t.Errorf("inject output lacks %q:\n%s", want, r.out)
		}
	}
	if strings.Count(r.out, "imagePullPolicy: Never") != 2 || strings.Contains(r.out, "cluster.local") {
		t.Errorf("inject: want Never on both containers and no cluster.local:\n%s", r.out)
	}
}

func TestRegistryFromEnvironment(t *testing.T) {
	t.Setenv("LINKERD_DOCKER_REGISTRY", "mirror.example:5000/meshtls")
	r := execute(t, false, "install", "--version", "v9")
	if r.code != 0 || !strings.Contains(r.out, "image: mirror.example:5000/meshtls/controller:v9\n") {
		t.Errorf("install with $LINKERD_DOCKER_REGISTRY: exit %d, mirror referenced=%v", r.code, strings.Contains(r.out, "mirror.example"))
	}
	r = execute(t, false, "install", "--version", "v9", "--registry", "flag.example/m")
	if !strings.Contains(r.out, "image: flag.example/m/controller:v9\n") {
		t.Errorf("--registry does not win over $LINKERD_DOCKER_REGISTRY")
	}
	r = executeWithInput(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: a}]}\n", "inject", "--proxy-version", "v9", "-")
	if !strings.Contains(r.out, "image: mirror.example:5000/meshtls/proxy:v9\n") {
		t.Errorf("inject ignores $LINKERD_DOCKER_REGISTRY:\n%s", r.out)
	}
}

// A dev version was never published: install says so, and how to get the
// images onto the nodes, on stderr only.
func TestInstallWarnsOnUnpublishedVersion(t *testing.T) {
	for _, v := range []string{"dev", "dev-e45bc1c", "dev-v0.2.0-3-g1a2b3c4-dirty"} {
		r := execute(t, false, "install", "--version", v)
		if r.code != 0 {
			t.Fatalf("exit %d: %s", r.code, r.errOut)
		}
		for _, want := range []string{"Warning: version " + v + " was never published", "kind load image-archive bin/images/meshtls-" + v + ".oci.tar", "make images-push REGISTRY="} {
			if !strings.Contains(r.errOut, want) {
				t.Errorf("--version %s: stderr %q lacks %q", v, r.errOut, want)
			}
		}
		if strings.Contains(r.out, "Warning") {
			t.Errorf("--version %s: the warning went to stdout, into kubectl apply", v)
		}
	}
	if r := execute(t, false, "install", "--version", "v0.2.0"); strings.Contains(r.errOut, "never published") {
		t.Errorf("a release version warns: %q", r.errOut)
	}
}

// --version still works on inject, deprecated for --proxy-version.
func TestInjectVersionAlias(t *testing.T) {
	r := executeWithInput(t, "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a, image: a}]}\n", "inject", "--version", "v7", "-")
	if r.code != 0 || !strings.Contains(r.out, "/proxy:v7\n") || !strings.Contains(r.errOut, "--proxy-version") || strings.Contains(r.out, "deprecated") {
		t.Errorf("inject --version v7: exit %d, stderr %q", r.code, r.errOut)
	}
}
