package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshtls/contract"
)

// serveTLS runs a real Go TLS server on a free loopback port that presents
// cert only to clients asking for serverName, as a proxy does.
func serveTLS(t *testing.T, certPEM, keyPEM []byte, serverName string) string {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != serverName {
				return nil, errors.New("unknown SNI " + hello.ServerName)
			}
			return &pair, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				_ = c.(*tls.Conn).Handshake()
				_ = c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

func TestServedCertificateAgainstRealTLSServer(t *testing.T) {
	root := newSigner(t, nil)
	certPEM, keyPEM := root.leaf(t, nil)
	secretLeaf, _ := x509.ParseCertificate(mustDER(t, certPEM))
	addr := serveTLS(t, certPEM, keyPEM, id)
	d := &net.Dialer{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	served, err := ServedCertificate(ctx, d.DialContext, addr, id)
	if err != nil {
		t.Fatal(err)
	}
	if why := compareServed(served, secretLeaf.SerialNumber); why != "" {
		t.Errorf("same certificate reported as different: %s", why)
	}

	// The Secret has moved on (another serial) but the proxy has not.
	otherPEM, _ := root.leaf(t, func(c *x509.Certificate) {
		c.SerialNumber = secretLeaf.SerialNumber.Add(secretLeaf.SerialNumber, secretLeaf.SerialNumber)
	})
	other, _ := x509.ParseCertificate(mustDER(t, otherPEM))
	if why := compareServed(served, other.SerialNumber); !strings.Contains(why, "its Secret holds serial") {
		t.Errorf("mismatch not reported: %q", why)
	}

	// The wrong SNI gets no certificate: a handshake error, not "not serving".
	if _, err := ServedCertificate(ctx, d.DialContext, addr, "someone.else"); err == nil || errors.Is(err, errNotServing) {
		t.Errorf("wrong SNI: %v", err)
	}

	// Nothing listening: not serving, which the check skips with a note.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	_ = ln.Close()
	if _, err := ServedCertificate(ctx, d.DialContext, closed, id); !errors.Is(err, errNotServing) {
		t.Errorf("closed port: %v", err)
	}
}

func mustDER(t *testing.T, certPEM []byte) []byte {
	t.Helper()
	certs, err := parseFirst(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}

func parseFirst(certPEM []byte) ([]byte, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil {
		return nil, errors.New("no PEM")
	}
	return b.Bytes, nil
}

// servedCheck end to end over a pod: the dial to podIP:4143 is redirected
// to a real TLS server on loopback, which serves either the Secret's
// certificate or an older one.
func TestServedCheckNamesThePod(t *testing.T) {
	root := newSigner(t, nil)
	secretPEM, _ := root.leaf(t, nil)
	secretLeaf, _ := x509.ParseCertificate(mustDER(t, secretPEM))
	oldPEM, oldKey := root.leaf(t, func(c *x509.Certificate) { c.SerialNumber = big.NewInt(7) })

	pod := func(name string, running bool) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "emojivoto"}, Status: corev1.PodStatus{PodIP: "10.244.0.9"}}
		st := corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ImageNotMapped"}}
		if running {
			st = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
		}
		p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: contract.ProxyContainerName, State: st}}
		return p
	}
	dp := func(pods ...*corev1.Pod) *dataPlane {
		st := &ownerState{owner: owner{Kind: contract.KindDeployment, Namespace: "emojivoto", Name: "web"}, identity: id, pods: pods,
			findings: leafFindings{Serial: secretLeaf.SerialNumber}}
		return &dataPlane{owners: []*ownerState{st}, pods: pods}
	}
	dialTo := func(addr string) func(context.Context, string, string) (net.Conn, error) {
		return func(ctx context.Context, network, target string) (net.Conn, error) {
			if target != "10.244.0.9:4143" {
				t.Errorf("dialled %s, want the pod IP and inbound port", target)
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}
	cfg := Config{}.withDefaults()

	// The proxy serves an older certificate than its Secret holds.
	cfg.Dial = dialTo(serveTLS(t, oldPEM, oldKey, id))
	err := servedCheck(context.Background(), cfg, dp(pod("web-1", true)))
	var probs *ProblemsError
	if !errors.As(err, &probs) || len(probs.Problems) != 1 || probs.Problems[0].Object() != "po/web-1 -n emojivoto" ||
		!strings.Contains(probs.Problems[0].Remedy, "restart deploy/web -n emojivoto") {
		t.Fatalf("stale served certificate not reported per pod: %v", err)
	}

	// A pod whose proxy is not running is skipped with a note, not failed.
	err = servedCheck(context.Background(), cfg, dp(pod("web-2", false)))
	var noted *notedError
	if !errors.As(err, &noted) || noted.err != nil || !strings.Contains(strings.Join(noted.notes, " "), "emojivoto/web-2") {
		t.Errorf("not-running proxy: %v", err)
	}
}
