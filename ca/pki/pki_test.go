package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"meshtls/contract"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func mustRoot(t testing.TB) (*Root, []byte) {
	t.Helper()
	r, key, err := NewRoot(contract.RootCommonName("linkerd"), DefaultRootLifetime, t0)
	if err != nil {
		t.Fatal(err)
	}
	return r, key
}

func TestNewRootIsSelfSignedP256CA(t *testing.T) {
	r, keyPEM := mustRoot(t)
	c := r.Cert
	if !c.IsCA || !c.MaxPathLenZero {
		t.Errorf("root IsCA=%v MaxPathLenZero=%v, want both", c.IsCA, c.MaxPathLenZero)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("root key %T, want ECDSA P-256", c.PublicKey)
	}
	if got := c.NotAfter.Sub(t0); got != DefaultRootLifetime {
		t.Errorf("root lifetime from now = %s, want %s", got, DefaultRootLifetime)
	}
	if !strings.Contains(string(keyPEM), "BEGIN PRIVATE KEY") {
		t.Errorf("root key is not PKCS#8 PEM")
	}
	again, err := LoadRoot(r.CertPEM, keyPEM, t0)
	if err != nil {
		t.Fatalf("reload root: %v", err)
	}
	if !again.Cert.Equal(r.Cert) {
		t.Error("reloaded root differs")
	}
}

func TestIssueLeafContract(t *testing.T) {
	r, _ := mustRoot(t)
	id := contract.Identity("web", contract.KindDeployment, "emojivoto", "linkerd")
	if id != "web.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local" {
		t.Fatalf("identity = %q", id)
	}
	leaf, err := r.Issue(id, DefaultLeafLifetime, t0)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCerts(leaf.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[1].Equal(r.Cert) {
		t.Fatalf("tls.crt holds %d certs; want leaf then root", len(certs))
	}
	c := certs[0]
	if len(c.DNSNames) != 1 || c.DNSNames[0] != id {
		t.Errorf("SANs = %v, want [%s]", c.DNSNames, id)
	}
	if c.IsCA {
		t.Error("leaf is a CA")
	}
	if pub, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("leaf key %T, want ECDSA P-256", c.PublicKey)
	}
	if !hasBothUsages(c) {
		t.Errorf("EKU = %v, want serverAuth and clientAuth", c.ExtKeyUsage)
	}
	block, _ := pem.Decode(leaf.KeyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("tls.key is not PKCS#8 PEM")
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Errorf("tls.key: %v", err)
	}
	if got := c.NotAfter.Sub(t0); got != DefaultLeafLifetime {
		t.Errorf("leaf lifetime from now = %s, want %s", got, DefaultLeafLifetime)
	}
	renew, err := r.Check(leaf.CertPEM, leaf.KeyPEM, id, t0)
	if err != nil {
		t.Fatalf("fresh leaf fails Check: %v", err)
	}
	if want := RenewAtJittered(c.NotBefore, c.NotAfter, c.SerialNumber); !renew.Equal(want) {
		t.Errorf("renewAt = %s, want %s", renew, want)
	}
}

func TestLeafNeverOutlivesRoot(t *testing.T) {
	r, _, err := NewRoot("short", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := r.Issue("a.pod.ns.linkerd-managed.linkerd.svc.cluster.local", 24*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.After(r.Cert.NotAfter) {
		t.Errorf("leaf NotAfter %s after root NotAfter %s", leaf.NotAfter, r.Cert.NotAfter)
	}
}

func TestRenewAtTwoThirds(t *testing.T) {
	got := RenewAt(t0, t0.Add(24*time.Hour))
	if want := t0.Add(16 * time.Hour); !got.Equal(want) {
		t.Errorf("RenewAt = %s, want %s", got, want)
	}
}

func TestCheckRejects(t *testing.T) {
	r, _ := mustRoot(t)
	other, _ := mustRoot(t)
	id := contract.Identity("web", contract.KindDeployment, "emojivoto", "linkerd")
	leaf, err := r.Issue(id, DefaultLeafLifetime, t0)
	if err != nil {
		t.Fatal(err)
	}
	otherLeaf, err := r.Issue(id, DefaultLeafLifetime, t0)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		root     *Root
		cert     []byte
		key      []byte
		identity string
		now      time.Time
		want     string
	}{
		{"other root", other, leaf.CertPEM, leaf.KeyPEM, id, t0, "current root"},
		{"wrong identity", r, leaf.CertPEM, leaf.KeyPEM, "emoji.deployment.emojivoto.linkerd-managed.linkerd.svc.cluster.local", t0, "certificate is valid for"},
		{"mismatched key", r, leaf.CertPEM, otherLeaf.KeyPEM, id, t0, "does not match"},
		{"expired", r, leaf.CertPEM, leaf.KeyPEM, id, t0.Add(25 * time.Hour), "expired"},
		{"garbage cert", r, []byte("nope"), leaf.KeyPEM, id, t0, "no PEM certificate"},
		{"leaf only", r, leaf.CertPEM[:strings.Index(string(leaf.CertPEM), "-----END CERTIFICATE-----")+26], leaf.KeyPEM, id, t0, "chain"},
		{"empty key", r, leaf.CertPEM, nil, id, t0, "tls.key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.root.Check(tc.cert, tc.key, tc.identity, tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Check error = %v, want one containing %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error leaks key material: %v", err)
			}
		})
	}
	t.Run("renewal due", func(t *testing.T) {
		_, err := r.Check(leaf.CertPEM, leaf.KeyPEM, id, leaf.RenewAt())
		if !errors.Is(err, ErrRenewalDue) {
			t.Fatalf("at renewAt: %v, want ErrRenewalDue", err)
		}
		if _, err := r.Check(leaf.CertPEM, leaf.KeyPEM, id, leaf.RenewAt().Add(-time.Second)); err != nil {
			t.Fatalf("just before renewAt: %v", err)
		}
	})
}

func TestLoadRootRejectsMalformed(t *testing.T) {
	r, keyPEM := mustRoot(t)
	other, otherKey := mustRoot(t)
	leaf, err := r.Issue("x.pod.ns.linkerd-managed.linkerd.svc.cluster.local", time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	leafOnly, _ := pem.Decode(leaf.CertPEM)
	cases := []struct {
		name      string
		cert, key []byte
		now       time.Time
		want      string
	}{
		{"empty cert", nil, keyPEM, t0, "no PEM certificate"},
		{"truncated cert", r.CertPEM[:len(r.CertPEM)/2], keyPEM, t0, "root certificate"},
		{"two certs", append(append([]byte{}, r.CertPEM...), other.CertPEM...), keyPEM, t0, "exactly one"},
		{"not a CA", pem.EncodeToMemory(leafOnly), leaf.KeyPEM, t0, "not a CA"},
		{"wrong key", r.CertPEM, otherKey, t0, "does not match"},
		{"garbage key", r.CertPEM, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), t0, "root key"},
		{"no key", r.CertPEM, nil, t0, "root key"},
		{"expired", r.CertPEM, keyPEM, t0.Add(2 * DefaultRootLifetime), "expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadRoot(tc.cert, tc.key, tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadRoot error = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// A user may bring an RSA root in PKCS#1 from openssl; it must load and sign.
func TestLoadUserRSARoot(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "user root"},
		NotBefore: t0.Add(-time.Hour), NotAfter: t0.Add(time.Hour * 24 * 30),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	r, err := LoadRoot(certPEM, keyPEM, t0)
	if err != nil {
		t.Fatal(err)
	}
	id := contract.Identity("db", contract.KindStatefulSet, "prod", "linkerd")
	leaf, err := r.Issue(id, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Check(leaf.CertPEM, leaf.KeyPEM, id, t0); err != nil {
		t.Fatalf("leaf from RSA root: %v", err)
	}
}

// userCA makes a CA certificate from tmpl signed by parent (self-signed
// when parent is nil), returning its PEM and key PEM.
func userCA(t *testing.T, tmpl *x509.Certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, []byte, []byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore, tmpl.NotAfter = t0.Add(-time.Hour), t0.Add(30*24*time.Hour)
	}
	tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	if tmpl.KeyUsage == 0 {
		tmpl.KeyUsage = x509.KeyUsageCertSign
	}
	signer, signKey := tmpl, key
	if parent != nil {
		signer, signKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, key
}

// A root that allows server auth only must be refused: Go's verifier
// accepts a chain valid for any one of the usages it is given.
func TestLoadRootChecksEachUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		ekus []x509.ExtKeyUsage
		want string
	}{
		{"server only", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, "does not allow clientAuth"},
		{"client only", []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, "does not allow serverAuth"},
		{"code signing", []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning}, "does not allow serverAuth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, certPEM, keyPEM, _ := userCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: tc.name}, ExtKeyUsage: tc.ekus}, nil, nil)
			_, err := LoadRoot(certPEM, keyPEM, t0)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadRoot = %v, want an error containing %q", err, tc.want)
			}
		})
	}
	_, certPEM, keyPEM, _ := userCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "both"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, nil, nil)
	if _, err := LoadRoot(certPEM, keyPEM, t0); err != nil {
		t.Fatalf("root allowing both usages: %v", err)
	}
}

// Check itself must verify each usage on its own, whatever loaded the root.
func TestCheckVerifiesEachUsage(t *testing.T) {
	cert, _, _, key := userCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "server only"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, nil, nil)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	r := &Root{Cert: cert, CertPEM: EncodeCerts([]*x509.Certificate{cert}), Anchors: []*x509.Certificate{cert},
		key: key, pool: pool, inter: x509.NewCertPool(), notAfter: cert.NotAfter}
	id := contract.Identity("web", contract.KindDeployment, "emojivoto", "linkerd")
	leaf, err := r.Issue(id, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Check(leaf.CertPEM, leaf.KeyPEM, id, t0); err == nil || !strings.Contains(err.Error(), "clientAuth") {
		t.Fatalf("Check of a leaf under a server-only root = %v, want a clientAuth failure", err)
	}
}

// A root whose name constraints exclude the mesh's identities issues
// certificates that never verify; loading it must say so at once.
func TestLoadRootProbesNameConstraints(t *testing.T) {
	_, certPEM, keyPEM, _ := userCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "constrained"},
		PermittedDNSDomains: []string{"example.com"}}, nil, nil)
	_, err := LoadRoot(certPEM, keyPEM, t0)
	if err == nil || !strings.Contains(err.Error(), "fail verification") {
		t.Fatalf("LoadRoot = %v, want a probe failure", err)
	}
	_, certPEM, keyPEM, _ = userCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "mesh only"},
		PermittedDNSDomains: []string{"linkerd-managed.linkerd.svc.cluster.local"}}, nil, nil)
	if _, err := LoadRoot(certPEM, keyPEM, t0); err != nil {
		t.Fatalf("root constrained to the mesh domain: %v", err)
	}
}

// An intermediate issuer signed by an offline root: leaves carry the
// issuer after them and verify against the root alone.
func TestIntermediateIssuer(t *testing.T) {
	root, rootPEM, _, rootKey := userCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "offline root"}}, nil, nil)
	_, issuerPEM, issuerKeyPEM, _ := userCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "issuer"}, MaxPathLenZero: true}, root, rootKey)
	r, err := LoadIssuer(issuerPEM, issuerKeyPEM, rootPEM, ProbeIdentity("linkerd"), t0)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Intermediate() || string(r.AnchorsPEM) != string(rootPEM) {
		t.Fatalf("Intermediate()=%v anchors=%q", r.Intermediate(), r.AnchorsPEM)
	}
	id := contract.Identity("web", contract.KindDeployment, "emojivoto", "linkerd")
	leaf, err := r.Issue(id, time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCerts(leaf.CertPEM)
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || !certs[1].Equal(r.Cert) {
		t.Fatalf("tls.crt holds %d certificates, want leaf then issuer", len(certs))
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	inter := x509.NewCertPool()
	inter.AddCert(certs[1])
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: id, CurrentTime: t0}); err != nil {
		t.Errorf("leaf does not verify against the offline root: %v", err)
	}
	if _, err := r.Check(leaf.CertPEM, leaf.KeyPEM, id, t0); err != nil {
		t.Errorf("Check: %v", err)
	}

	_, otherPEM, _, _ := userCA(t, &x509.Certificate{Subject: pkix.Name{CommonName: "other root"}}, nil, nil)
	if _, err := LoadIssuer(issuerPEM, issuerKeyPEM, otherPEM, "", t0); err == nil || !strings.Contains(err.Error(), "not signed by any of the trust anchors") {
		t.Errorf("issuer with the wrong anchors: %v", err)
	}
	if _, err := LoadIssuer(issuerPEM, issuerKeyPEM, nil, "", t0); err == nil || !strings.Contains(err.Error(), "not self-signed") {
		t.Errorf("intermediate without anchors: %v", err)
	}
}

func TestCanIssueRefusesAnExpiringRoot(t *testing.T) {
	r, _, err := NewRoot("short", 2*time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.CanIssue(time.Hour, t0); err != nil {
		t.Errorf("2h root, 1h leaves: %v", err)
	}
	err = r.CanIssue(time.Hour, t0.Add(90*time.Minute))
	if !errors.Is(err, ErrIssuerExpiring) || !strings.Contains(err.Error(), "linkerd ca rotate") {
		t.Errorf("30m left, 1h leaves: %v, want ErrIssuerExpiring naming the rotation command", err)
	}
}

// A burst of certificates must not renew at one instant forever: their
// renewal times spread over the tenth of the lifetime before two thirds.
func TestRenewalJitterSpreadsABurst(t *testing.T) {
	r, _ := mustRoot(t)
	lo, hi := t0.Add(DefaultLeafLifetime), t0
	distinct := map[time.Time]bool{}
	for i := range 200 {
		leaf, err := r.Issue(fmt.Sprintf("w%d.deployment.ns.linkerd-managed.linkerd.svc.cluster.local", i), DefaultLeafLifetime, t0)
		if err != nil {
			t.Fatal(err)
		}
		at := leaf.RenewAt()
		earliest := RenewAt(leaf.NotBefore, leaf.NotAfter).Add(-(leaf.NotAfter.Sub(leaf.NotBefore) / 10))
		if at.After(RenewAt(leaf.NotBefore, leaf.NotAfter)) || at.Before(earliest) {
			t.Fatalf("renewAt %s outside [%s, %s]", at, earliest, RenewAt(leaf.NotBefore, leaf.NotAfter))
		}
		distinct[at.Truncate(time.Minute)] = true
		if at.Before(lo) {
			lo = at
		}
		if at.After(hi) {
			hi = at
		}
	}
	// 200 uniform draws over a 2.4h window: far more than 50 distinct minutes.
	if len(distinct) < 50 || hi.Sub(lo) < time.Hour {
		t.Errorf("renewals span %s over %d distinct minutes; want them spread", hi.Sub(lo), len(distinct))
	}
}

// BenchmarkIssue measures pure signing: key generation, signing and PEM
// encoding of one workload leaf, the CA's per-owner CPU cost.
func BenchmarkIssue(b *testing.B) {
	r, _ := mustRoot(b)
	id := contract.Identity("web", contract.KindDeployment, "emojivoto", "linkerd")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := r.Issue(id, DefaultLeafLifetime, t0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// BenchmarkCheck measures the idempotency check a pod event costs when the
// Secret is already valid.
func BenchmarkCheck(b *testing.B) {
	r, _ := mustRoot(b)
	id := contract.Identity("web", contract.KindDeployment, "emojivoto", "linkerd")
	leaf, err := r.Issue(id, DefaultLeafLifetime, t0)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := r.Check(leaf.CertPEM, leaf.KeyPEM, id, t0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkIssueParallel is the same work on every core, as the CA's
// workers do it.
func BenchmarkIssueParallel(b *testing.B) {
	r, _ := mustRoot(b)
	id := contract.Identity("web", contract.KindDeployment, "emojivoto", "linkerd")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.Issue(id, DefaultLeafLifetime, t0); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "certs/s")
}

// M4: the generated root is constrained to the mesh's identity domain, the
// issuer under it is what issues, and the root's key is not the issuer's.
func TestNewRootAndIssuerIsConstrained(t *testing.T) {
	now := time.Now()
	const domain = "linkerd-managed.linkerd.svc.cluster.local"
	issuer, issuerKey, rootKey, err := NewRootAndIssuer("test root", domain, 24*time.Hour, ProbeIdentity("linkerd"), now)
	if err != nil {
		t.Fatal(err)
	}
	if !issuer.Intermediate() || len(issuer.Anchors) != 1 {
		t.Fatal("the issuer is not an intermediate under one root")
	}
	root := issuer.Anchors[0]
	if !slices.Equal(root.PermittedDNSDomains, []string{domain}) || !root.PermittedDNSDomainsCritical {
		t.Errorf("root name constraints %v (critical %v), want only %s", root.PermittedDNSDomains, root.PermittedDNSDomainsCritical, domain)
	}
	if string(issuerKey) == string(rootKey) {
		t.Fatal("root and issuer share a key")
	}
	if k, err := ParseKey(rootKey); err != nil || !publicKeysEqual(k.Public(), root.PublicKey) {
		t.Fatalf("the returned root key does not match the root: %v", err)
	}
	in := "web.deployment.app." + domain
	leaf, err := issuer.Issue(in, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := issuer.Check(leaf.CertPEM, leaf.KeyPEM, in, now); err != nil {
		t.Errorf("an identity in the domain does not verify: %v", err)
	}
	// Even the issuer's key cannot vouch for a name outside the domain.
	out, err := issuer.Issue("www.example.com", time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := issuer.Check(out.CertPEM, out.KeyPEM, "www.example.com", now); err == nil {
		t.Error("a certificate for www.example.com verifies under the generated root")
	}
}

// A CA told another cluster domain generates a root constrained to that
// domain's identities: the mesh's identities there verify, and the same
// name under cluster.local is outside the constraint.
func TestRootInClusterDomain(t *testing.T) {
	now := time.Now()
	const ns, domain = "linkerd", "corp.example"
	issuer, _, _, err := NewRootAndIssuer(contract.RootCommonNameIn(ns, domain), contract.IdentityDomainIn(ns, domain), time.Hour*24*365, ProbeIdentityIn(ns, domain), now)
	if err != nil {
		t.Fatal(err)
	}
	id := contract.IdentityIn("web", contract.KindDeployment, "app", ns, domain)
	if !strings.HasSuffix(id, ".svc.corp.example") {
		t.Fatalf("identity %q does not end in the cluster domain", id)
	}
	leaf, err := issuer.Issue(id, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := issuer.Check(leaf.CertPEM, leaf.KeyPEM, id, now); err != nil {
		t.Errorf("identity in the cluster domain: %v", err)
	}
	def := contract.Identity("web", contract.KindDeployment, "app", ns)
	if leaf, err := issuer.Issue(def, time.Hour, now); err == nil {
		if _, err := issuer.Check(leaf.CertPEM, leaf.KeyPEM, def, now); err == nil {
			t.Errorf("a root constrained to %s accepts %s", domain, def)
		}
	}
}
