// Package localcluster gives a package's integration tests a real local
// Kubernetes: one `bin/localkube` cluster (etcd, kube-apiserver,
// kube-controller-manager and the process kubelet) per test binary.
//
//	func TestMain(m *testing.M) { os.Exit(localcluster.Run(m)) }
//
//	func TestSomething(t *testing.T) {
//		client := localcluster.Client(t)
//		...
//	}
//
// Build the cluster's binaries first with `make localkube` (`make test`
// does). Without them Run fails with a line saying so; it never skips.
package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Options tune RunWith.
type Options struct {
	// BinDirs are searched before the repository's bin/ when an image is
	// mapped to a binary, so tests can run binaries they built themselves
	// (an image .../NAME:TAG runs DIR/NAME).
	BinDirs []string
	// KeepDir leaves the cluster dir (logs, pod dirs) in place after the
	// run, for debugging; its path is printed.
	KeepDir bool
}

// The cluster of this test binary, set by Run.
var current atomic.Pointer[cluster]

type cluster struct {
	dir        string
	kubeconfig string
	config     *rest.Config
}

// Run starts a cluster, runs the tests and stops the cluster, returning
// the exit code for os.Exit.
func Run(m *testing.M) int { return RunWith(m, Options{}) }

// RunWith is Run with options.
func RunWith(m *testing.M, opts Options) int {
	if !flag.Parsed() {
		flag.Parse() // m.Run would; testing.Verbose needs it now
	}
	localkube, err := findLocalkube()
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "localcluster-")
	if err == nil {
		// Containers with a runAsUser (the proxy runs as 2102) read their
		// volumes under the cluster dir: its parent must let them through.
		err = os.Chmod(tmp, 0o755)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		return 1
	}
	dir := filepath.Join(tmp, "cluster")
	args := []string{"up", "--dir", dir, "--owner-pid", strconv.Itoa(os.Getpid())}
	for _, d := range opts.BinDirs {
		args = append(args, "--bin-dir", d)
	}
	start := time.Now()
	if out, err := run(localkube, args...); err != nil {
		fmt.Fprintf(os.Stderr, "localcluster: %s up failed: %s\n", localkube, lastLine(out, err))
		_, _ = run(localkube, "down", "--dir", dir)
		fmt.Fprintf(os.Stderr, "localcluster: logs kept in %s/logs\n", dir)
		return 1
	}
	stop := func() {
		if out, err := run(localkube, "down", "--dir", dir); err != nil {
			fmt.Fprintf(os.Stderr, "localcluster: down: %s\n", lastLine(out, err))
		}
		if opts.KeepDir {
			fmt.Fprintf(os.Stderr, "localcluster: cluster dir kept: %s\n", dir)
			return
		}
		_ = os.RemoveAll(tmp)
	}
	defer stop()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster:", err)
		return 1
	}
	cfg.QPS, cfg.Burst = 100, 200
	current.Store(&cluster{dir: dir, kubeconfig: kubeconfig, config: cfg})
	if testing.Verbose() {
		fmt.Printf("localcluster: cluster up in %.1fs (%s)\n", time.Since(start).Seconds(), dir)
	}
	return m.Run()
}

func run(bin string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func lastLine(out string, err error) string {
	var last string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			last = l
		}
	}
	if last == "" {
		return err.Error()
	}
	return last
}

// findLocalkube walks up from the working directory to the repository root
// (the go.mod of module meshtls) and returns its bin/localkube.
func findLocalkube() (string, error) {
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "bin", "localkube")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found: run `make localkube` in %s first", p, root)
	}
	return p, nil
}

func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && isMeshtlsModule(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module meshtls above the working directory")
		}
		dir = parent
	}
}

func isMeshtlsModule(gomod []byte) bool {
	sc := bufio.NewScanner(bytes.NewReader(gomod))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == "meshtls"
		}
	}
	return false
}

func get(t testing.TB) *cluster {
	t.Helper()
	c := current.Load()
	if c == nil {
		t.Fatal("localcluster: no cluster: call os.Exit(localcluster.Run(m)) from TestMain")
	}
	return c
}

// Config is a copy of the cluster-admin config.
func Config(t testing.TB) *rest.Config {
	t.Helper()
	return rest.CopyConfig(get(t).config)
}

// Kubeconfig is the path of the cluster-admin kubeconfig, for kubectl.
func Kubeconfig(t testing.TB) string {
	t.Helper()
	return get(t).kubeconfig
}

// Dir is the cluster dir: logs/ holds the control plane's logs, and
// pods/NS_NAME_UID/ each pod's volumes and container logs.
func Dir(t testing.TB) string {
	t.Helper()
	return get(t).dir
}

// Client is a cluster-admin clientset.
func Client(t testing.TB) kubernetes.Interface {
	t.Helper()
	c, err := kubernetes.NewForConfig(Config(t))
	if err != nil {
		t.Fatalf("localcluster: %v", err)
	}
	return c
}

var nsSeq atomic.Int64

// Namespace creates a fresh namespace for one test, waits until pods can be
// created in it (its default ServiceAccount exists), and deletes it when
// the test ends.
func Namespace(t testing.TB) string {
	t.Helper()
	client := Client(t)
	ctx := context.Background()
	ns, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		GenerateName: fmt.Sprintf("test-%d-", nsSeq.Add(1)),
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("localcluster: create namespace: %v", err)
	}
	t.Cleanup(func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns.Name, metav1.DeleteOptions{}) })
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := client.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{}); err == nil {
			return ns.Name
		}
		if time.Now().After(deadline) {
			t.Fatalf("localcluster: namespace %s has no default ServiceAccount after 30s", ns.Name)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kubectl returns the kubectl `make localkube` builds at the cluster's own
// version (bin/kubectl); one on PATH, which may be years older, is the
// fallback.
func Kubectl(t testing.TB) string {
	t.Helper()
	if root, err := repoRoot(); err == nil {
		p := filepath.Join(root, "bin", "kubectl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal("kubectl not found: run `make localkube` (it builds bin/kubectl)")
	}
	return p
}

// Eventually retries cond until it returns nil, and fails the test with its
// last error when timeout passes first.
func Eventually(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("not true after %s: %v", timeout, err)
}
