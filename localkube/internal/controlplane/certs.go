package controlplane

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI holds the paths of the files the control plane is started with. All of
// them live in DIR/pki and are reused by later runs on the same DIR, so a
// kubeconfig handed out once stays valid across down/up.
type PKI struct {
	CACert, CAKey                 string
	ServingCert, ServingKey       string
	AdminCert, AdminKey           string
	ControllerCert, ControllerKey string
	KubeletCert, KubeletKey       string
	SAKey, SAPub                  string
}

func newPKI(dir string) PKI {
	p := func(name string) string { return filepath.Join(dir, name) }
	return PKI{
		CACert: p("ca.crt"), CAKey: p("ca.key"),
		ServingCert: p("apiserver.crt"), ServingKey: p("apiserver.key"),
		AdminCert: p("admin.crt"), AdminKey: p("admin.key"),
		ControllerCert: p("controller-manager.crt"), ControllerKey: p("controller-manager.key"),
		KubeletCert: p("kubelet.crt"), KubeletKey: p("kubelet.key"),
		SAKey: p("sa.key"), SAPub: p("sa.pub"),
	}
}

// ensurePKI creates whatever of the PKI is missing. It is idempotent: a
// complete DIR/pki from an earlier run is left untouched.
func ensurePKI(dir string) (PKI, error) {
	pki := newPKI(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return pki, err
	}
	if fileExists(pki.CACert) && fileExists(pki.CAKey) && fileExists(pki.SAKey) &&
		fileExists(pki.AdminCert) && fileExists(pki.ControllerCert) &&
		fileExists(pki.KubeletCert) && fileExists(pki.ServingCert) {
		return pki, nil
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return pki, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "localkube-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return pki, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	if err := writeCert(pki.CACert, caDER); err != nil {
		return pki, err
	}
	if err := writeKey(pki.CAKey, caKey); err != nil {
		return pki, err
	}

	leaf := func(certPath, keyPath string, tmpl *x509.Certificate) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl.SerialNumber = serial()
		tmpl.NotBefore = now.Add(-time.Hour)
		tmpl.NotAfter = now.AddDate(10, 0, 0)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		if err := writeCert(certPath, der); err != nil {
			return err
		}
		return writeKey(keyPath, key)
	}
	client := func(cn string, orgs ...string) *x509.Certificate {
		return &x509.Certificate{
			Subject:     pkix.Name{CommonName: cn, Organization: orgs},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
	}
	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
		// No ClusterIP: the "kubernetes" Service has no endpoints here (the
		// API server is on loopback), and the service CIDR is per block,
		// which may change between runs of one dir while pki/ stays.
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	steps := []error{
		leaf(pki.ServingCert, pki.ServingKey, serving),
		leaf(pki.AdminCert, pki.AdminKey, client("localkube-admin", "system:masters")),
		leaf(pki.ControllerCert, pki.ControllerKey, client("system:kube-controller-manager")),
		// The process kubelet also schedules pods (pods/binding), which the
		// Node authorizer never grants, so it runs as a cluster admin.
		leaf(pki.KubeletCert, pki.KubeletKey, client("localkube-kubelet", "system:masters")),
	}
	for _, err := range steps {
		if err != nil {
			return pki, err
		}
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return pki, err
	}
	if err := writeKey(pki.SAKey, saKey); err != nil {
		return pki, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return pki, err
	}
	return pki, os.WriteFile(pki.SAPub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func writeCert(path string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal key: %w", err)
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
