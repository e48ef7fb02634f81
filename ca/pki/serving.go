package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// Serving is a TLS serving certificate for an in-cluster API (the tap
// API behind its APIService), under a CA made for it alone whose key is
// dropped as soon as the leaf is signed.
type Serving struct {
	CertPEM, KeyPEM, CAPEM []byte
	NotAfter               time.Time
}

// NewServing makes a serving leaf for hosts under a new CA name-constrained
// to those hosts and unable to sign another CA. The CA's key never leaves
// this function: a leaked serving key signs nothing a client trusting the
// CA would accept, and renewal makes a new CA.
func NewServing(hosts []string, lifetime time.Duration, now time.Time) (*Serving, error) {
	if len(hosts) == 0 {
		return nil, errors.New("a serving certificate needs at least one DNS name")
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caSerial, err := newSerial()
	if err != nil {
		return nil, err
	}
	leafSerial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notBefore, notAfter := now.Add(-time.Hour), now.Add(lifetime)
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: hosts[0] + " serving CA"},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
		PermittedDNSDomains:   hosts,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          leafSerial,
		Subject:               pkix.Name{CommonName: hosts[0]},
		DNSNames:              hosts,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	keyPEM, err := EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return &Serving{
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   keyPEM,
		CAPEM:    pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		NotAfter: notAfter,
	}, nil
}

// CheckServing says whether certPEM/keyPEM is a serving certificate for
// every one of hosts that verifies against caPEM, matches its key and is
// not yet due for renewal at now; it returns when renewal is due.
func CheckServing(certPEM, keyPEM, caPEM []byte, hosts []string, now time.Time) (time.Time, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return time.Time{}, fmt.Errorf("serving certificate: %w", err)
	}
	cas, err := parseCerts(caPEM)
	if err != nil {
		return time.Time{}, fmt.Errorf("serving CA: %w", err)
	}
	if err := KeyMatches(certPEM, keyPEM); err != nil {
		return time.Time{}, err
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	for _, h := range hosts {
		if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: h, Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return time.Time{}, fmt.Errorf("serving certificate for %s: %w", h, err)
		}
	}
	renewAt := RenewAt(certs[0].NotBefore, certs[0].NotAfter)
	if !now.Before(renewAt) {
		return renewAt, ErrRenewalDue
	}
	return renewAt, nil
}
