package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"meshtls/localkube/internal/procutil"
)

// oneLine asserts that a failing command said one line naming want.
func oneLine(t *testing.T, out string, err error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want a non-zero exit, got success: %s", out)
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("want a non-zero exit code, got %v", err)
	}
	if strings.Count(out, "\n") != 0 {
		t.Errorf("want one line, got:\n%s", out)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output %q does not name %q", out, w)
		}
	}
}

func TestUpWithAMissingBinarySaysToRunMake(t *testing.T) {
	t.Parallel()
	// A copy of localkube alone in a dir: etcd and the others are missing.
	bin := t.TempDir()
	data, err := os.ReadFile(localkube)
	if err != nil {
		t.Fatal(err)
	}
	lonely := filepath.Join(bin, "localkube")
	if err := os.WriteFile(lonely, data, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(lonely, "up", "--dir", t.TempDir()).CombinedOutput()
	oneLine(t, strings.TrimSpace(string(out)), err, filepath.Join(bin, "etcd"), "make localkube")
}

func TestUpOnABusyPortNamesThePort(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	out, err := lk("up", "--dir", dir, "--apiserver-port", fmt.Sprint(port))
	t.Cleanup(func() {
		if out, err := lk("down", "--dir", dir); err != nil {
			t.Logf("down: %v\n%s", err, out)
		}
	})
	oneLine(t, out, err, fmt.Sprintf("127.0.0.1:%d", port), "busy", "--apiserver-port")
	if left := procutil.Marked(dir); len(left) > 0 {
		t.Errorf("failed up left processes %v", left)
	}
}

func TestUpRecoversAStaleDirAndDownStopsEverything(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	t.Cleanup(func() {
		if out, err := lk("down", "--dir", dir); err != nil {
			t.Logf("down: %v\n%s", err, out)
		}
	})
	if out, err := lk("up", "--dir", dir, "--bin-dir", appBinDir); err != nil {
		t.Fatalf("up: %v\n%s", err, out)
	}
	var st struct{ Pid int }
	b, _ := os.ReadFile(filepath.Join(dir, "state.json"))
	if err := json.Unmarshal(b, &st); err != nil || st.Pid == 0 {
		t.Fatalf("state.json: %v %s", err, b)
	}
	// Kill localkube itself hard, as an OOM killer or a closed CI job would.
	if err := syscall.Kill(st.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Its threads take a moment to go after the leader is a zombie; until
	// then it still holds the dir's lock and counts as running.
	out, err := lk("status", "--dir", dir)
	for deadline := time.Now().Add(10 * time.Second); err == nil && time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		out, err = lk("status", "--dir", dir)
	}
	oneLine(t, out, err, "stale", "localkube up")

	out, err = lk("up", "--dir", dir, "--bin-dir", appBinDir)
	if err != nil {
		t.Fatalf("up on a stale dir: %v\n%s", err, out)
	}
	if !strings.Contains(out, "recovering") {
		t.Errorf("up on a stale dir did not say it recovered: %s", out)
	}
	if out, err := lk("status", "--dir", dir); err != nil || !strings.Contains(out, "kube-apiserver") {
		t.Errorf("status after recovery: %v\n%s", err, out)
	}
	if len(procutil.Marked(dir)) < 3 {
		t.Errorf("want etcd, kube-apiserver and kube-controller-manager running, got pids %v", procutil.Marked(dir))
	}
	if out, err := lk("down", "--dir", dir); err != nil {
		t.Fatalf("down: %v\n%s", err, out)
	}
	if left := procutil.Marked(dir); len(left) > 0 {
		t.Errorf("down left processes %v", left)
	}
	if running := exec.CommandContext(context.Background(), localkube, "status", "--dir", dir).Run(); running == nil {
		t.Error("status says running after down")
	}
}

func TestUpWithoutRootRefusesInOneLine(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to drop to another uid; the e2e cluster needs root anyway")
	}
	dir, err := os.MkdirTemp("", "localkube-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(localkube, "up", "--dir", dir)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	oneLine(t, strings.TrimSpace(string(out)), err, "needs root")
}
