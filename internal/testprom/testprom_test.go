package testprom

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServerBinaryIsTheRepositorysBin(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module meshtls\n\ngo 1.26.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A nested module of another name is walked past, as install/prometheus is.
	pkg := filepath.Join(root, "install", "prometheus", "launcher")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "install", "prometheus", "go.mod"), []byte("module meshtls/tools/prometheus\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(pkg)

	_, err := serverBinary()
	if err == nil {
		t.Fatal("no error without bin/prometheus-server")
	}
	want := filepath.Join(root, "bin", "prometheus-server") + " is missing: run `make prometheus`"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}

	bin := filepath.Join(root, "bin", "prometheus-server")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	got, err := serverBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got != bin {
		t.Errorf("serverBinary() = %s, want %s", got, bin)
	}
}

func TestServerBinaryOutsideTheRepository(t *testing.T) {
	t.Chdir(t.TempDir())
	if _, err := serverBinary(); err == nil || !strings.Contains(err.Error(), "no go.mod of module meshtls") {
		t.Errorf("serverBinary() error = %v, want one naming the missing go.mod", err)
	}
}
