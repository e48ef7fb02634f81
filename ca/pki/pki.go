// Package pki is the certificate authority's x509 arithmetic: making and
// loading the root, issuing workload leaves and deciding whether a leaf
// still serves. It knows nothing of Kubernetes so it can be tested alone
// and reused by `check --tls`.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"

	"meshtls/contract"
)

// Defaults from the design: workload leaves live a day, the root a year.
const (
	DefaultLeafLifetime = 24 * time.Hour
	DefaultRootLifetime = 365 * 24 * time.Hour
)

// MinLeafLifetime is the shortest workload certificate lifetime allowed.
// The kubelet delivers an updated Secret to pods within its sync period
// plus its cache TTL (a minute each by default), and renewal leaves at
// least the last 0.33 of the lifetime for that: ten minutes leaves over
// three, enough for a slow kubelet and a retry.
const MinLeafLifetime = 10 * time.Minute

// maxBackdate bounds how far NotBefore is set in the past, so a peer whose
// clock is slightly behind still accepts a fresh certificate.
const maxBackdate = time.Minute

// Root is a loaded issuer: a self-signed root, or an intermediate signed
// by an offline root whose key never enters the cluster. Key never leaves
// the process except as the root Secret the CA itself persists.
type Root struct {
	// Cert is the issuing certificate; CertPEM is what follows a leaf in
	// tls.crt.
	Cert    *x509.Certificate
	CertPEM []byte
	// Anchors are the roots the issuer chains to: Cert itself when it is
	// self-signed. AnchorsPEM is their PEM, the least a bundle must hold.
	Anchors    []*x509.Certificate
	AnchorsPEM []byte
	key        crypto.Signer
	pool       *x509.CertPool
	inter      *x509.CertPool
	// notAfter is the earliest expiry on the chain: no leaf may outlive it.
	notAfter time.Time
}

// Intermediate reports whether the issuer is not itself a trust anchor.
func (r *Root) Intermediate() bool { return !r.Anchors[0].Equal(r.Cert) }

// NotAfter is when the issuer's chain stops being valid.
func (r *Root) NotAfter() time.Time { return r.notAfter }

// Leaf is one issued workload credential, ready for a kubernetes.io/tls
// Secret: CertPEM holds the leaf then the root, KeyPEM a PKCS#8 key.
type Leaf struct {
	CertPEM   []byte
	KeyPEM    []byte
	NotBefore time.Time
	NotAfter  time.Time
	Serial    *big.Int
}

// RenewAt is when the leaf should be replaced.
func (l *Leaf) RenewAt() time.Time { return RenewAtJittered(l.NotBefore, l.NotAfter, l.Serial) }

// RenewAt is two thirds of the way through a validity window: late enough
// not to churn, early enough that a slow or briefly failing CA still
// replaces the certificate well before it expires.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 2 / 3)
}

// renewJitter is the largest share of a lifetime a renewal moves earlier
// than RenewAt.
const renewJitter = 10

// RenewAtJittered moves RenewAt earlier by up to a tenth of the lifetime,
// by an amount fixed by the serial: certificates issued in one burst then
// renew spread over a window instead of all at once, forever. Deriving it
// from the serial (not a random draw) keeps every replica, restart and
// `check --tls` agreeing on when a given certificate is due.
func RenewAtJittered(notBefore, notAfter time.Time, serial *big.Int) time.Time {
	base := RenewAt(notBefore, notAfter)
	if serial == nil {
		return base
	}
	window := notAfter.Sub(notBefore) / renewJitter
	if window <= 0 {
		return base
	}
	// The serial is 127 random bits: its low bits are uniform.
	frac := new(big.Int).Mod(serial, big.NewInt(1<<20)).Int64()
	return base.Add(-time.Duration(float64(window) * float64(frac) / float64(1<<20)))
}

// NewRoot makes a self-signed ECDSA P-256 root. It returns the root and the
// PEM of its PKCS#8 key, which the caller persists.
func NewRoot(commonName string, lifetime time.Duration, now time.Time) (*Root, []byte, error) {
	if lifetime <= 0 {
		return nil, nil, fmt.Errorf("root lifetime must be positive, got %s", lifetime)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate root key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	notBefore := now.Add(-backdate(lifetime))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             notBefore,
		NotAfter:              now.Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("self-sign root: %w", err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	root, err := LoadRoot(certPEM, keyPEM, now)
	if err != nil {
		return nil, nil, fmt.Errorf("new root does not load: %w", err)
	}
	return root, keyPEM, nil
}

// ProbeIdentity is the identity a loaded issuer is test-signed for: one
// under the mesh's identity domain, so name constraints that exclude the
// mesh's identities are found at load time, not at the first pod.
func ProbeIdentity(controlNamespace string) string {
	return ProbeIdentityIn(controlNamespace, contract.DefaultClusterDomain)
}

// ProbeIdentityIn is ProbeIdentity in the cluster domain clusterDomain.
func ProbeIdentityIn(controlNamespace, clusterDomain string) string {
	return contract.IdentityIn("linkerd-ca-probe", contract.KindPod, controlNamespace, controlNamespace, clusterDomain)
}

// LoadRoot parses and validates a self-signed root from PEM, for the
// default control plane. Errors name what is wrong and never include key
// material.
func LoadRoot(certPEM, keyPEM []byte, now time.Time) (*Root, error) {
	return LoadIssuer(certPEM, keyPEM, nil, ProbeIdentity("linkerd"), now)
}

// LoadIssuer parses and validates an issuer: certPEM and keyPEM are its
// certificate and key, anchorsPEM the roots it chains to (empty when the
// issuer is a self-signed root). It then issues one certificate for
// probeIdentity and checks it exactly as the CA checks stored ones, so an
// issuer whose certificates could never pass that check (a usage or name
// constraint excluding the mesh) is refused here, not in a reissue loop.
func LoadIssuer(certPEM, keyPEM, anchorsPEM []byte, probeIdentity string, now time.Time) (*Root, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("root certificate: want exactly one certificate, found %d", len(certs))
	}
	cert := certs[0]
	if err := checkCA("root certificate", cert, now); err != nil {
		return nil, err
	}
	var anchors []*x509.Certificate
	if len(bytes.TrimSpace(anchorsPEM)) == 0 {
		if err := cert.CheckSignatureFrom(cert); err != nil {
			return nil, fmt.Errorf("root certificate is not self-signed (an intermediate issuer needs its root as trust anchor): %w", err)
		}
		anchors = []*x509.Certificate{cert}
	} else {
		if anchors, err = parseCerts(anchorsPEM); err != nil {
			return nil, fmt.Errorf("trust anchors: %w", err)
		}
		for i, a := range anchors {
			if err := checkCA(fmt.Sprintf("trust anchor %d", i+1), a, now); err != nil {
				return nil, err
			}
		}
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("root key does not match the root certificate")
	}
	pool := x509.NewCertPool()
	notAfter := cert.NotAfter
	var signer *x509.Certificate
	for _, a := range anchors {
		pool.AddCert(a)
		if signer == nil && (a.Equal(cert) || cert.CheckSignatureFrom(a) == nil) {
			signer = a
		}
	}
	if signer == nil {
		return nil, errors.New("root certificate is not signed by any of the trust anchors")
	}
	if signer.NotAfter.Before(notAfter) {
		notAfter = signer.NotAfter
	}
	r := &Root{
		Cert:       cert,
		CertPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		Anchors:    anchors,
		AnchorsPEM: EncodeCerts(anchors),
		key:        key,
		pool:       pool,
		inter:      x509.NewCertPool(),
		notAfter:   notAfter,
	}
	if !signer.Equal(cert) {
		r.inter.AddCert(cert)
		// The issuer's own signature and constraints, per usage.
		for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
				return nil, fmt.Errorf("root certificate does not chain to the trust anchors for %s: %w", usageName(u), err)
			}
		}
	}
	if probeIdentity != "" {
		// A probe as short as allowed: it only has to pass once, now.
		leaf, err := r.Issue(probeIdentity, time.Minute, now)
		if err != nil {
			return nil, fmt.Errorf("root cannot issue: %w", err)
		}
		if err := r.checkChain(leaf.CertPEM, leaf.KeyPEM, probeIdentity, now); err != nil {
			return nil, fmt.Errorf("root issues certificates that fail verification: %w", err)
		}
	}
	return r, nil
}

// checkCA is the part of loading shared by issuers and anchors: a CA that
// may sign, valid now, whose extended key usages (if it restricts them at
// all) allow both TLS server and client, each on its own.
func checkCA(what string, cert *x509.Certificate, now time.Time) error {
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return fmt.Errorf("%s is not a CA (basicConstraints CA:TRUE missing)", what)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("%s may not sign certificates (keyUsage lacks keyCertSign)", what)
	}
	if now.After(cert.NotAfter) {
		return fmt.Errorf("%s expired at %s", what, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return fmt.Errorf("%s is not valid before %s", what, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if len(cert.ExtKeyUsage) > 0 || len(cert.UnknownExtKeyUsage) > 0 {
		for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if !allowsUsage(cert, u) {
				return fmt.Errorf("%s restricts extended key usage and does not allow %s: workload certificates need both serverAuth and clientAuth", what, usageName(u))
			}
		}
	}
	return nil
}

func allowsUsage(c *x509.Certificate, want x509.ExtKeyUsage) bool {
	for _, u := range c.ExtKeyUsage {
		if u == want || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageServerAuth:
		return "serverAuth"
	case x509.ExtKeyUsageClientAuth:
		return "clientAuth"
	}
	return fmt.Sprintf("usage %d", u)
}

// ErrIssuerExpiring marks an issuer with less than one certificate lifetime
// left: a leaf from it would be cut short and due at once.
var ErrIssuerExpiring = errors.New("root expires within one certificate lifetime")

// CanIssue says whether a full-lifetime leaf can come from this issuer now.
func (r *Root) CanIssue(lifetime time.Duration, now time.Time) error {
	if left := r.notAfter.Sub(now); left < lifetime {
		return fmt.Errorf("%w: it expires at %s (%s left), certificates live %s; refusing to issue: rotate the root (linkerd ca rotate)",
			ErrIssuerExpiring, r.notAfter.UTC().Format(time.RFC3339), left.Truncate(time.Second), lifetime)
	}
	return nil
}

// EncodeCerts renders certificates as concatenated PEM.
func EncodeCerts(certs []*x509.Certificate) []byte {
	var b []byte
	for _, c := range certs {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return b
}

// Pool holds this issuer's trust anchors, for verifying leaves.
func (r *Root) Pool() *x509.CertPool { return r.pool }

// Issue signs a fresh ECDSA P-256 leaf for identity, usable as both TLS
// server and client. The leaf never outlives the root.
func (r *Root) Issue(identity string, lifetime time.Duration, now time.Time) (*Leaf, error) {
	if identity == "" {
		return nil, errors.New("issue: empty identity")
	}
	if lifetime <= 0 {
		return nil, fmt.Errorf("issue: lifetime must be positive, got %s", lifetime)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate leaf key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notBefore := now.Add(-backdate(lifetime))
	if notBefore.Before(r.Cert.NotBefore) {
		notBefore = r.Cert.NotBefore
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(r.notAfter) {
		notAfter = r.notAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: identity},
		DNSNames:              []string{identity},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, r.Cert, &key.PublicKey, r.key)
	if err != nil {
		return nil, fmt.Errorf("sign leaf for %s: %w", identity, err)
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	chain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	chain = append(chain, r.CertPEM...)
	// x509 stores whole seconds; report what the certificate says.
	return &Leaf{
		CertPEM:   chain,
		KeyPEM:    keyPEM,
		NotBefore: notBefore.Truncate(time.Second),
		NotAfter:  notAfter.Truncate(time.Second),
		Serial:    serial,
	}, nil
}

// Check decides whether a stored credential is still good for identity
// under this issuer at now. It returns the leaf's renewal time when it is,
// and an error saying why not otherwise; a leaf past its renewal time is
// reported as ErrRenewalDue. The CA runs it on every certificate it has
// just issued too, so what it writes always passes what it later checks.
func (r *Root) Check(certPEM, keyPEM []byte, identity string, now time.Time) (time.Time, error) {
	if _, _, err := r.CheckLeaf(certPEM, identity, now); err != nil && !errors.Is(err, ErrRenewalDue) {
		return time.Time{}, err
	}
	if err := KeyMatches(certPEM, keyPEM); err != nil {
		return time.Time{}, err
	}
	_, renewAt, err := r.CheckLeaf(certPEM, identity, now)
	return renewAt, err
}

// CheckLeaf is Check without the private key: everything that can be
// decided from tls.crt alone. It also returns the parsed leaf.
func (r *Root) CheckLeaf(certPEM []byte, identity string, now time.Time) (*x509.Certificate, time.Time, error) {
	if err := r.verifyChain(certPEM, identity, now); err != nil {
		return nil, time.Time{}, err
	}
	certs, _ := parseCerts(certPEM)
	leaf := certs[0]
	renewAt := RenewAtJittered(leaf.NotBefore, leaf.NotAfter, leaf.SerialNumber)
	if !now.Before(renewAt) {
		return leaf, renewAt, ErrRenewalDue
	}
	return leaf, renewAt, nil
}

// KeyMatches says whether keyPEM is the private key of tls.crt's leaf.
func KeyMatches(certPEM, keyPEM []byte) error {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return fmt.Errorf("tls.crt: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return fmt.Errorf("tls.key: %w", err)
	}
	if !publicKeysEqual(key.Public(), certs[0].PublicKey) {
		return errors.New("tls.key does not match tls.crt")
	}
	return nil
}

func (r *Root) checkChain(certPEM, keyPEM []byte, identity string, now time.Time) error {
	if err := r.verifyChain(certPEM, identity, now); err != nil {
		return err
	}
	return KeyMatches(certPEM, keyPEM)
}

func (r *Root) verifyChain(certPEM []byte, identity string, now time.Time) error {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return fmt.Errorf("tls.crt: %w", err)
	}
	leaf := certs[0]
	if len(certs) != 2 || !certs[1].Equal(r.Cert) {
		return errors.New("tls.crt: chain is not leaf then the current root")
	}
	// Go accepts a chain valid for any one of VerifyOptions.KeyUsages, so
	// each usage is verified on its own: a chain that allows only server
	// auth must fail here, not in a client's handshake.
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{
			DNSName:       identity,
			Roots:         r.pool,
			Intermediates: r.inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{u},
		}); err != nil {
			return fmt.Errorf("tls.crt (as %s): %w", usageName(u), err)
		}
	}
	if !hasBothUsages(leaf) {
		return errors.New("tls.crt: extended key usage must include both serverAuth and clientAuth")
	}
	return nil
}

// Fingerprint is the hex SHA-256 of a certificate's DER, as the
// linkerd.io/tls-issuer annotation spells it.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// ErrRenewalDue marks a valid leaf that has passed two thirds of its life.
var ErrRenewalDue = errors.New("certificate is due for renewal")

func hasBothUsages(c *x509.Certificate) bool {
	var server, client bool
	for _, u := range c.ExtKeyUsage {
		switch u {
		case x509.ExtKeyUsageServerAuth:
			server = true
		case x509.ExtKeyUsageClientAuth:
			client = true
		case x509.ExtKeyUsageAny:
			server, client = true, true
		}
	}
	return server && client
}

// EncodeKey renders a private key as PKCS#8 PEM.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey reads a PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) PEM private key, so
// user-supplied roots from openssl or cfssl load as they are.
func ParseKey(keyPEM []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		if next, _ := pem.Decode(rest); next != nil {
			return nil, errors.New("more than one PEM block")
		}
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unexpected PEM block %q, want a private key", block.Type)
	}
	if err != nil {
		// The parser's own message is about structure, never contents.
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", key)
	}
	switch k := signer.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey:
		_ = k
	default:
		return nil, fmt.Errorf("unsupported private key type %T: use ECDSA or RSA", key)
	}
	return signer, nil
}

// ParseCerts reads every CERTIFICATE block in order; it fails on none, on
// any other block type and on trailing garbage.
func ParseCerts(certPEM []byte) ([]*x509.Certificate, error) { return parseCerts(certPEM) }

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q, want CERTIFICATE", block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(out)+1, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("trailing data after the last certificate")
	}
	return out, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

func newSerial() (*big.Int, error) {
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generate serial: %w", err)
	}
	// A zero serial is invalid in x509; one in 2^127 still deserves a guard.
	return s.Add(s, big.NewInt(1)), nil
}

func backdate(lifetime time.Duration) time.Duration {
	if d := lifetime / 10; d < maxBackdate {
		return d
	}
	return maxBackdate
}

// Foreign returns the certificates of have that are not in want.
func Foreign(have, want []*x509.Certificate) []*x509.Certificate {
	var out []*x509.Certificate
next:
	for _, c := range have {
		for _, w := range want {
			if c.Equal(w) {
				continue next
			}
		}
		out = append(out, c)
	}
	return out
}

// NewRootAndIssuer makes what a mesh should run on: a self-signed root
// whose names are constrained to domain (the mesh's identities and
// nothing else, so even its key cannot vouch for a web site), and an
// intermediate issuer under it with the same lifetime. The CA keeps only
// the issuer and its key; the root's key is returned for the caller to
// write where the user asks, or to drop. probeIdentity is as for
// LoadIssuer.
func NewRootAndIssuer(commonName, domain string, lifetime time.Duration, probeIdentity string, now time.Time) (issuer *Root, issuerKeyPEM, rootKeyPEM []byte, err error) {
	if lifetime <= 0 {
		return nil, nil, nil, fmt.Errorf("root lifetime must be positive, got %s", lifetime)
	}
	notBefore, notAfter := now.Add(-backdate(lifetime)), now.Add(lifetime)
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate root key: %w", err)
	}
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("generate issuer key: %w", err)
	}
	rootSerial, err := newSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	issuerSerial, err := newSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:                rootSerial,
		Subject:                     pkix.Name{CommonName: commonName},
		NotBefore:                   notBefore,
		NotAfter:                    notAfter,
		IsCA:                        true,
		BasicConstraintsValid:       true,
		MaxPathLen:                  1,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		PermittedDNSDomainsCritical: true,
		PermittedDNSDomains:         []string{domain},
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("self-sign root: %w", err)
	}
	root, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, nil, nil, err
	}
	issuerTmpl := &x509.Certificate{
		SerialNumber:          issuerSerial,
		Subject:               pkix.Name{CommonName: commonName + " issuer"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	issuerDER, err := x509.CreateCertificate(rand.Reader, issuerTmpl, root, &issuerKey.PublicKey, rootKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("sign issuer: %w", err)
	}
	if issuerKeyPEM, err = EncodeKey(issuerKey); err != nil {
		return nil, nil, nil, err
	}
	if rootKeyPEM, err = EncodeKey(rootKey); err != nil {
		return nil, nil, nil, err
	}
	issuer, err = LoadIssuer(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuerDER}), issuerKeyPEM,
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}), probeIdentity, now)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("new issuer does not load: %w", err)
	}
	return issuer, issuerKeyPEM, rootKeyPEM, nil
}
