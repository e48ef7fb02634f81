package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInjectFileDirAndStdin(t *testing.T) {
	emojivoto := filepath.Join("..", "inject", "testdata", "emojivoto.yml")
	fromFile := execute(t, false, "inject", "--tls=optional", "--proxy-version", "v1", emojivoto)
	if fromFile.code != 0 {
		t.Fatalf("exit %d: %s", fromFile.code, fromFile.errOut)
	}
	if n := strings.Count(fromFile.out, "secretName: "); n != 4 {
		t.Errorf("%d Secret volumes, want 4", n)
	}
	if !strings.Contains(fromFile.errOut, "Summary: 4 of 11 YAML documents injected") || !strings.Contains(fromFile.errOut, "deployment/web") {
		t.Errorf("report:\n%s", fromFile.errOut)
	}
	if strings.Contains(fromFile.out, "Summary") {
		t.Error("report leaked into stdout")
	}

	data, err := os.ReadFile(emojivoto)
	if err != nil {
		t.Fatal(err)
	}
	fromStdin := executeWithInput(t, string(data), "inject", "--tls=optional", "--proxy-version", "v1", "-")
	if fromStdin.code != 0 || fromStdin.out != fromFile.out {
		t.Errorf("stdin gives different output (exit %d)", fromStdin.code)
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "a.yaml"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not yaml: ["), 0o644); err != nil {
		t.Fatal(err)
	}
	fromDir := execute(t, false, "inject", "--tls=optional", "--proxy-version", "v1", dir)
	if fromDir.code != 0 || fromDir.out != fromFile.out {
		t.Errorf("directory gives different output (exit %d): %s", fromDir.code, fromDir.errOut)
	}

	again := executeWithInput(t, fromFile.out, "inject", "--tls=optional", "--proxy-version", "v1", "-")
	if again.out != fromFile.out {
		t.Error("injecting twice changed the output")
	}
}

func TestInjectBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: Service\n---\nkind: Pod\nmetadata:\n  name: [x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"inject", bad}, 1, bad + ": document 2, line "},
		{[]string{"inject", filepath.Join(dir, "missing.yaml")}, 1, "cannot read"},
		{[]string{"inject", t.TempDir()}, 1, "no .yaml, .yml or .json files"},
		{[]string{"inject", "--tls=on", bad}, 2, `invalid --tls value "on"`},
		{[]string{"inject"}, 2, "accepts 1 arg"},
	}
	for _, tc := range cases {
		r := execute(t, false, tc.args...)
		if r.code != tc.code || !strings.Contains(r.errOut, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, r.code, r.errOut, tc.code, tc.want)
		}
		if r.out != "" {
			t.Errorf("%v: printed output despite failing", tc.args)
		}
		if strings.Count(strings.TrimSpace(r.errOut), "\n") != 0 {
			t.Errorf("%v: error spans lines: %q", tc.args, r.errOut)
		}
	}
	// Nothing reaches stdout when a later file fails.
	if err := os.WriteFile(filepath.Join(dir, "a-good.yaml"), []byte("kind: Service\nmetadata: {name: s}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := execute(t, false, "inject", dir)
	if r.code == 0 || r.out != "" || !bytes.Contains([]byte(r.errOut), []byte("bad.yaml")) {
		t.Errorf("dir with a bad file: exit %d, out %q, err %q", r.code, r.out, r.errOut)
	}
}
