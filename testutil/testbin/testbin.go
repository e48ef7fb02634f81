// Package testbin gives tests this module's commands as binaries, built
// from the tree under test.
//
// `make test` builds cmd/... into bin/ first and exports MESHTLS_BIN=bin/,
// so tests take those binaries and link nothing themselves. Without it
// (a plain `go test`), each binary is built here, once per call to Build
// or per test for Command, so a test never runs a stale bin/.
package testbin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// EnvBin names the directory of prebuilt commands (cmd/NAME as NAME),
// fresh from this tree. `make test` sets it after `make build`.
const EnvBin = "MESHTLS_BIN"

const cmdPrefix = "meshtls/cmd/"

// Prebuilt returns the directory EnvBin names, when set.
func Prebuilt() (string, bool) {
	dir := os.Getenv(EnvBin)
	if dir == "" {
		return "", false
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return dir, true
	}
	return abs, true
}

// Build puts each package's binary into dir, named after its last path
// element. Commands (meshtls/cmd/NAME) are copied from MESHTLS_BIN when it
// is set; everything else is built with one `go build`.
func Build(dir string, pkgs ...string) error {
	var toBuild []string
	pre, ok := Prebuilt()
	for _, p := range pkgs {
		name := path.Base(p)
		if ok && strings.HasPrefix(p, cmdPrefix) {
			src := filepath.Join(pre, name)
			if _, err := os.Stat(src); err != nil {
				return fmt.Errorf("%s=%s has no %s: run `make build`", EnvBin, pre, name)
			}
			if err := os.Symlink(src, filepath.Join(dir, name)); err != nil {
				return err
			}
			continue
		}
		toBuild = append(toBuild, p)
	}
	if len(toBuild) == 0 {
		return nil
	}
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, toBuild...)
	if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", strings.Join(toBuild, " "), err, out)
	}
	return nil
}

// The binaries Command built for this test binary, when Main runs it.
var (
	mu      sync.Mutex
	shared  string // the directory, made on first use; "" without Main
	inMain  bool
	builtOK = map[string]bool{}
)

// Main runs the tests and removes what Command built for them: with it,
// Command builds each command once per test binary instead of once per
// test.
//
//	func TestMain(m *testing.M) { os.Exit(testbin.Main(m)) }
func Main(m *testing.M) int {
	mu.Lock()
	inMain = true
	mu.Unlock()
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if shared != "" {
		_ = os.RemoveAll(shared)
	}
	return code
}

// Command returns the path of cmd/NAME: MESHTLS_BIN's copy, or a fresh
// build (one per test binary under Main, else one in the test's temp dir).
func Command(t testing.TB, name string) string {
	t.Helper()
	if pre, ok := Prebuilt(); ok {
		p := filepath.Join(pre, name)
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s=%s has no %s: run `make build`", EnvBin, pre, name)
		}
		return p
	}
	mu.Lock()
	defer mu.Unlock()
	dir := t.TempDir()
	if inMain {
		if shared == "" {
			d, err := os.MkdirTemp("", "testbin-")
			if err != nil {
				t.Fatal(err)
			}
			shared = d
		}
		dir = shared
		if builtOK[name] {
			return filepath.Join(dir, name)
		}
	}
	if err := Build(dir, cmdPrefix+name); err != nil {
		t.Fatal(err)
	}
	if inMain {
		builtOK[name] = true
	}
	return filepath.Join(dir, name)
}

// RepoRoot walks up from the working directory (a package dir under go
// test) to the go.mod of module meshtls, past nested modules such as
// install/prometheus.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && moduleName(b) == "meshtls" {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module meshtls above the working directory")
		}
		dir = parent
	}
}

func moduleName(gomod []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}
