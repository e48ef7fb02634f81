package check

import (
	"context"
	"crypto"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/contract"
)

// rootInfo is the root as the root Secret holds it now.
type rootInfo struct {
	// Cert is the issuer: the root itself, or an intermediate.
	Cert *x509.Certificate
	// Anchors are the roots Cert chains to (Cert itself when it is a root).
	Anchors []*x509.Certificate
	// Expected is exactly what every trust bundle may hold: Anchors, or
	// during a rotation the old and the new roots.
	Expected []*x509.Certificate
}

// loadRoot reads and parses the root Secret. The key is parsed only to
// prove it matches; it is never kept or printed.
func loadRoot(ctx context.Context, cfg Config, client *Lazy[kubernetes.Interface]) (*rootInfo, error) {
	c, err := client.Get(ctx)
	if err != nil {
		return nil, err
	}
	ns := cfg.ControlNamespace
	s, err := c.CoreV1().Secrets(ns).Get(ctx, contract.RootSecret, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("root Secret %s/%s does not exist", ns, contract.RootSecret)
	}
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCerts(s.Data[corev1.TLSCertKey])
	if err != nil {
		return nil, fmt.Errorf("root Secret %s/%s: %s: %w", ns, contract.RootSecret, corev1.TLSCertKey, err)
	}
	if len(certs) != 1 {
		return nil, fmt.Errorf("root Secret %s/%s: %s holds %d certificates, want the root alone", ns, contract.RootSecret, corev1.TLSCertKey, len(certs))
	}
	key, err := pki.ParseKey(s.Data[corev1.TLSPrivateKeyKey])
	if err != nil {
		return nil, fmt.Errorf("root Secret %s/%s: %s: %w", ns, contract.RootSecret, corev1.TLSPrivateKeyKey, err)
	}
	type equaler interface{ Equal(crypto.PublicKey) bool }
	if pub, ok := key.Public().(equaler); !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, fmt.Errorf("root Secret %s/%s: %s does not match %s", ns, contract.RootSecret, corev1.TLSPrivateKeyKey, corev1.TLSCertKey)
	}
	info := &rootInfo{Cert: certs[0], Anchors: certs}
	if b := s.Data[contract.RootAnchorsKey]; len(b) > 0 {
		if info.Anchors, err = pki.ParseCerts(b); err != nil {
			return nil, fmt.Errorf("root Secret %s/%s: %s: %w", ns, contract.RootSecret, contract.RootAnchorsKey, err)
		}
	}
	info.Expected = info.Anchors
	if b := s.Data[contract.RootBundleKey]; len(b) > 0 {
		if info.Expected, err = pki.ParseCerts(b); err != nil {
			return nil, fmt.Errorf("root Secret %s/%s: %s: %w", ns, contract.RootSecret, contract.RootBundleKey, err)
		}
	}
	return info, nil
}

func caCategory(cfg Config, client *Lazy[kubernetes.Interface], root *Lazy[*rootInfo]) Category {
	ns := cfg.ControlNamespace
	caPods := func(ctx context.Context) ([]corev1.Pod, error) {
		c, err := client.Get(ctx)
		if err != nil {
			return nil, err
		}
		list, err := c.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=" + caComponent})
		if err != nil {
			return nil, err
		}
		var live []corev1.Pod
		for _, p := range list.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				live = append(live, p)
			}
		}
		return live, nil
	}
	rootCert := func(ctx context.Context) (*x509.Certificate, error) {
		r, err := root.Get(ctx)
		if err != nil {
			return nil, Skip("no usable root, see above")
		}
		return r.Cert, nil
	}
	restartCA := fmt.Sprintf("kubectl -n %s rollout restart deploy/%s", ns, caDeploymentForMessages)
	rotate := "linkerd ca rotate"
	if ns != "linkerd" {
		rotate += " -L " + ns
	}
	return Category{Name: CategoryCA, Checkers: []Checker{
		{
			Description: "CA Deployment is ready",
			Hint:        fmt.Sprintf("kubectl -n %s describe deploy -l %s=%s; kubectl -n %s logs deploy/%s", ns, contract.ComponentLabel, caComponent, ns, caDeploymentForMessages),
			Retry:       true,
			Run: func(ctx context.Context) error {
				c, err := client.Get(ctx)
				if err != nil {
					return err
				}
				list, err := c.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{LabelSelector: contract.ComponentLabel + "=" + caComponent})
				if err != nil {
					return err
				}
				if len(list.Items) == 0 {
					return fmt.Errorf("no CA Deployment in %s", ns)
				}
				for _, d := range list.Items {
					if reason := deploymentNotReady(&d); reason != "" {
						return fmt.Errorf("deploy/%s: %s", d.Name, reason)
					}
				}
				return nil
			},
		},
		{
			Description: "CA answers /ready",
			Hint:        fmt.Sprintf("the CA is ready once its root is loaded and its caches synced: kubectl -n %s logs deploy/%s", ns, caDeploymentForMessages),
			Retry:       true,
			Run: func(ctx context.Context) error {
				c, err := client.Get(ctx)
				if err != nil {
					return err
				}
				pods, err := caPods(ctx)
				if err != nil {
					return err
				}
				if len(pods) == 0 {
					return fmt.Errorf("no running CA pod in %s", ns)
				}
				var probs []Problem
				var notes []string
				for _, p := range pods {
					via, err := probeReady(ctx, c, cfg, &p)
					if err != nil {
						probs = append(probs, Problem{Kind: "po", Name: p.Namespace + "/" + p.Name, Reason: err.Error(),
							Remedy: fmt.Sprintf("kubectl -n %s logs %s", p.Namespace, p.Name)})
						continue
					}
					if via != "" {
						notes = append(notes, fmt.Sprintf("po/%s/%s: %s", p.Namespace, p.Name, via))
					}
				}
				return WithNotes(Problems(probs, "CA pods not ready: %d"), notes...)
			},
		},
		{
			Description: "CA leader election has a live holder",
			Hint:        fmt.Sprintf("with several replicas one must hold Lease %s/%s: kubectl -n %s get lease %s -o yaml", ns, caLeaseName, ns, caLeaseName),
			Retry:       true,
			Run: func(ctx context.Context) error {
				c, err := client.Get(ctx)
				if err != nil {
					return err
				}
				pods, err := caPods(ctx)
				if err != nil {
					return err
				}
				switch len(pods) {
				case 0:
					return Skip("no running CA replica, see above")
				case 1:
					return WithNotes(nil, "1 running replica: no election needed")
				}
				lease, err := c.CoordinationV1().Leases(ns).Get(ctx, caLeaseName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("lease %s/%s does not exist though %d replicas run", ns, caLeaseName, len(pods))
				}
				if err != nil {
					return err
				}
				return leaseProblem(lease.Spec.HolderIdentity, lease.Spec.RenewTime, lease.Spec.LeaseDurationSeconds, pods, time.Now())
			},
		},
		{
			Description: "root Secret exists and parses",
			Hint:        fmt.Sprintf("the CA creates %s/%s on its first start (%s); restore a damaged or lost one from a backup, or replace it with `%s` (the CA refuses to replace it itself)", ns, contract.RootSecret, restartCA, rotate),
			Retry:       true,
			Run: func(ctx context.Context) error {
				_, err := root.Get(ctx)
				return err
			},
		},
		{
			Description: "root is a CA certificate valid for server and client auth",
			Hint:        "issue a root with basicConstraints CA:TRUE, keyUsage keyCertSign and either no extended key usage or both serverAuth and clientAuth",
			Run: func(ctx context.Context) error {
				r, err := rootCert(ctx)
				if err != nil {
					return err
				}
				if p := rootUsageProblem(r); p != "" {
					return fmt.Errorf("root %q: %s", r.Subject.CommonName, p)
				}
				return nil
			},
		},
		{
			Description: "root is within its validity period",
			Hint:        "replace the root without a gap in trust: " + rotate,
			Run: func(ctx context.Context) error {
				r, err := rootCert(ctx)
				if err != nil {
					return err
				}
				if p := validityProblem(r, cfg.Now()); p != "" {
					return fmt.Errorf("root %q: %s", r.Subject.CommonName, p)
				}
				return nil
			},
		},
		{
			Description: "root is not expiring soon",
			Hint:        "rotate the root before it expires: " + rotate,
			Run: func(ctx context.Context) error {
				r, err := rootCert(ctx)
				if err != nil {
					return err
				}
				now := cfg.Now()
				if validityProblem(r, now) != "" {
					return Skip("the root is outside its validity period, see above")
				}
				p, fatal := expiryProblem(r.NotAfter, now, thresholds{cfg.RootWarnWithin, cfg.RootFailWithin})
				if p == "" {
					return nil
				}
				err = fmt.Errorf("root %q %s", r.Subject.CommonName, p)
				if !fatal {
					return Warn(err)
				}
				return err
			},
		},
		{
			Description: "root uses a supported algorithm",
			Hint:        "use an ECDSA P-256 root (what linkerd install generates) or RSA of 2048 bits or more",
			Run: func(ctx context.Context) error {
				r, err := rootCert(ctx)
				if err != nil {
					return err
				}
				if p := algorithmProblem(r); p != "" {
					return fmt.Errorf("root %q: %s", r.Subject.CommonName, p)
				}
				return nil
			},
		},
	}}
}

// leaseProblem says whether the Lease names a live holder among pods.
func leaseProblem(holder *string, renew *metav1.MicroTime, durationSeconds *int32, pods []corev1.Pod, now time.Time) error {
	if holder == nil || *holder == "" {
		return fmt.Errorf("lease %s has no holder: no replica is issuing certificates", caLeaseName)
	}
	if renew == nil || durationSeconds == nil {
		return fmt.Errorf("lease %s held by %s has no renew time", caLeaseName, *holder)
	}
	if expiry := renew.Add(time.Duration(*durationSeconds) * time.Second); now.After(expiry) {
		return fmt.Errorf("lease %s held by %s was last renewed at %s and lapsed at %s: the holder is gone or stuck", caLeaseName, *holder, stamp(renew.Time), stamp(expiry))
	}
	for _, p := range pods {
		if p.Name == *holder {
			return nil
		}
	}
	return fmt.Errorf("lease %s is held by %s, which is not a running CA pod", caLeaseName, *holder)
}

// probeReady asks a CA pod's /ready. It goes through the API server's
// pods/proxy subresource, which works wherever the user's credentials do,
// and falls back to the pod IP when the API server refuses to proxy there
// (some API servers refuse loopback or link-local pod IPs, as the local
// cluster's does). via says which way answered when it was not the first.
func probeReady(ctx context.Context, c kubernetes.Interface, cfg Config, pod *corev1.Pod) (via string, err error) {
	port := adminPort(pod)
	if port == 0 {
		return "", fmt.Errorf("no container port named %s", caAdminPortName)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout*2)
	defer cancel()
	body, proxyErr := c.CoreV1().Pods(pod.Namespace).ProxyGet("http", pod.Name, strconv.Itoa(int(port)), "/ready", nil).DoRaw(pctx)
	if proxyErr == nil {
		return "", nil
	}
	if apierrors.IsServiceUnavailable(proxyErr) && len(body) > 0 {
		// The API server reached the CA and relayed its 503.
		return "", fmt.Errorf("/ready answered 503: %s", firstLine(body))
	}
	if pod.Status.PodIP == "" {
		return "", fmt.Errorf("pods/proxy failed (%s) and the pod has no IP", firstLine([]byte(proxyErr.Error())))
	}
	addr := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(int(port)))
	hc := &http.Client{Timeout: cfg.DialTimeout, Transport: &http.Transport{DialContext: cfg.Dial}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/ready", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("pods/proxy failed (%s), and so did %s directly: %v", firstLine([]byte(proxyErr.Error())), addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/ready answered %d: %s", resp.StatusCode, firstLine(b))
	}
	return fmt.Sprintf("answered at %s directly; pods/proxy through the API server failed: %s", addr, firstLine([]byte(proxyErr.Error()))), nil
}

func adminPort(pod *corev1.Pod) int32 {
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.Name == caAdminPortName {
				return p.ContainerPort
			}
		}
	}
	return 0
}

func firstLine(b []byte) string {
	s := string(b)
	for i, r := range s {
		if r == '\n' {
			s = s[:i]
			break
		}
	}
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
