//go:build integration

// Package e2e runs the linkerd binary against a real local Kubernetes
// (bin/localkube): real API server, real pods running as processes.
package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"meshtls/testutil/localcluster"
	"meshtls/testutil/testbin"
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
	if err := testbin.Build(dir, "meshtls/cmd/linkerd"); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	// Pods run this build of linkerd (image …/linkerd:TAG); the control
	// plane's Prometheus (image …/prometheus:TAG) runs the repository's
	// bin/prometheus, built from the Prometheus module with Kubernetes
	// service discovery (Debian's has none).
	if err := needPrometheus(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := localcluster.RunWith(m, localcluster.Options{BinDirs: []string{dir}})
	os.RemoveAll(dir)
	os.Exit(code)
}

// needPrometheus says how to build the Prometheus the local kubelet runs
// for install's image, when it is missing.
func needPrometheus() error {
	for _, name := range []string{"prometheus", "prometheus-server"} {
		if _, err := os.Stat(filepath.Join("..", "bin", name)); err != nil {
			return fmt.Errorf("e2e: bin/%s is missing: run `make prometheus` (the control plane's Prometheus runs it)", name)
		}
	}
	return nil
}
