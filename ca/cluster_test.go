package ca

import (
	"os"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Until testutil/localcluster lands, the integration tests use the cluster
// MESHTLS_DEV_KUBECONFIG names.
func clusterConfig(t testing.TB) *rest.Config {
	t.Helper()
	kc := os.Getenv("MESHTLS_DEV_KUBECONFIG")
	if kc == "" {
		t.Fatal("MESHTLS_DEV_KUBECONFIG is not set")
	}
	c, err := clientcmd.BuildConfigFromFlags("", kc)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func clusterKubeconfig(t testing.TB) string { return os.Getenv("MESHTLS_DEV_KUBECONFIG") }

func clusterClient(t testing.TB) kubernetes.Interface {
	c := rest.CopyConfig(clusterConfig(t))
	c.QPS, c.Burst = 200, 400
	return kubernetes.NewForConfigOrDie(c)
}
