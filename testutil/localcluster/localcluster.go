// Package localcluster gives a package's integration tests a real local
// Kubernetes: one `bin/localkube` cluster (etcd, kube-apiserver,
// kube-controller-manager and the process kubelet) per test binary,
// started on first use and stopped when the tests end.
//
//	func TestMain(m *testing.M) { os.Exit(localcluster.Run(m)) }
//
//	func TestSomething(t *testing.T) {
//		client := localcluster.Client(t) // the first call starts the cluster
//		...
//	}
//
// A test binary whose selected tests never ask for the cluster starts
// none, so `go test -tags integration -run TestGolden ./inject` needs no
// root. The cluster's binaries come from `make localkube` (`make test`
// runs it); without them, or without root, the first test that asks for
// the cluster fails with a line saying what is missing. It never skips.
package localcluster

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"meshtls/testutil/testbin"
)

// Options tune RunWith.
type Options struct {
	// Commands are Go packages of this module (meshtls/cmd/controller, …)
	// whose binaries the cluster runs: an image .../NAME:TAG runs NAME.
	// They are built from the tree under test (or taken from MESHTLS_BIN,
	// see testutil/testbin) before the cluster starts, into a directory
	// searched before the repository's bin/.
	Commands []string
	// BinDirs are searched before the repository's bin/ (and after
	// Commands), for binaries a TestMain built itself.
	BinDirs []string
	// KeepDir leaves the cluster dir (logs, pod dirs) in place after the
	// run, for debugging; its path is printed.
	KeepDir bool
}

// The cluster of this test binary: options set by Run, the rest by the
// first test that asks for it.
var (
	opts      Options
	startOnce sync.Once
	current   *cluster
	startErr  error
	binsOnce  sync.Once
	binsDir   string
	binsErr   error
	stops     []func()
	inRun     bool
)

type cluster struct {
	dir        string
	kubeconfig string
	config     *rest.Config
}

// Run runs the tests and stops the cluster if one started, returning the
// exit code for os.Exit.
func Run(m *testing.M) int { return RunWith(m, Options{}) }

// RunWith is Run with options.
func RunWith(m *testing.M, o Options) int {
	opts, inRun = o, true
	code := m.Run()
	for i := len(stops) - 1; i >= 0; i-- {
		stops[i]()
	}
	return code
}

// Binary is the path of a binary of Options.Commands (by its name),
// built on first use.
func Binary(t testing.TB, name string) string {
	t.Helper()
	dir, err := commands()
	if err != nil {
		t.Fatal("localcluster: ", err)
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("localcluster: %s is not among the Commands this package's TestMain names", name)
	}
	return p
}

func commands() (string, error) {
	binsOnce.Do(func() {
		if len(opts.Commands) == 0 {
			return
		}
		binsDir, binsErr = os.MkdirTemp("", "localcluster-bin-")
		if binsErr != nil {
			return
		}
		dir := binsDir
		stops = append(stops, func() { _ = os.RemoveAll(dir) })
		binsErr = testbin.Build(binsDir, opts.Commands...)
	})
	return binsDir, binsErr
}

func start() (*cluster, error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the local cluster needs root (pod network namespaces): run the cluster tests as root, as `make test` does")
	}
	localkube, err := findLocalkube()
	if err != nil {
		return nil, err
	}
	bins, err := commands()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "localcluster-")
	if err == nil {
		// Containers with a runAsUser (the proxy runs as 2102) read their
		// volumes under the cluster dir: its parent must let them through.
		err = os.Chmod(tmp, 0o755)
	}
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(tmp, "cluster")
	args := []string{"up", "--dir", dir, "--owner-pid", strconv.Itoa(os.Getpid())}
	if bins != "" {
		args = append(args, "--bin-dir", bins)
	}
	for _, d := range opts.BinDirs {
		args = append(args, "--bin-dir", d)
	}
	begin := time.Now()
	if out, err := run(localkube, args...); err != nil {
		_, _ = run(localkube, "down", "--dir", dir)
		return nil, fmt.Errorf("%s up failed: %s (logs kept in %s/logs)", localkube, lastLine(out, err), dir)
	}
	keep := opts.KeepDir
	stops = append(stops, func() {
		if out, err := run(localkube, "down", "--dir", dir); err != nil {
			fmt.Fprintf(os.Stderr, "localcluster: down: %s\n", lastLine(out, err))
		}
		if keep {
			fmt.Fprintf(os.Stderr, "localcluster: cluster dir kept: %s\n", dir)
			return
		}
		_ = os.RemoveAll(tmp)
	})
	kubeconfig := filepath.Join(dir, "kubeconfig")
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = 100, 200
	if testing.Verbose() {
		fmt.Printf("localcluster: cluster up in %.1fs (%s)\n", time.Since(begin).Seconds(), dir)
	}
	return &cluster{dir: dir, kubeconfig: kubeconfig, config: cfg}, nil
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
	root, err := testbin.RepoRoot()
	if err != nil {
		return "", err
	}
	p := filepath.Join(root, "bin", "localkube")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s not found: run `make localkube` in %s first", p, root)
	}
	return p, nil
}

func get(t testing.TB) *cluster {
	t.Helper()
	if !inRun {
		t.Fatal("localcluster: no cluster: call os.Exit(localcluster.Run(m)) from TestMain")
	}
	startOnce.Do(func() { current, startErr = start() })
	if startErr != nil {
		t.Fatal("localcluster: ", startErr)
	}
	return current
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
	if root, err := testbin.RepoRoot(); err == nil {
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
