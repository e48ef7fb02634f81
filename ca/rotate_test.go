//go:build integration

package ca

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// mountedDeployment is a meshed Deployment whose pod really runs on the
// local kubelet (its container never starts: the image maps to nothing),
// so the kubelet writes and updates its Secret and bundle volumes exactly
// as it would for a proxy.
func mountedDeployment(name, ns, controlNS string) *appsv1.Deployment {
	d := meshedDeployment(name, ns, controlNS)
	spec := &d.Spec.Template.Spec
	spec.SchedulerName = ""
	yes := true
	spec.Volumes = []corev1.Volume{
		{Name: contract.TrustAnchorsVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: contract.BundleConfigMap}, Optional: &yes}}},
		{Name: contract.IdentityVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: contract.SecretName(name, contract.KindDeployment), Optional: &yes}}},
	}
	spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
		{Name: contract.TrustAnchorsVolume, MountPath: contract.TrustAnchorsDir, ReadOnly: true},
		{Name: contract.IdentityVolume, MountPath: contract.IdentityDir, ReadOnly: true},
	}
	return d
}

// podFiles reads a pod's mounted identity the way a careful proxy does:
// each volume through one resolution of its ..data link, so a kubelet
// swap between two reads never pairs an old certificate with a new key.
type podFiles struct{ dir string }

func (p podFiles) read() (tls.Certificate, *x509.CertPool, error) {
	id, err := filepath.EvalSymlinks(filepath.Join(p.dir, "volumes", contract.IdentityVolume, "..data"))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(id, corev1.TLSCertKey), filepath.Join(id, corev1.TLSPrivateKeyKey))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	ta, err := filepath.EvalSymlinks(filepath.Join(p.dir, "volumes", contract.TrustAnchorsVolume, "..data"))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	bundle, err := os.ReadFile(filepath.Join(ta, contract.BundleKey))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(bundle) {
		return tls.Certificate{}, nil, errors.New("bundle holds no certificate")
	}
	return cert, pool, nil
}

func podDirOf(t *testing.T, client kubernetes.Interface, ns, app string) podFiles {
	t.Helper()
	var dir string
	localcluster.Eventually(t, 60*time.Second, func() error {
		pods, err := client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return err
		}
		if len(pods.Items) != 1 {
			return fmt.Errorf("%d %s pods", len(pods.Items), app)
		}
		p := pods.Items[0]
		dir = filepath.Join(localcluster.Dir(t), "pods", p.Namespace+"_"+p.Name+"_"+string(p.UID))
		_, _, err = podFiles{dir}.read()
		return err
	})
	return podFiles{dir}
}

// bundleCerts counts the certificates in the pod's trust bundle.
func (p podFiles) bundleCerts() (int, error) {
	b, err := os.ReadFile(filepath.Join(p.dir, "volumes", contract.TrustAnchorsVolume, contract.BundleKey))
	if err != nil {
		return 0, err
	}
	certs, err := pki.ParseCerts(b)
	return len(certs), err
}

// leafIssuer is the fingerprint of the issuer that the pod's leaf names
// in its chain.
func (p podFiles) leafIssuer() (string, error) {
	cert, _, err := p.read()
	if err != nil {
		return "", err
	}
	if len(cert.Certificate) < 2 {
		return "", errors.New("the leaf's chain has no issuer")
	}
	issuer, err := x509.ParseCertificate(cert.Certificate[1])
	if err != nil {
		return "", err
	}
	return pki.Fingerprint(issuer), nil
}

type handshakeStats struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	issuers    map[string]int // server leaf issuer fingerprint → handshakes
}

func (h *handshakeStats) fail(side string, err error) {
	h.failed.Add(1)
	h.mu.Lock()
	if len(h.errs) < 10 {
		h.errs = append(h.errs, side+": "+err.Error())
	}
	h.mu.Unlock()
}

// Defect 2: a rotation under steady mTLS between two workloads that read
// their certificates and bundles from the files the kubelet writes into
// their pods, with two CA replicas following the root Secret.
func TestRotationKeepsHandshakesWorking(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	cfg := Config{ControlNamespace: controlNS, LeafLifetime: time.Hour,
		LeaseDuration: 8 * time.Second, RenewDeadline: 6 * time.Second, RetryPeriod: 500 * time.Millisecond}
	cfgA, cfgB := cfg, cfg
	cfgA.Identity, cfgB.Identity = "ca-a", "ca-b"
	a := startCA(t, cfgA)
	b := startCA(t, cfgB)
	for _, n := range []string{"server", "client"} {
		if _, err := client.AppsV1().Deployments(appNS).Create(context.Background(), mountedDeployment(n, appNS, controlNS), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	serverPod := podDirOf(t, client, appNS, "server")
	clientPod := podDirOf(t, client, appNS, "client")
	oldRoot := a.Root()
	serverID := contract.Identity("server", contract.KindDeployment, appNS, controlNS)

	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool, err := serverPod.read()
			if err != nil {
				return nil, err
			}
			return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	stats := &handshakeStats{issuers: map[string]int{}}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				tc := conn.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					stats.fail("server", err)
					return
				}
				_, _ = tc.Write([]byte{1})
			})
		}
	})
	stop := make(chan struct{})
	stopClient := sync.OnceFunc(func() { close(stop) })
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			cert, pool, err := clientPod.read()
			if err != nil {
				stats.fail("client files", err)
				continue
			}
			conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", l.Addr().String(), &tls.Config{
				MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: serverID, Certificates: []tls.Certificate{cert}})
			if err != nil {
				stats.fail("client", err)
				continue
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			// TLS 1.3 servers judge the client's certificate after the
			// client's handshake returns: the byte proves they accepted it.
			if _, err := conn.Read(make([]byte, 1)); err != nil {
				stats.fail("client read", err)
				conn.Close()
				continue
			}
			chain := conn.ConnectionState().PeerCertificates
			conn.Close()
			stats.ok.Add(1)
			stats.mu.Lock()
			stats.issuers[pki.Fingerprint(chain[1])]++
			stats.mu.Unlock()
		}
	})
	t.Cleanup(func() {
		stopClient()
		l.Close()
		wg.Wait()
	})
	localcluster.Eventually(t, 30*time.Second, func() error {
		if n := stats.ok.Load(); n < 20 {
			return fmt.Errorf("%d handshakes before the rotation", n)
		}
		return nil
	})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	start := time.Now()
	// Rotate waits PropagationDelay for kubelets to deliver each step's
	// Secrets; a kubelet that is slower on a loaded machine would fail
	// handshakes for a reason outside the rotation. So before each wait
	// the test also waits until both pods' files show the step delivered:
	// what is tested is the order of the steps, given delivery.
	delivered := func(what string, ok func(podFiles) error) {
		t.Helper()
		start := time.Now()
		localcluster.Eventually(t, 2*time.Minute, func() error {
			for _, p := range []podFiles{serverPod, clientPod} {
				if err := ok(p); err != nil {
					return fmt.Errorf("%s: %w", what, err)
				}
			}
			return nil
		})
		t.Logf("%s in both pods' files %s after rotate asked", what, time.Since(start).Round(time.Millisecond))
	}
	oldIssuer := pki.Fingerprint(oldRoot.Cert)
	res, err := Rotate(ctx, client, RotateOptions{ControlNamespace: controlNS, PropagationDelay: time.Second,
		Progress: func(step, msg string) {
			t.Logf("rotate [%s] %s", step, msg)
			if !strings.Contains(msg, "for kubelets to deliver them") {
				return
			}
			switch step {
			case contract.RotationAddAnchors:
				delivered("both roots in the trust bundle", func(p podFiles) error {
					if n, err := p.bundleCerts(); err != nil || n < 2 {
						return fmt.Errorf("%d roots (%v)", n, err)
					}
					return nil
				})
			case contract.RotationReissue:
				delivered("a leaf from the new root", func(p podFiles) error {
					if fp, err := p.leafIssuer(); err != nil || fp == oldIssuer {
						return fmt.Errorf("leaf still from the old root (%v)", err)
					}
					return nil
				})
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("rotation took %s: %+v", time.Since(start).Round(time.Millisecond), res)
	okAt := stats.ok.Load()
	localcluster.Eventually(t, 30*time.Second, func() error {
		if n := stats.ok.Load() - okAt; n < 20 {
			return fmt.Errorf("%d handshakes after the rotation", n)
		}
		return nil
	})
	stopClient()

	if n := stats.failed.Load(); n != 0 {
		t.Errorf("%d failed handshakes across the rotation (of %d): %v", n, stats.ok.Load()+n, stats.errs)
	}
	newRoot := a.Root()
	if newRoot.Cert.Equal(oldRoot.Cert) {
		t.Fatal("replica A still issues from the old root")
	}
	if !b.Root().Cert.Equal(newRoot.Cert) {
		t.Error("replicas disagree on the root after the rotation")
	}
	stats.mu.Lock()
	t.Logf("handshakes: %d ok; by server issuer: %v", stats.ok.Load(), stats.issuers)
	if stats.issuers[pki.Fingerprint(oldRoot.Cert)] == 0 || stats.issuers[pki.Fingerprint(newRoot.Cert)] == 0 {
		t.Error("handshakes did not cover both roots' leaves")
	}
	stats.mu.Unlock()
	cm, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[contract.BundleKey] != string(newRoot.AnchorsPEM) {
		t.Error("the old root is still in the bundle after the rotation")
	}
	root, err := client.CoreV1().Secrets(controlNS).Get(context.Background(), contract.RootSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := root.Annotations[contract.RotationAnnotation]; ok || len(root.Data[contract.RootNextKeyKey]) > 0 {
		t.Errorf("root Secret still carries rotation state: %v", root.Annotations)
	}
}

// The disaster path: the root Secret is gone. The running CA refuses to
// issue; `linkerd ca rotate` makes a new root whose bundles keep the old
// one until every leaf has moved, and the CA recovers without a restart.
func TestRotateReplacesALostRoot(t *testing.T) {
	client := clusterClient(t)
	controlNS, appNS := namespaces(t, client)
	ca := startCA(t, Config{ControlNamespace: controlNS, Identity: "ca-0"})
	createDeployments(t, client, appNS, controlNS, "web")
	name := contract.SecretName("web", contract.KindDeployment)
	waitSecret(t, client, appNS, name, nil)
	oldRoot := ca.Root()
	localcluster.Eventually(t, 30*time.Second, func() error {
		_, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
		return err
	})
	if err := client.CoreV1().Secrets(controlNS).Delete(context.Background(), contract.RootSecret, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	localcluster.Eventually(t, 30*time.Second, func() error {
		if ca.Ready() {
			return errors.New("CA still ready without its root")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var sawBoth atomic.Bool
	res, err := Rotate(ctx, client, RotateOptions{ControlNamespace: controlNS, PropagationDelay: time.Second,
		Progress: func(step, msg string) {
			t.Logf("rotate [%s] %s", step, msg)
			if step == contract.RotationReissue {
				cm, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
				if err == nil && strings.Count(cm.Data[contract.BundleKey], "BEGIN CERTIFICATE") == 2 {
					sawBoth.Store(true)
				}
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if !res.LostRoot {
		t.Error("result does not say the root was lost")
	}
	newRoot := ca.Root()
	if newRoot.Cert.Equal(oldRoot.Cert) || !ca.Ready() {
		t.Fatalf("CA did not recover on a new root (ready: %q)", ca.NotReadyReason())
	}
	if !sawBoth.Load() {
		t.Error("bundles did not hold the old and the new root while leaves moved")
	}
	s, err := client.CoreV1().Secrets(appNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newRoot.Check(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey], contract.Identity("web", contract.KindDeployment, appNS, controlNS), time.Now()); err != nil {
		t.Errorf("leaf after the rotation: %v", err)
	}
	cm, err := client.CoreV1().ConfigMaps(appNS).Get(context.Background(), contract.BundleConfigMap, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[contract.BundleKey] != string(newRoot.AnchorsPEM) {
		t.Error("the lost root is still in the bundle after the rotation")
	}
}
