package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// KubeProxyName is kube-proxy's binary, component and log name.
const KubeProxyName = "kube-proxy"

// KubeProxyUser is the user kube-proxy authenticates as: the default RBAC
// binds it to system:node-proxier, what kube-proxy needs and no more.
const KubeProxyUser = "system:kube-proxy"

// KubeProxy configures kube-proxy, which runs in the cluster's node network
// namespace (its iptables rules are per namespace, so parallel clusters on
// one machine keep theirs apart).
type KubeProxy struct {
	// Server is the API server's URL as seen from the node namespace (the
	// relay on the node address), with TLSServerName the name its serving
	// certificate has for it.
	Server, TLSServerName string
	NodeName              string
	NodeIP                net.IP // the node's address in the namespace: kube-proxy binds and serves NodePorts there
	ClusterCIDR           string // the pod CIDR: traffic from outside it to a ClusterIP is masqueraded
	// HealthzIP is an address of the node namespace the host reaches;
	// kube-proxy serves /healthz and /metrics there (fixed ports: the
	// namespace is the cluster's own).
	HealthzIP net.IP
	// Enter runs fn on a thread inside the node namespace; a process
	// started there lives in it.
	Enter func(fn func() error) error
}

// Fixed ports of kube-proxy in the node namespace (its defaults).
const (
	KubeProxyHealthzPort = 10256
	KubeProxyMetricsPort = 10249
)

// HealthzURL is where kube-proxy says whether it has synced its rules.
func (k KubeProxy) HealthzURL() string {
	return "http://" + net.JoinHostPort(k.HealthzIP.String(), strconv.Itoa(KubeProxyHealthzPort)) + "/healthz"
}

// CheckKubeProxyBinary names the kube-proxy binary if it is missing.
func CheckKubeProxyBinary(binDir string) error {
	p := filepath.Join(binDir, KubeProxyName)
	if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("missing binary %s: run `make localkube` in the repository root", p)
	}
	return nil
}

// StartKubeProxy starts kube-proxy in the node namespace. WaitKubeProxy
// tells when it has synced.
func (c *ControlPlane) StartKubeProxy(kp KubeProxy) error {
	if err := CheckKubeProxyBinary(c.opts.BinDir); err != nil {
		return err
	}
	pkiDir := filepath.Join(c.opts.Dir, "pki")
	cert, key, err := ensureClientCert(pkiDir, c.PKI, "kube-proxy", KubeProxyUser)
	if err != nil {
		return fmt.Errorf("kube-proxy certificate: %w", err)
	}
	kubeconfig := filepath.Join(pkiDir, "kube-proxy.kubeconfig")
	ca, err := os.ReadFile(c.PKI.CACert)
	if err != nil {
		return err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["localkube"] = &clientcmdapi.Cluster{Server: kp.Server, TLSServerName: kp.TLSServerName, CertificateAuthorityData: ca}
	cfg.AuthInfos["kube-proxy"] = &clientcmdapi.AuthInfo{ClientCertificate: cert, ClientKey: key}
	cfg.Contexts["localkube"] = &clientcmdapi.Context{Cluster: "localkube", AuthInfo: "kube-proxy"}
	cfg.CurrentContext = "localkube"
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		return err
	}
	metrics := net.JoinHostPort(kp.HealthzIP.String(), strconv.Itoa(KubeProxyMetricsPort))
	healthz := net.JoinHostPort(kp.HealthzIP.String(), strconv.Itoa(KubeProxyHealthzPort))
	c.enter = kp.Enter
	defer func() { c.enter = nil }()
	return c.spawn(KubeProxyName,
		"--kubeconfig="+kubeconfig,
		"--proxy-mode=iptables",
		"--hostname-override="+kp.NodeName,
		"--bind-address="+kp.NodeIP.String(),
		"--cluster-cidr="+kp.ClusterCIDR,
		"--nodeport-addresses="+kp.NodeIP.String()+"/32",
		"--healthz-bind-address="+healthz,
		"--metrics-bind-address="+metrics,
		// conntrack's table size and timeouts are machine-wide sysctls
		// (or read-only outside the host namespace): leave them alone.
		"--conntrack-max-per-core=0",
		"--conntrack-tcp-timeout-established=0",
		"--conntrack-tcp-timeout-close-wait=0",
		// Services change often in tests: sync at once, not every second.
		"--iptables-min-sync-period=0s",
		"--profiling=false",
		"--v=1",
	)
}

// WaitKubeProxy returns once kube-proxy's /healthz says it has written its
// rules at least once, so a ClusterIP routes when up reports ready.
func (c *ControlPlane) WaitKubeProxy(ctx context.Context, kp KubeProxy, limit time.Duration) error {
	hc := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	last := "no answer"
	for {
		resp, err := hc.Get(kp.HealthzURL())
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d", resp.StatusCode)
		} else {
			last = err.Error()
		}
		if c.done(KubeProxyName) {
			return c.exitError(KubeProxyName)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-proxy did not sync within %s (healthz: %s; log: %s)", limit, last, LogPath(c.opts.Dir, KubeProxyName))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ensureClientCert issues DIR/NAME.crt and NAME.key for user cn from the
// cluster CA if missing: a dir made by an earlier localkube gets it on its
// next up without a new CA.
func ensureClientCert(dir string, pki PKI, name, cn string, orgs ...string) (string, string, error) {
	certPath, keyPath := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if fileExists(certPath) && fileExists(keyPath) {
		return certPath, keyPath, nil
	}
	ca, err := tls.LoadX509KeyPair(pki.CACert, pki.CAKey)
	if err != nil {
		return "", "", err
	}
	caCert, err := x509.ParseCertificate(ca.Certificate[0])
	if err != nil {
		return "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	now := time.Now()
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(10, 0, 0),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, caCert, &key.PublicKey, ca.PrivateKey)
	if err != nil {
		return "", "", err
	}
	if err := writeKey(keyPath, key); err != nil {
		return "", "", err
	}
	if err := writeCert(certPath, der); err != nil {
		return "", "", errors.Join(err, os.Remove(keyPath))
	}
	return certPath, keyPath, nil
}
