package controlplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"path/filepath"
	"time"
)

// FrontProxyClientName is the CN kube-apiserver presents to aggregated
// API servers, and the only name it accepts request headers from.
const FrontProxyClientName = "front-proxy-client"

// frontProxy is the aggregation layer's PKI: a CA of its own (as kubeadm
// makes it, so a client certificate of the cluster CA cannot pass as the
// proxy) and the client certificate the API server proxies with.
type frontProxy struct {
	CACert, ClientCert, ClientKey string
}

// ensureFrontProxy creates the front-proxy CA and client certificate if
// missing; a dir from an earlier localkube gets them on its next up.
func ensureFrontProxy(dir string) (frontProxy, error) {
	fp := frontProxy{
		CACert:     filepath.Join(dir, "front-proxy-ca.crt"),
		ClientCert: filepath.Join(dir, "front-proxy-client.crt"),
		ClientKey:  filepath.Join(dir, "front-proxy-client.key"),
	}
	if fileExists(fp.CACert) && fileExists(fp.ClientCert) && fileExists(fp.ClientKey) {
		return fp, nil
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fp, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "localkube-front-proxy-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fp, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fp, err
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: FrontProxyClientName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &key.PublicKey, caKey)
	if err != nil {
		return fp, err
	}
	for _, err := range []error{writeCert(fp.CACert, caDER), writeCert(fp.ClientCert, der), writeKey(fp.ClientKey, key)} {
		if err != nil {
			return fp, err
		}
	}
	return fp, nil
}
