package pki

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"
)

// The tap API's serving pair: a leaf (never a CA) for exactly its hosts,
// under a CA that can sign nothing but those names; CheckServing refuses
// a foreign key, a missing host, a foreign CA and a pair due for renewal.
func TestServing(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	hosts := []string{"linkerd-tap.mesh.svc", "linkerd-tap.mesh.svc.cluster.local"}
	s, err := NewServing(hosts, 365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(s.CAPEM), "PRIVATE KEY") || strings.Contains(string(s.CertPEM), "PRIVATE KEY") {
		t.Fatal("a key in the certificates")
	}
	blk, _ := pem.Decode(s.CertPEM)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign != 0 {
		t.Error("the serving leaf can sign certificates")
	}
	blk, _ = pem.Decode(s.CAPEM)
	ca, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.IsCA || !ca.MaxPathLenZero || strings.Join(ca.PermittedDNSDomains, ",") != strings.Join(hosts, ",") {
		t.Errorf("serving CA: isCA %v maxPathLenZero %v permitted %v", ca.IsCA, ca.MaxPathLenZero, ca.PermittedDNSDomains)
	}
	if _, err := CheckServing(s.CertPEM, s.KeyPEM, s.CAPEM, hosts, now); err != nil {
		t.Errorf("a fresh pair: %v", err)
	}
	other, err := NewServing(hosts, 365*24*time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		cert, key, ca []byte
		hosts         []string
		at            time.Time
		want          string
	}{
		"foreign key":    {s.CertPEM, other.KeyPEM, s.CAPEM, hosts, now, "does not match"},
		"foreign CA":     {s.CertPEM, s.KeyPEM, other.CAPEM, hosts, now, "unknown authority"},
		"another host":   {s.CertPEM, s.KeyPEM, s.CAPEM, []string{"linkerd-tap.other.svc"}, now, "linkerd-tap.other.svc"},
		"garbage":        {[]byte("x"), s.KeyPEM, s.CAPEM, hosts, now, "serving certificate"},
		"renewal due":    {s.CertPEM, s.KeyPEM, s.CAPEM, hosts, now.Add(250 * 24 * time.Hour), ErrRenewalDue.Error()},
		"expired":        {s.CertPEM, s.KeyPEM, s.CAPEM, hosts, now.Add(400 * 24 * time.Hour), "expired"},
		"no CA at all":   {s.CertPEM, s.KeyPEM, nil, hosts, now, "serving CA"},
		"key of another": {other.CertPEM, s.KeyPEM, other.CAPEM, hosts, now, "does not match"},
	} {
		_, err := CheckServing(tc.cert, tc.key, tc.ca, tc.hosts, tc.at)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "PRIVATE KEY") {
			t.Errorf("%s: the error quotes a key", name)
		}
	}
	if _, err := CheckServing(s.CertPEM, s.KeyPEM, s.CAPEM, hosts, now.Add(250*24*time.Hour)); !errors.Is(err, ErrRenewalDue) {
		t.Errorf("renewal due: %v, want ErrRenewalDue", err)
	}
	if _, err := NewServing(nil, time.Hour, now); err == nil {
		t.Error("a serving certificate for no host")
	}
}
