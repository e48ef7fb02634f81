package check

import (
	"context"
	"net"
	"time"

	"k8s.io/client-go/kubernetes"

	"meshtls/contract"
)

// Category names, as printed and in JSON.
const (
	CategoryKubernetesAPI   = "kubernetes-api"
	CategoryLinkerdExists   = "linkerd-existence"
	CategoryCA              = "linkerd-ca"
	CategoryTLSDataPlane    = "linkerd-tls-data-plane"
	MinKubernetesVersion    = "1.30.0" // install's ValidatingAdmissionPolicy is v1 from 1.30
	defaultParallelism      = 16
	defaultDialTimeout      = 2 * time.Second
	caComponent             = "ca"
	caAdminPortName         = "admin-http"
	caLeaseName             = "linkerd-ca"
	caDeploymentForMessages = "linkerd-ca"
)

// Defaults for the expiry thresholds: the root is replaced by hand, so it
// warns a month ahead; leaves renew by themselves within a day, so only a
// few hours of slack means the CA is not renewing.
const (
	DefaultRootWarnWithin = 30 * 24 * time.Hour
	DefaultRootFailWithin = 7 * 24 * time.Hour
	DefaultLeafWarnWithin = 6 * time.Hour
	DefaultLeafFailWithin = time.Hour
)

// Config is everything the checks need; cli fills it from flags.
type Config struct {
	// ControlNamespace is the control plane's namespace (-L).
	ControlNamespace string
	// ClusterDomain ends the identities workloads' certificates must
	// name; "" is cluster.local.
	ClusterDomain string
	// TLS adds the linkerd-ca and linkerd-tls-data-plane categories.
	TLS bool
	// NewClient builds the Kubernetes client; its failure is the first
	// check's failure rather than an error before any output.
	NewClient func() (kubernetes.Interface, error)

	RootWarnWithin, RootFailWithin time.Duration
	LeafWarnWithin, LeafFailWithin time.Duration

	// Now is the clock certificates are judged by (default time.Now).
	Now func() time.Time
	// Parallelism bounds concurrent certificate checks and proxy dials.
	Parallelism int
	// DialTimeout bounds each TLS dial to a proxy and each /ready probe.
	DialTimeout time.Duration
	// Dial connects to addr; tests and unusual networks may replace it.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

func (c Config) withDefaults() Config {
	if c.ControlNamespace == "" {
		c.ControlNamespace = "linkerd"
	}
	if c.ClusterDomain == "" {
		c.ClusterDomain = contract.DefaultClusterDomain
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Parallelism <= 0 {
		c.Parallelism = defaultParallelism
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = defaultDialTimeout
	}
	if c.Dial == nil {
		d := &net.Dialer{Timeout: c.DialTimeout}
		c.Dial = d.DialContext
	}
	if c.RootWarnWithin == 0 {
		c.RootWarnWithin = DefaultRootWarnWithin
	}
	if c.RootFailWithin == 0 {
		c.RootFailWithin = DefaultRootFailWithin
	}
	if c.LeafWarnWithin == 0 {
		c.LeafWarnWithin = DefaultLeafWarnWithin
	}
	if c.LeafFailWithin == 0 {
		c.LeafFailWithin = DefaultLeafFailWithin
	}
	return c
}

// Categories builds the checks cfg asks for. The returned checkers share
// only loaders (Lazy), never fields they write.
func Categories(cfg Config) []Category {
	cfg = cfg.withDefaults()
	client := NewLazy(func(context.Context) (kubernetes.Interface, error) {
		if cfg.NewClient == nil {
			return nil, errNoClientConfigured
		}
		return cfg.NewClient()
	})
	cats := []Category{kubernetesAPI(client), linkerdExistence(cfg, client), tapCategory(cfg, client)}
	if cfg.TLS {
		root := NewLazy(func(ctx context.Context) (*rootInfo, error) { return loadRoot(ctx, cfg, client) })
		snap := NewLazy(func(ctx context.Context) (*dataPlane, error) { return loadDataPlane(ctx, cfg, client, root) })
		cats = append(cats, caCategory(cfg, client, root), dataPlaneCategory(cfg, snap))
	}
	return cats
}
