package ca

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"k8s.io/client-go/kubernetes"

	"meshtls/testutil/localcluster"
)

// controllerPath is cmd/controller built once for this test binary: the
// process tests run it directly.
var controllerPath string

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "meshtls-ca-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	controllerPath = filepath.Join(dir, "controller")
	if out, err := exec.Command("go", "build", "-o", controllerPath, "meshtls/cmd/controller").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build cmd/controller: %v\n%s", err, out)
		return 1
	}
	return localcluster.Run(m)
}

func clusterKubeconfig(t testing.TB) string { return localcluster.Kubeconfig(t) }

// clusterClient allows the CA the request rate the controller binary uses,
// so tests see its real behaviour rather than client-side throttling.
func clusterClient(t testing.TB) kubernetes.Interface {
	c := localcluster.Config(t)
	c.QPS, c.Burst = 100, 200
	return kubernetes.NewForConfigOrDie(c)
}
