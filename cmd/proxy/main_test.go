package main

import (
	"bytes"
	"context"
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

	"google.golang.org/grpc"

	"meshtls/contract"
	pb "meshtls/proto/destination"
	netpb "meshtls/proto/net"
	"meshtls/proxy"
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
		// Discovery configured, as inject writes it, and unreachable.
		contract.EnvDestinationAddr + "=" + freePort(t),
		// Shut down soon after SIGTERM: nothing is in flight.
		contract.EnvDrainDelay + "=500ms",
		// As inject sets it from a CPU limit of 1 (Go's own cgroup-aware
		// default never goes below 2).
		contract.EnvCores + "=1",
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
	} else if !strings.Contains(body, "\ngo_sched_gomaxprocs_threads 1\n") {
		t.Errorf("GOMAXPROCS not set from %s=1", contract.EnvCores)
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

// plainDestination is a Destination service in plain text that names one
// endpoint for any target.
type plainDestination struct {
	pb.UnimplementedDestinationServer
}

func (plainDestination) Get(_ *pb.GetDestination, s grpc.ServerStreamingServer[pb.Update]) error {
	w := &pb.WeightedAddr{Addr: &netpb.TcpAddress{Ip: []byte{10, 1, 2, 3}, Port: 80}, Weight: 1}
	if err := s.Send(&pb.Update{Update: &pb.Update_Add{Add: &pb.WeightedAddrSet{Addrs: []*pb.WeightedAddr{w}}}}); err != nil {
		return err
	}
	<-s.Context().Done()
	return nil
}

// TestDiscoveryWithoutTLS: a pod injected without TLS has no trust
// anchors to verify the controller with, so it asks the destination
// service in plain text, and gets answers; it used to dial TLS it could
// never verify, and every outbound request waited out the resolve
// deadline.
func TestDiscoveryWithoutTLS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	pb.RegisterDestinationServer(g, plainDestination{})
	go func() { _ = g.Serve(l) }()
	t.Cleanup(g.Stop)
	cfg, err := proxy.FromEnv(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	p := proxy.New(cfg)
	r, err := newResolver(l.Addr().String(), controllerTLS(cfg, p), "ns:test pod:test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.(io.Closer).Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eps, err := r.Resolve(ctx, "10.1.2.3:80")
	if err != nil || len(eps) != 1 {
		t.Fatalf("resolve without TLS: %v %v", eps, err)
	}
	tlsCfg := cfg
	tlsCfg.Identity, tlsCfg.CertFile, tlsCfg.KeyFile, tlsCfg.TrustAnchorsFile = "a.deployment.ns.linkerd-managed.linkerd.svc.cluster.local", "c", "k", "t"
	if controllerTLS(tlsCfg, p) == nil {
		t.Error("a TLS pod would dial the destination service in plain text")
	}
}
