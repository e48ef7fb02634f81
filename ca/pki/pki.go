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
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// Defaults from the design: workload leaves live a day, the root a year.
const (
	DefaultLeafLifetime = 24 * time.Hour
	DefaultRootLifetime = 365 * 24 * time.Hour
)

// maxBackdate bounds how far NotBefore is set in the past, so a peer whose
// clock is slightly behind still accepts a fresh certificate.
const maxBackdate = time.Minute

// Root is a loaded signing root. Key never leaves the process except as the
// root Secret the CA itself persists.
type Root struct {
	Cert    *x509.Certificate
	CertPEM []byte
	key     crypto.Signer
	pool    *x509.CertPool
}

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
func (l *Leaf) RenewAt() time.Time { return RenewAt(l.NotBefore, l.NotAfter) }

// RenewAt is two thirds of the way through a validity window: late enough
// not to churn, early enough that a slow or briefly failing CA still
// replaces the certificate well before it expires.
func RenewAt(notBefore, notAfter time.Time) time.Time {
	return notBefore.Add(notAfter.Sub(notBefore) * 2 / 3)
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

// LoadRoot parses and validates a root from PEM. Errors name what is wrong
// and never include key material.
func LoadRoot(certPEM, keyPEM []byte, now time.Time) (*Root, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("root certificate: %w", err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("root certificate: want exactly one certificate, found %d", len(certs))
	}
	cert := certs[0]
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, errors.New("root certificate is not a CA (basicConstraints CA:TRUE missing)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("root certificate may not sign certificates (keyUsage lacks keyCertSign)")
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("root certificate expired at %s", cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("root certificate is not valid before %s", cert.NotBefore.UTC().Format(time.RFC3339))
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		return nil, fmt.Errorf("root certificate is not self-signed: %w", err)
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("root key: %w", err)
	}
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("root key does not match the root certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &Root{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		key:     key,
		pool:    pool,
	}, nil
}

// Pool is a pool holding only this root, for verifying leaves.
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
	if notAfter.After(r.Cert.NotAfter) {
		notAfter = r.Cert.NotAfter
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
// under this root at now. It returns the leaf's renewal time when it is,
// and an error saying why not otherwise; a leaf past its renewal time is
// reported as ErrRenewalDue.
func (r *Root) Check(certPEM, keyPEM []byte, identity string, now time.Time) (time.Time, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return time.Time{}, fmt.Errorf("tls.crt: %w", err)
	}
	leaf := certs[0]
	if len(certs) != 2 || !certs[1].Equal(r.Cert) {
		return time.Time{}, errors.New("tls.crt: chain is not leaf then the current root")
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:     identity,
		Roots:       r.pool,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return time.Time{}, fmt.Errorf("tls.crt: %w", err)
	}
	if !hasBothUsages(leaf) {
		return time.Time{}, errors.New("tls.crt: extended key usage must include both serverAuth and clientAuth")
	}
	key, err := ParseKey(keyPEM)
	if err != nil {
		return time.Time{}, fmt.Errorf("tls.key: %w", err)
	}
	if !publicKeysEqual(key.Public(), leaf.PublicKey) {
		return time.Time{}, errors.New("tls.key does not match tls.crt")
	}
	renewAt := RenewAt(leaf.NotBefore, leaf.NotAfter)
	if !now.Before(renewAt) {
		return renewAt, ErrRenewalDue
	}
	return renewAt, nil
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
