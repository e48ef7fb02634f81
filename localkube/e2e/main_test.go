// Package e2e tests localkube end to end: a real etcd, kube-apiserver and
// kube-controller-manager from bin/, and the process kubelet running a
// small test binary as containers.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// The cluster shared by the tests of this package.
var (
	localkube  string // the localkube binary under test
	appBinDir  string // holds testapp, mapped from images named .../testapp
	clusterDir string
	restConfig *rest.Config
	client     kubernetes.Interface
	podBlock   int
	// proxyInitErr is why the main module's proxy-init did not build.
	proxyInitErr error
)

const appImage = "example.test/localkube/testapp:v1"

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	var err error
	if localkube, err = findLocalkube(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "localkube-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	// Containers with a runAsUser must reach the binaries.
	if err := os.Chmod(tmp, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	appBinDir = filepath.Join(tmp, "bin")
	if out, err := exec.Command("go", "build", "-o", filepath.Join(appBinDir, "testapp"), "meshtls/localkube/internal/cmd/testapp").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build testapp: %v\n%s", err, out)
		return 1
	}
	// The mesh's init container, from the main module (the repository
	// root): the one `make build` just built when MESHTLS_BIN names it
	// (`make test` does), else built here.
	if pre := os.Getenv("MESHTLS_BIN"); pre != "" {
		b, err := os.ReadFile(filepath.Join(pre, "proxy-init"))
		if err == nil {
			err = os.WriteFile(filepath.Join(appBinDir, "proxy-init"), b, 0o755)
		}
		if err != nil {
			proxyInitErr = fmt.Errorf("MESHTLS_BIN=%s: %v (run `make build`)", pre, err)
		}
	} else {
		build := exec.Command("go", "build", "-o", filepath.Join(appBinDir, "proxy-init"), "./cmd/proxy-init")
		build.Dir = filepath.Join("..", "..")
		if out, err := build.CombinedOutput(); err != nil {
			proxyInitErr = fmt.Errorf("%v: %s", err, out)
		}
	}
	clusterDir = filepath.Join(tmp, "cluster")
	down := func() {
		if out, err := lk("down", "--dir", clusterDir); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: localkube down: %v\n%s", err, out)
		}
	}
	start := time.Now()
	if out, err := lk("up", "--dir", clusterDir, "--bin-dir", appBinDir, "--owner-pid", fmt.Sprint(os.Getpid())); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: localkube up: %v\n%s", err, out)
		down()
		return 1
	}
	defer down()
	fmt.Printf("e2e: cluster up in %.1fs\n", time.Since(start).Seconds())
	if restConfig, err = clientcmd.BuildConfigFromFlags("", filepath.Join(clusterDir, "kubeconfig")); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	restConfig.QPS, restConfig.Burst = 100, 200
	client = kubernetes.NewForConfigOrDie(restConfig)
	var st struct {
		Block int `json:"podAddressBlock"`
	}
	b, _ := os.ReadFile(filepath.Join(clusterDir, "state.json"))
	if err := json.Unmarshal(b, &st); err != nil || st.Block == 0 {
		fmt.Fprintf(os.Stderr, "e2e: state.json has no pod address block: %v\n", err)
		return 1
	}
	podBlock = st.Block
	return m.Run()
}

// findLocalkube is $LOCALKUBE_BINARY, else bin/localkube of the repository.
func findLocalkube() (string, error) {
	p := os.Getenv("LOCALKUBE_BINARY")
	if p == "" {
		wd, _ := os.Getwd()
		p = filepath.Join(wd, "..", "..", "bin", "localkube")
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found: run `make localkube` in the repository root first", p)
	}
	return filepath.Abs(p)
}

// lk runs the localkube binary and returns its combined output.
func lk(args ...string) (string, error) {
	cmd := exec.Command(localkube, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return strings.TrimSpace(out.String()), err
}
