package destination

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

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
