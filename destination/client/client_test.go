//go:build integration

package client

// End-to-end tests: the real destination server on a real local
// Kubernetes, reached over real gRPC on loopback.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
	"meshtls/destination"
	"meshtls/proxy/discovery"
	"meshtls/testutil/localcluster"
)

func TestMain(m *testing.M) { os.Exit(localcluster.Run(m)) }

// server is a destination server whose gRPC side can be stopped and
// started again on the same address, as a restarted controller would be.
type server struct {
	t    *testing.T
	srv  *destination.Server
	addr string
	tls  *tls.Config // nil: plain text only
	g    *grpc.Server
}

func startServer(t *testing.T, client kubernetes.Interface, tlsCfg *tls.Config) *server {
	t.Helper()
	srv, err := destination.New(client, destination.Config{ControlNamespace: "linkerd"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	s := &server{t: t, srv: srv, addr: "127.0.0.1:0", tls: tlsCfg}
	s.start()
	t.Cleanup(func() {
		s.stop()
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

func (s *server) start() {
	s.t.Helper()
	var l net.Listener
	var err error
	// The port is held in TIME_WAIT at most by clients, not by a listener;
	// retry briefly in case the old listener's close is still settling.
	for i := 0; i < 50; i++ {
		if l, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen %s: %v", s.addr, err)
	}
	s.addr = l.Addr().String()
	opts := destination.ServerOptions()
	if s.tls != nil {
		// As cmd/controller serves it.
		opts = append(opts, grpc.Creds(destination.EitherCredentials(s.tls)))
	}
	s.g = grpc.NewServer(opts...)
	s.srv.Register(s.g)
	go func() { _ = s.g.Serve(l) }()
}

func (s *server) stop() {
	if s.g != nil {
		s.g.Stop()
		s.g = nil
	}
}

func selectorless(t *testing.T, client kubernetes.Interface, ns, name string, port int32, ips ...string) *discoveryv1.EndpointSlice {
	t.Helper()
	ctx := context.Background()
	if _, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "tcp", Port: port, TargetPort: intstr.FromInt32(port)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-manual", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("tcp"), Port: ptr(port)}},
	}
	for _, ip := range ips {
		slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{ip}})
	}
	slice, err := client.DiscoveryV1().EndpointSlices(ns).Create(ctx, slice, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return slice
}

func ptr[T any](v T) *T { return &v }

func resolve(t *testing.T, c *Client, target string, timeout time.Duration) ([]discovery.Endpoint, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Resolve(ctx, target)
}

func addrs(eps []discovery.Endpoint) []string {
	var out []string
	for _, e := range eps {
		out = append(out, e.Addr.String())
	}
	return out
}

// eventually polls Resolve until cond holds.
func eventually(t *testing.T, what string, c *Client, target string, cond func([]discovery.Endpoint, error) bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	var eps []discovery.Endpoint
	var err error
	for time.Now().Before(deadline) {
		eps, err = resolve(t, c, target, 5*time.Second)
		if cond(eps, err) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: last answer %v, %v", what, addrs(eps), err)
}

func TestResolveAcrossServerRestart(t *testing.T) {
	client := localcluster.Client(t)
	ns := localcluster.Namespace(t)
	srv := startServer(t, client, nil)
	slice := selectorless(t, client, ns, "db", 5432, "192.0.2.30")

	c, err := New(Config{Addr: srv.addr, ContextToken: "ns:test pod:client", MinBackoff: 50 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()

	target := "db." + ns + ".svc.cluster.local:5432"
	eps, err := resolve(t, c, target, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || eps[0].Addr != netip.MustParseAddrPort("192.0.2.30:5432") || eps[0].Labels["service"] != "db" || eps[0].Labels["namespace"] != ns || eps[0].Identity != "" {
		t.Fatalf("Resolve = %+v", eps)
	}
	if _, err := resolve(t, c, "nope."+ns+":80", 30*time.Second); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("missing Service: err = %v, want ErrNotFound", err)
	}
	if _, err := resolve(t, c, "api.example.org:443", 30*time.Second); !errors.Is(err, discovery.ErrNotFound) {
		t.Fatalf("name outside the cluster: err = %v, want ErrNotFound", err)
	}

	// The controller goes away. What is known is still served, at once.
	srv.stop()
	slice.Endpoints = append(slice.Endpoints, discoveryv1.Endpoint{Addresses: []string{"192.0.2.31"}})
	if _, err := client.DiscoveryV1().EndpointSlices(ns).Update(context.Background(), slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A cached answer does not wait for the server; the deadline only has
	// to be longer than a loaded machine's scheduling delay, since without
	// the cache Resolve would block until it and fail with ErrNoAnswer.
	for i := 0; i < 5; i++ {
		eps, err := resolve(t, c, target, 5*time.Second)
		if err != nil || len(eps) != 1 || eps[0].Addr.String() != "192.0.2.30:5432" {
			t.Fatalf("with the server down: %v, %v; want the cached 192.0.2.30:5432", addrs(eps), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A destination never asked before has no answer to give.
	newTarget := "db." + ns + ":5432"
	if _, err := resolve(t, c, newTarget, 300*time.Millisecond); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("new target with the server down: err = %v, want ErrNoAnswer", err)
	}

	// The controller is back on its address: the streams reopen and catch
	// up with what changed meanwhile.
	srv.start()
	eventually(t, "after restart", c, target, func(eps []discovery.Endpoint, err error) bool {
		return err == nil && len(eps) == 2 && eps[1].Addr.String() == "192.0.2.31:5432"
	})
	eventually(t, "new target after restart", c, newTarget, func(eps []discovery.Endpoint, err error) bool {
		return err == nil && len(eps) == 2
	})
}

// writeCreds issues real certificates from a fresh root and writes them as
// the kubelet would mount them, returning the root's pool.
func writeCreds(t *testing.T, dir, identity string, root *pki.Root) (cert, key string) {
	t.Helper()
	leaf, err := root.Issue(identity, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, identity+".crt"), filepath.Join(dir, identity+".key")
	if err := os.WriteFile(cert, leaf.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, leaf.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// The controller serves its identity over TLS; a proxy with a certificate
// resolves over mutual TLS, checking that identity; a proxy injected
// without TLS (which cmd/proxy dials in plain text: it has no anchors to
// verify the controller with) resolves in plain text on the same port; a
// client expecting another identity gets no answer rather than an
// unauthenticated one. The proxy's own ControllerTLS, including a TLS pod
// without anchors, is tested in proxy.TestControllerTLS.
func TestResolveOverMutualTLS(t *testing.T) {
	client := localcluster.Client(t)
	ns := localcluster.Namespace(t)
	dir := t.TempDir()
	root, _, err := pki.NewRoot(contract.RootCommonName("linkerd"), time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	anchors := filepath.Join(dir, "trust-anchors.pem")
	if err := os.WriteFile(anchors, root.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ctrlID := contract.ControllerIdentity(contract.ControllerComponent, "linkerd")
	cCert, cKey := writeCreds(t, dir, ctrlID, root)
	files := &destination.CertFiles{Cert: cCert, Key: cKey, TrustAnchors: anchors}
	if err := files.Load(); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, client, files.ServerConfig())
	selectorless(t, client, ns, "db", 5432, "192.0.2.40")
	target := "db." + ns + ":5432"

	proxyID := contract.Identity("web", contract.KindDeployment, ns, "linkerd")
	pCert, pKey := writeCreds(t, dir, proxyID, root)
	kp, err := tls.LoadX509KeyPair(pCert, pKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root.CertPEM)
	var mu sync.Mutex
	var seen []string
	mtls := &tls.Config{
		MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{kp}, RootCAs: pool, ServerName: ctrlID,
		VerifyConnection: func(cs tls.ConnectionState) error {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, cs.PeerCertificates[0].DNSNames...)
			return nil
		},
	}
	for _, tc := range []struct {
		name string
		cfg  *tls.Config
	}{{"mutual TLS", mtls}, {"plain text", nil}} {
		c, err := New(Config{Addr: srv.addr, TLS: tc.cfg})
		if err != nil {
			t.Fatal(err)
		}
		eps, err := resolve(t, c, target, 30*time.Second)
		_ = c.Close()
		if err != nil || len(eps) != 1 || eps[0].Addr.String() != "192.0.2.40:5432" {
			t.Fatalf("%s: %v, %v", tc.name, addrs(eps), err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) == 0 || seen[0] != ctrlID {
		t.Fatalf("server certificate names %v, want %s", seen, ctrlID)
	}

	// A client certificate from another root is refused by the server.
	foreign, _, err := pki.NewRoot("foreign root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	fDir := t.TempDir()
	fCert, fKey := writeCreds(t, fDir, proxyID, foreign)
	fkp, err := tls.LoadX509KeyPair(fCert, fKey)
	if err != nil {
		t.Fatal(err)
	}
	forged := mtls.Clone()
	// Go's client would withhold a certificate the server's CA list does
	// not match; a forger sends it anyway.
	forged.Certificates = nil
	forged.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &fkp, nil }
	forged.VerifyConnection = nil
	fc, err := New(Config{Addr: srv.addr, TLS: forged, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = fc.Close() }()
	if eps, err := resolve(t, fc, target, 2*time.Second); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("foreign client certificate: %v, %v; want ErrNoAnswer", addrs(eps), err)
	}

	wrong := mtls.Clone()
	wrong.ServerName = "someone-else.deployment.linkerd.linkerd-managed.linkerd.svc.cluster.local"
	wrong.VerifyConnection = nil
	c, err := New(Config{Addr: srv.addr, TLS: wrong, MinBackoff: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if eps, err := resolve(t, c, target, 2*time.Second); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("wrong controller identity: %v, %v; want ErrNoAnswer", addrs(eps), err)
	}
}
