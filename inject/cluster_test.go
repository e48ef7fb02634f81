//go:build integration

package inject

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshtls/testutil/localcluster"
)

func TestMain(m *testing.M) { os.Exit(localcluster.Run(m)) }

// The API server validates injected workloads (schema, defaults, admission)
// without persisting them.
func TestInjectedPassesServerDryRun(t *testing.T) {
	client := localcluster.Client(t)
	// Namespaced objects can only be dry-run into namespaces that exist.
	for _, ns := range []string{"emojivoto", "shop"} {
		if _, err := client.CoreV1().Namespaces().Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	}
	for _, tls := range []string{"", "optional", "optional+cluster"} {
		for _, in := range []string{"emojivoto.yml", "kinds.yaml"} {
			o := testOptions
			o.TLS = strings.TrimSuffix(tls, "+cluster")
			if strings.HasSuffix(tls, "+cluster") {
				// Every option a real cluster may need: digest references,
				// pull secrets, the pull policy, another cluster domain.
				o.Registry = "registry.example:5000/meshtls"
				o.ImageDigests = map[string]string{"proxy": "sha256:" + strings.Repeat("2", 64), "proxy-init": "sha256:" + strings.Repeat("3", 64)}
				o.ImagePullPolicy, o.ImagePullSecrets, o.ClusterDomain = "Always", []string{"regcred"}, "corp.example"
			}
			res := injectFile(t, in, o)
			if in == "kinds.yaml" {
				res = serverSafe(t, o)
			}
			cmd := exec.Command(localcluster.Kubectl(t), "--kubeconfig", localcluster.Kubeconfig(t), "apply", "--dry-run=server", "-f", "-")
			cmd.Stdin = bytes.NewReader(res.YAML)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s tls=%q: kubectl apply --dry-run=server: %v\n%s", in, tls, err, out)
			}
			if want := strings.Count(string(res.YAML), "\nkind: "); strings.Count(string(out), "(server dry run)") < want {
				t.Errorf("%s: kubectl accepted fewer objects than the %d documents:\n%s", in, want, out)
			}
		}
	}
}

// serverSafe is kinds.yaml without the two things a real API server
// rejects on purpose: the made-up field that shows unknown fields survive,
// and the generateName pod, which kubectl apply cannot create. The
// kube-system Deployment coredns is renamed: the cluster runs its own (its
// DNS), whose selector is immutable.
func serverSafe(t *testing.T, o Options) *Result {
	t.Helper()
	in, err := os.ReadFile("testdata/kinds.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, doc := range strings.Split(string(in), "\n---\n") {
		if strings.Contains(doc, "generateName:") {
			continue
		}
		doc = strings.Replace(doc, "name: coredns\n  namespace: kube-system", "name: fixture-coredns\n  namespace: kube-system", 1)
		var lines []string
		for _, l := range strings.Split(doc, "\n") {
			if !strings.Contains(l, "futureField") && !strings.Contains(l, "must survive") {
				lines = append(lines, l)
			}
		}
		kept = append(kept, strings.Join(lines, "\n"))
	}
	res, err := Inject([]byte(strings.Join(kept, "\n---\n")), "kinds.yaml (server-safe)", o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}
