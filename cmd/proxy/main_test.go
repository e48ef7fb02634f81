package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"meshtls/contract"
	"meshtls/testutil/testbin"
)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestRunsAsAPod starts the real binary with the environment inject
// writes, before the CA has written the pod's Secret: it serves, says once
// why TLS is off, answers /live, holds /ready, and stops on SIGTERM.
func TestRunsAsAPod(t *testing.T) {
	dir := t.TempDir()
	bin := testbin.Command(t, "proxy")
	admin := freePort(t)
	cmd := exec.Command(bin)
	cmd.Env = []string{
		contract.EnvLog + "=warn,linkerd2_proxy=info",
		contract.EnvInboundListenAddr + "=" + freePort(t),
		contract.EnvOutboundListenAddr + "=" + freePort(t),
		contract.EnvAdminListenAddr + "=" + admin,
		contract.EnvTapListenAddr + "=" + freePort(t),
		contract.EnvPodNamespace + "=ns", contract.EnvPodName + "=web-1",
		contract.EnvTLSPodIdentity + "=web.deployment.ns.linkerd-managed.linkerd.svc.cluster.local",
		contract.EnvTLSCert + "=" + filepath.Join(dir, "identity", "tls.crt"),
		contract.EnvTLSPrivateKey + "=" + filepath.Join(dir, "identity", "tls.key"),
		contract.EnvTLSTrustAnchors + "=" + filepath.Join(dir, "anchors", "trust-anchors.pem"),
	}
	var stderr syncBuf
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	getStatus := func(path string) (int, string) {
		resp, err := http.Get("http://" + admin + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := getStatus("/live"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/live never answered; stderr:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := getStatus("/ready"); code != 503 || !strings.Contains(body, "waiting") {
		t.Errorf("/ready before the certificate: %d %q", code, body)
	}
	if code, body := getStatus("/metrics"); code != 200 || !strings.Contains(body, `tls_config_reload_total{status="failure"} 1`) {
		t.Errorf("/metrics: %d, reload failure not counted", code)
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop on SIGTERM")
	}
	log := stderr.String()
	if n := strings.Count(log, "TLS disabled"); n != 1 {
		t.Errorf("want one 'TLS disabled' line, got %d:\n%s", n, log)
	}
}
