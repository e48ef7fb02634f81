package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInstallCommand(t *testing.T) {
	r := execute(t, false, "install", "--tls=optional", "--version", "v9", "--ha")
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.errOut)
	}
	for _, want := range []string{"kind: Namespace", "name: linkerd-ca\n", "ghcr.io/meshtls/controller:v9", "replicas: 3", "kind: ConfigMap"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("install output lacks %q", want)
		}
	}
	r = execute(t, false, "install", "-L", "mesh", "--version", "v9")
	if r.code != 0 || strings.Contains(r.out, "linkerd-ca") || !strings.Contains(r.out, "namespace: mesh") {
		t.Errorf("install -L mesh without --tls: exit %d, CA present=%v", r.code, strings.Contains(r.out, "linkerd-ca"))
	}
}

func TestInstallBadInput(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "root.key")
	if err := os.WriteFile(junk, []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"install", "--tls=required"}, 2, `invalid --tls value "required"`},
		{[]string{"install", "--tls=optional", "--root-cert", filepath.Join(dir, "missing.crt"), "--root-key", junk}, 1, "cannot read --root-cert"},
		{[]string{"install", "--tls=optional", "--root-cert", junk, "--root-key", junk}, 1, "supplied root"},
		{[]string{"install", "extra"}, 2, "unknown command"},
	}
	for _, tc := range cases {
		r := execute(t, false, tc.args...)
		if r.code != tc.code || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.errOut, tc.code, tc.want)
		}
		if r.out != "" {
			t.Errorf("%v: printed YAML despite failing", tc.args)
		}
		if strings.Count(strings.TrimSpace(r.errOut), "\n") != 0 || strings.Contains(r.errOut, "c2VjcmV0") {
			t.Errorf("%v: error is not one clean line: %q", tc.args, r.errOut)
		}
	}
}
