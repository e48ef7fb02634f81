//go:build integration

package ca

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

func controllerBinary(t *testing.T) string {
	t.Helper()
	return localcluster.Binary(t, "controller")
}

type caProcess struct {
	cmd   *exec.Cmd
	admin string
	logs  *syncBuffer
	exit  chan error
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var adminAddrRE = regexp.MustCompile(`msg="serving admin endpoints".* addr=(\S+)`)

func startProcess(t *testing.T, args ...string) *caProcess {
	t.Helper()
	cmd := exec.Command(controllerBinary(t), args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &caProcess{cmd: cmd, logs: &syncBuffer{}, exit: make(chan error, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.logs, line)
			if m := adminAddrRE.FindStringSubmatch(line); m != nil {
				select {
				case addr <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.exit <- cmd.Wait()
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
		}
		if strings.Contains(p.logs.String(), "PRIVATE KEY") {
			t.Error("private key in the CA's log")
		}
	})
	select {
	case p.admin = <-addr:
	case err := <-p.exit:
		p.exit <- err
	case <-time.After(30 * time.Second):
		t.Fatalf("no admin address logged:\n%s", p.logs.String())
	}
	return p
}

func get(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func rssKiB(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/%d/status", pid)
}

func TestControllerBinaryServesReadyAndMetrics(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	p := startProcess(t, "ca", "--kubeconfig", clusterKubeconfig(t), "--controller-namespace", controlNS,
		"--admin-addr", "127.0.0.1:0", "--leader-elect-identity", "proc-0")
	base := "http://" + p.admin
	localcluster.Eventually(t, 30*time.Second, func() error {
		code, body, err := get(base + "/ready")
		if err != nil || code != http.StatusOK {
			return fmt.Errorf("/ready: %d %q %v", code, body, err)
		}
		return nil
	})

	const owners = 50
	names := make([]string, owners)
	for i := range names {
		names[i] = fmt.Sprintf("svc-%02d", i)
	}
	createDeployments(t, client, appNS, controlNS, names...)
	localcluster.Eventually(t, 60*time.Second, func() error {
		list, err := client.CoreV1().Secrets(appNS).List(context.Background(), metav1.ListOptions{LabelSelector: contract.OwnerKindLabel})
		if err != nil {
			return err
		}
		if len(list.Items) != owners {
			return fmt.Errorf("%d of %d Secrets", len(list.Items), owners)
		}
		return nil
	})
	_, metrics, err := get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		fmt.Sprintf("linkerd_ca_certificates_issued_total %d", owners),
		"linkerd_ca_certificate_renewals_total 0",
		`linkerd_ca_errors_total{kind="secret"}`,
		"linkerd_ca_queue_depth",
		"linkerd_ca_issuance_duration_seconds_bucket",
		"linkerd_ca_leader 1",
		"linkerd_ca_ready 1",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	rss, err := rssKiB(p.cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CA RSS after issuing %d certificates: %.1f MiB", owners, float64(rss)/1024)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.exit:
		if err != nil {
			t.Errorf("CA exited with %v after SIGTERM:\n%s", err, p.logs.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("CA did not stop within 20s of SIGTERM")
	}
	// It released the Lease on the way out, so a successor need not wait.
	lease, err := client.CoordinationV1().Leases(controlNS).Get(context.Background(), "linkerd-ca", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lease.Spec.HolderIdentity; h != nil && *h != "" {
		t.Errorf("Lease still held by %q after shutdown", *h)
	}
}

func TestControllerBinaryBadInput(t *testing.T) {
	client := clusterClient(t)
	controlNS, _ := namespaces(t, client)
	if _, err := client.CoreV1().Secrets(controlNS).Create(context.Background(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.RootSecret},
		Data:       map[string][]byte{corev1.TLSCertKey: []byte("not a certificate"), corev1.TLSPrivateKeyKey: []byte("c2VjcmV0")},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"ca", "--kubeconfig", clusterKubeconfig(t), "--controller-namespace", controlNS, "--admin-addr", ""}, "refusing to start"},
		{[]string{"ca", "--kubeconfig", filepath.Join(t.TempDir(), "missing")}, "load kubeconfig"},
		{[]string{"ca", "--kubeconfig", clusterKubeconfig(t), "--cert-lifetime", "1s"}, "too short"},
		{[]string{"ca", "--kubeconfig", clusterKubeconfig(t), "--log-format", "xml"}, "unknown --log-format"},
	}
	for _, tc := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, controllerBinary(t), tc.args...).CombinedOutput()
		cancel()
		exit, ok := err.(*exec.ExitError)
		if !ok || exit.ExitCode() != 1 {
			t.Errorf("%v: err %v, want exit status 1\n%s", tc.args, err, out)
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "Error: ") || !strings.Contains(last, tc.want) {
			t.Errorf("%v: last line %q, want one Error line with %q", tc.args, last, tc.want)
		}
		if strings.Contains(string(out), "c2VjcmV0") || strings.Contains(string(out), "panic") {
			t.Errorf("%v: output leaks the key or panics:\n%s", tc.args, out)
		}
	}
}
