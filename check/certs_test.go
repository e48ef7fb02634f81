package check

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"meshtls/ca/pki"
)

var now = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

const id = "web.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local"

type signer struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newSigner(t testing.TB, edit func(*x509.Certificate)) signer {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return signer{c, key}
}

func (s signer) leaf(t testing.TB, edit func(*x509.Certificate)) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: id}, DNSNames: []string{id},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(23 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if edit != nil {
		edit(tmpl)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, &key.PublicKey, s.key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ = pki.EncodeKey(key)
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cert.Raw})...), keyPEM
}

var th = thresholds{warn: 6 * time.Hour, fail: time.Hour}

func TestAnalyzeLeafGood(t *testing.T) {
	root := newSigner(t, nil)
	c, k := root.leaf(t, nil)
	f := analyzeLeaf(c, k, root.cert, id, now, th)
	if f != (leafFindings{Serial: f.Serial, NotAfter: f.NotAfter}) || f.Serial.Int64() != 42 {
		t.Errorf("good leaf has findings: %+v", f)
	}
}

// Each broken property is reported by its own finding and no other.
func TestAnalyzeLeafOneThingAtATime(t *testing.T) {
	root := newSigner(t, nil)
	other := newSigner(t, nil)
	goodCert, _ := root.leaf(t, nil)
	_, otherKey := root.leaf(t, nil)
	cases := []struct {
		name      string
		cert, key func() ([]byte, []byte)
		field     func(leafFindings) string
		want      string
	}{
		{"other CA", func() ([]byte, []byte) { return other.leaf(t, nil) }, nil, func(f leafFindings) string { return f.Chain }, "not signed by the current root"},
		{"key mismatch", func() ([]byte, []byte) { return goodCert, otherKey }, nil, func(f leafFindings) string { return f.KeyMatch }, "does not match"},
		{"wrong SAN", func() ([]byte, []byte) {
			return root.leaf(t, func(c *x509.Certificate) {
				c.DNSNames = []string{"emoji.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local"}
			})
		}, nil, func(f leafFindings) string { return f.SAN }, "want " + id},
		{"server auth only", func() ([]byte, []byte) {
			return root.leaf(t, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
		}, nil, func(f leafFindings) string { return f.EKU }, "clientAuth"},
		{"client auth only", func() ([]byte, []byte) {
			return root.leaf(t, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth} })
		}, nil, func(f leafFindings) string { return f.EKU }, "serverAuth"},
		{"expired", func() ([]byte, []byte) {
			return root.leaf(t, func(c *x509.Certificate) { c.NotBefore, c.NotAfter = now.Add(-48*time.Hour), now.Add(-time.Minute) })
		}, nil, func(f leafFindings) string { return f.Validity }, "expired at"},
		{"not yet valid", func() ([]byte, []byte) {
			return root.leaf(t, func(c *x509.Certificate) { c.NotBefore = now.Add(time.Hour) })
		}, nil, func(f leafFindings) string { return f.Validity }, "not valid before"},
		{"warn window", func() ([]byte, []byte) {
			return root.leaf(t, func(c *x509.Certificate) { c.NotAfter = now.Add(3 * time.Hour) })
		}, nil, func(f leafFindings) string { return f.Expiry }, "within --warn-within"},
		{"fail window", func() ([]byte, []byte) {
			return root.leaf(t, func(c *x509.Certificate) { c.NotAfter = now.Add(30 * time.Minute) })
		}, nil, func(f leafFindings) string { return f.Expiry }, "within --fail-within"},
		{"garbage cert", func() ([]byte, []byte) { return []byte("nope"), otherKey }, nil, func(f leafFindings) string { return f.Parse }, "tls.crt"},
		{"garbage key", func() ([]byte, []byte) { return goodCert, []byte("nope") }, nil, func(f leafFindings) string { return f.Parse }, "tls.key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, k := tc.cert()
			f := analyzeLeaf(c, k, root.cert, id, now, th)
			got := tc.field(f)
			if !strings.Contains(got, tc.want) {
				t.Fatalf("finding %q does not contain %q (all: %+v)", got, tc.want, f)
			}
			// No other finding fires.
			all := []string{f.Parse, f.KeyMatch, f.Chain, f.SAN, f.EKU, f.Validity, f.Expiry}
			n := 0
			for _, s := range all {
				if s != "" {
					n++
				}
			}
			if n != 1 {
				t.Errorf("want exactly one finding, got %+v", f)
			}
			if strings.Contains(strings.Join(all, " "), "PRIVATE KEY") {
				t.Error("key material in a finding")
			}
		})
	}
	if f := analyzeLeaf(goodCert, otherKey, root.cert, id, now, th); f.ExpiryFatal {
		t.Error("no expiry")
	}
	c, k := root.leaf(t, func(c *x509.Certificate) { c.NotAfter = now.Add(30 * time.Minute) })
	if f := analyzeLeaf(c, k, root.cert, id, now, th); !f.ExpiryFatal {
		t.Error("inside the fail window must be fatal")
	}
}

// A root that restricts EKU to serverAuth makes its leaves unusable as
// clients even though the leaf itself lists both.
func TestChainNarrowsUsage(t *testing.T) {
	root := newSigner(t, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} })
	c, k := root.leaf(t, nil)
	f := analyzeLeaf(c, k, root.cert, id, now, th)
	if !strings.Contains(f.EKU, "clientAuth (not allowed by the chain)") {
		t.Errorf("EKU finding %q", f.EKU)
	}
	if p := rootUsageProblem(root.cert); !strings.Contains(p, "clientAuth") {
		t.Errorf("root usage problem %q", p)
	}
}

func TestRootProblems(t *testing.T) {
	if p := rootUsageProblem(newSigner(t, nil).cert); p != "" {
		t.Errorf("good root: %s", p)
	}
	notCA := newSigner(t, func(c *x509.Certificate) { c.IsCA = false })
	if p := rootUsageProblem(notCA.cert); !strings.Contains(p, "not a CA") {
		t.Errorf("not a CA: %q", p)
	}
	if p := algorithmProblem(newSigner(t, nil).cert); p != "" {
		t.Errorf("P-256: %s", p)
	}
	key224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: now, NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key224.PublicKey, key224)
	c224, _ := x509.ParseCertificate(der)
	if p := algorithmProblem(c224); !strings.Contains(p, "P-224") {
		t.Errorf("P-224: %q", p)
	}
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	der, _ = x509.CreateCertificate(rand.Reader, tmpl, tmpl, &rsa1024.PublicKey, rsa1024)
	cRSA, _ := x509.ParseCertificate(der)
	if p := algorithmProblem(cRSA); !strings.Contains(p, "1024 bits") {
		t.Errorf("RSA-1024: %q", p)
	}
	p, fatal := expiryProblem(now.Add(10*24*time.Hour), now, thresholds{30 * 24 * time.Hour, 7 * 24 * time.Hour})
	if fatal || !strings.Contains(p, "10d") {
		t.Errorf("root in warn window: %q fatal=%v", p, fatal)
	}
}
