package check

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
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
