package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCARotateBadInput(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "next.key")
	if err := os.WriteFile(junk, []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"ca", "rotate", "--root-cert", junk}, 2, "go together"},
		{[]string{"ca", "rotate", "--trust-anchors", junk}, 2, "needs --root-cert"},
		{[]string{"ca", "rotate", "-o", "yaml"}, 2, `invalid --output "yaml"`},
		{[]string{"ca", "rotate", "--root-cert", filepath.Join(dir, "missing.crt"), "--root-key", junk}, 1, "cannot read --root-cert"},
		{[]string{"ca", "rotate"}, 1, "no cluster in this test"},
	}
	for _, tc := range cases {
		r := execute(t, false, tc.args...)
		if r.code != tc.code || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.errOut, tc.code, tc.want)
		}
		if strings.Count(strings.TrimSpace(r.errOut), "\n") != 0 || strings.Contains(r.errOut, "c2VjcmV0") {
			t.Errorf("%v: error is not one clean line: %q", tc.args, r.errOut)
		}
	}
	help := execute(t, false, "ca", "rotate", "--help")
	for _, want := range []string{"add-anchors", "reissue", "retire", "--propagation-delay", "linkerd ca rotate --root-cert"} {
		if !strings.Contains(help.out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}
