// Package e2e runs the linkerd binary against a real local Kubernetes
// (bin/localkube): real API server, real pods running as processes.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"meshtls/testutil/localcluster"
)

// linkerdBin is the CLI under test, built fresh for this package.
var linkerdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshtls-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	linkerdBin = filepath.Join(dir, "linkerd")
	build := exec.Command("go", "build", "-o", linkerdBin, "meshtls/cmd/linkerd")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build linkerd:", err)
		os.Exit(1)
	}
	// Pods run this build of linkerd (image …/linkerd:TAG) and, for the
	// control plane's Prometheus (image …/prometheus:TAG), the machine's
	// prometheus binary.
	if prom, err := exec.LookPath("prometheus"); err == nil {
		_ = os.Symlink(prom, filepath.Join(dir, "prometheus"))
	}
	code := localcluster.RunWith(m, localcluster.Options{BinDirs: []string{dir}})
	os.RemoveAll(dir)
	os.Exit(code)
}
