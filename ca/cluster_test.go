//go:build integration

package ca

import (
	"os"
	"testing"

	"k8s.io/client-go/kubernetes"

	"meshtls/testutil/localcluster"
)

// TestMain: the CA's own binary runs in TestControllerBinary… tests and
// serves as the image …/controller:TAG on the cluster.
func TestMain(m *testing.M) {
	os.Exit(localcluster.RunWith(m, localcluster.Options{Commands: []string{"meshtls/cmd/controller"}}))
}

func clusterKubeconfig(t testing.TB) string { return localcluster.Kubeconfig(t) }

// clusterClient allows the CA the request rate the controller binary uses,
// so tests see its real behaviour rather than client-side throttling.
func clusterClient(t testing.TB) kubernetes.Interface {
	c := localcluster.Config(t)
	c.QPS, c.Burst = 100, 200
	return kubernetes.NewForConfigOrDie(c)
}
