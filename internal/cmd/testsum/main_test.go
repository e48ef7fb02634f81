package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// goTestJSON runs the real `go test -json` on a small module whose tests
// pass, fail, skip (with and without a reason, as subtests too), and whose
// second package does not build.
func goTestJSON(t *testing.T) []byte {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module sample\n\ngo 1.26\n",
		"a/a_test.go": `package a

import "testing"

func TestPasses(t *testing.T) {}
func TestFails(t *testing.T) { t.Log("the detail"); t.Fatal("it broke") }
func TestSkipsWithReason(t *testing.T) { t.Skip("needs the moon") }
func TestSkipsSilently(t *testing.T) { t.SkipNow() }
func TestParent(t *testing.T) {
	t.Run("child", func(t *testing.T) { t.Skip("child reason") })
}
`,
		"b/b_test.go": "package b\n\nimport \"testing\"\n\nfunc TestX(t *testing.T) { undefined() }\n",
		"c/c_test.go": "package c\n\nimport \"testing\"\n\nfunc TestOK(t *testing.T) {}\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", "test", "-json", "-count=1", "./...")
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err == nil {
		t.Fatal("go test passed on a module with a failing test")
	}
	return out.Bytes()
}

func TestSummaryOfARealRun(t *testing.T) {
	js := goTestJSON(t)
	r := newRun()
	var lines bytes.Buffer
	if err := r.read(bytes.NewReader(js), nil, func(p string, res *result) { printPkg(&lines, r, p, res) }); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ok    sample/c", "FAIL  sample/a", "--- FAIL TestFails", "the detail", "it broke", "FAIL  sample/b", "undefined"} {
		if !strings.Contains(lines.String(), want) {
			t.Errorf("package lines lack %q:\n%s", want, lines.String())
		}
	}
	var sum bytes.Buffer
	err := summarize(&sum, r, allowList{}, false, 5)
	if err == nil || !strings.Contains(err.Error(), "1 tests and 2 packages failed") {
		t.Errorf("summarize error = %v, want 1 test and 2 packages failed", err)
	}
	s := sum.String()
	for _, want := range []string{
		"3 passed, 1 failed, 3 skipped", // TestParent passes; its child skips
		"sample/a TestSkipsWithReason: a_test.go:7: needs the moon",
		"sample/a TestSkipsSilently: (no reason given)",
		"sample/a TestParent/child: a_test.go:10: child reason",
		"sample/a TestFails\n",
		"sample/b (package)",
		"slowest tests:",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}

func TestCIFailsOnASkipOutsideTheAllowList(t *testing.T) {
	js := goTestJSON(t)
	allowFile := filepath.Join(t.TempDir(), "allow")
	if err := os.WriteFile(allowFile, []byte("# why each may skip\nsample/a TestSkipsWithReason  # the moon is far\nsample/a TestParent # its child\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	allow, err := readAllowList(allowFile)
	if err != nil {
		t.Fatal(err)
	}
	r := newRun()
	if err := r.read(bytes.NewReader(js), nil, nil); err != nil {
		t.Fatal(err)
	}
	var sum bytes.Buffer
	err = summarize(&sum, r, allow, true, 5)
	if err == nil || !strings.Contains(err.Error(), "1 tests skipped in CI without being on the allow-list") {
		t.Fatalf("err = %v", err)
	}
	bad := sum.String()[strings.Index(sum.String(), "without leave"):]
	if !strings.Contains(bad, "TestSkipsSilently") || strings.Contains(bad, "TestSkipsWithReason") || strings.Contains(bad, "TestParent/child") {
		t.Errorf("the skips without leave are wrong:\n%s", bad)
	}
	if !strings.Contains(sum.String(), "TestSkipsWithReason [allowed]") {
		t.Errorf("an allowed skip is not marked:\n%s", sum.String())
	}
	// Outside CI the same skips only show.
	sum.Reset()
	if err := summarize(&sum, r, allow, false, 5); err == nil || strings.Contains(err.Error(), "allow-list") {
		t.Errorf("outside CI: err = %v, want only the failures", err)
	}
}

func TestAllowListRejectsMalformedLines(t *testing.T) {
	p := filepath.Join(t.TempDir(), "allow")
	if err := os.WriteFile(p, []byte("meshtls/cli TestA extra words\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := readAllowList(p); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Errorf("err = %v, want a line number", err)
	}
}

func TestTotalsFailsOnATestThatNeverEnded(t *testing.T) {
	// A binary killed mid-test (panic, timeout) leaves a run without an end.
	js := `{"Action":"start","Package":"p"}
{"Action":"run","Package":"p","Test":"TestHang"}
{"Action":"output","Package":"p","Test":"TestHang","Output":"panic: test timed out\n"}
`
	r := newRun()
	if err := r.read(strings.NewReader(js), nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := totals(&bytes.Buffer{}, r); err == nil {
		t.Error("totals passed a test that never ended")
	}
}
