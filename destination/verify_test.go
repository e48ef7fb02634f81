package destination

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshtls/ca/pki"
)

// serveTLS serves cert on a loopback port, completing handshakes only.
func serveTLS(t *testing.T, cert *tls.Certificate) string {
	t.Helper()
	cfg := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		if cert == nil {
			return nil, net.ErrClosed
		}
		return cert, nil
	}}
	l, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); _ = c.Close() }()
		}
	}()
	return l.Addr().String()
}

func leafFor(t *testing.T, r *pki.Root, identity string, lifetime time.Duration) *tls.Certificate {
	t.Helper()
	l, err := r.Issue(identity, lifetime, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

func TestProbeIdentity(t *testing.T) {
	root, _, err := pki.NewRoot("test root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	foreign, _, err := pki.NewRoot("foreign root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	_ = closed.Close()

	for _, tc := range []struct {
		name    string
		addr    string
		later   time.Duration // probe this far in the future
		wantErr string
	}{
		{name: "serves the identity", addr: serveTLS(t, leafFor(t, root, webIdentity, time.Hour))},
		{name: "another identity", addr: serveTLS(t, leafFor(t, root, "vote.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local", time.Hour)), wantErr: "another identity"},
		{name: "foreign root", addr: serveTLS(t, leafFor(t, foreign, webIdentity, time.Hour)), wantErr: "unknown authority"},
		{name: "expired", addr: serveTLS(t, leafFor(t, root, webIdentity, 10*time.Second)), later: 5 * time.Minute, wantErr: "not valid now"},
		{name: "no certificate", addr: serveTLS(t, nil), wantErr: "remote error"},
		{name: "nothing listening", addr: closedAddr, wantErr: "refused"},
	} {
		now := func() time.Time { return time.Now().Add(tc.later) }
		_, err := probeIdentity(context.Background(), tc.addr, webIdentity, root.Pool(), 5*time.Second, now)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestVerifierFollowsAnchorsAndExpiry: a verifier whose anchors rotate
// vouches for a pod issued under the new root once told the anchors
// changed (it read them once at start before, and never did); and a pod
// that passed is checked again once the certificate it served expires,
// rather than being trusted while it keeps its IP.
func TestVerifierFollowsAnchorsAndExpiry(t *testing.T) {
	oldRoot, _, err := pki.NewRoot("old root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	newRoot, _, err := pki.NewRoot("new root", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bundle := filepath.Join(dir, "trust-anchors.pem")
	if err := os.WriteFile(bundle, oldRoot.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	anchors := &AnchorsFile{Path: bundle}
	if err := anchors.Load(); err != nil {
		t.Fatal(err)
	}
	var offset atomic.Int64
	woke := make(chan string, 100)
	v := newHandshakeVerifier(ctx, anchors.Pool, slog.New(slog.DiscardHandler), func(ns, _ string) { woke <- ns })
	v.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	anchors.Changed = v.forgetAll
	go anchors.Watch(ctx, 100*time.Millisecond)

	host, port, _ := net.SplitHostPort(serveTLS(t, leafFor(t, newRoot, webIdentity, time.Hour)))
	v.port, _ = strconv.Atoi(port)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web-1", UID: "uid-1"}, Status: corev1.PodStatus{PodIP: host}}
	settle := func() bool {
		for range 50 {
			if v.serves(pod, webIdentity) {
				return true
			}
			select {
			case <-woke:
			case <-time.After(200 * time.Millisecond):
			}
			v.mu.Lock()
			if pc := v.pods[pod.UID]; pc != nil && !pc.running {
				pc.next = time.Time{} // retry now, not after the backoff
			}
			v.mu.Unlock()
		}
		return false
	}
	if settle() {
		t.Fatal("a certificate from a root not in the anchors was vouched for")
	}
	// The CA rotates: the bundle now holds the new root.
	if err := os.WriteFile(bundle, newRoot.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if !settle() {
		t.Fatal("after the bundle changed, the pod issued under the new root is still not vouched for")
	}
	// Two hours on, the certificate the pod served has expired: the pod
	// is checked again, and the expired one is not vouched for.
	offset.Store(int64(2 * time.Hour))
	if settle() {
		t.Fatal("a pod whose served certificate expired is still vouched for")
	}
}
