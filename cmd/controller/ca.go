package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"meshtls/ca"
	"meshtls/ca/pki"
	"meshtls/contract"
)

type caOptions struct {
	kubeconfig string
	adminAddr  string
	qps        float32
	burst      int
	logFormat  string
	cfg        ca.Config
}

func newCACmd() *cobra.Command {
	o := &caOptions{}
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Run the certificate authority that issues workload certificates",
		Long: `Run the certificate authority.

It watches this control plane's pods annotated linkerd.io/tls=optional and
keeps, for each workload owner, a kubernetes.io/tls Secret
<owner>-<kind>-tls-linkerd-io holding an ECDSA P-256 certificate for the
owner's identity, plus the ConfigMap linkerd-ca-bundle in each such
namespace. The root lives in the Secret linkerd-ca-root of the control-plane
namespace: it is created only when absent and no trust bundle still holds an
earlier root, a malformed one stops the CA, and changes to it (linkerd ca
rotate) are followed at runtime. With tls.crt an intermediate issuer, ca.crt
holds the offline root it chains to.`,
		Example: `  # In a pod (in-cluster credentials), as linkerd install runs it
  controller ca --controller-namespace=linkerd --admin-addr=0.0.0.0:9995

  # From a workstation, with one-hour certificates
  controller ca --kubeconfig ~/.kube/config --cert-lifetime 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := contract.CheckClusterDomain(o.cfg.ClusterDomain); err != nil {
				return err
			}
			return runCA(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else in-cluster credentials)")
	f.StringVar(&o.adminAddr, "admin-addr", "127.0.0.1:9995", "address for /ready, /live and /metrics (empty disables)")
	f.Float32Var(&o.qps, "kube-api-qps", 100, "API requests per second the CA may make")
	f.IntVar(&o.burst, "kube-api-burst", 200, "API request burst")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.cfg.ControlNamespace, "controller-namespace", "linkerd", "control-plane namespace: the root Secret and Lease live here")
	f.StringVar(&o.cfg.ClusterDomain, "cluster-domain", contract.DefaultClusterDomain, "the cluster's DNS domain: it ends every identity the CA issues")
	f.DurationVar(&o.cfg.LeafLifetime, "cert-lifetime", pki.DefaultLeafLifetime, "lifetime of workload certificates (renewed between 0.57 and 0.67 of it; at least "+ca.MinLeafLifetime.String()+")")
	f.DurationVar(&o.cfg.RootLifetime, "root-lifetime", pki.DefaultRootLifetime, "lifetime of a generated root")
	f.IntVar(&o.cfg.Workers, "workers", 16, "owners reconciled in parallel")
	f.DurationVar(&o.cfg.Resync, "resync", 10*time.Minute, "re-examine every TLS pod this often")
	f.StringVar(&o.cfg.Identity, "leader-elect-identity", os.Getenv("POD_NAME"), "this replica's name in the Lease (default: $POD_NAME, else host_pid)")
	f.DurationVar(&o.cfg.LeaseDuration, "leader-elect-lease-duration", 15*time.Second, "how long a Lease holder is trusted without renewing")
	f.DurationVar(&o.cfg.RenewDeadline, "leader-elect-renew-deadline", 10*time.Second, "how long the leader keeps trying to renew before giving up")
	f.DurationVar(&o.cfg.RetryPeriod, "leader-elect-retry-period", 2*time.Second, "how often candidates try to take the Lease")
	return cmd
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		kubeconfig = os.Getenv("KUBECONFIG")
	}
	if kubeconfig != "" {
		c, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return c, nil
	}
	c, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("no kubeconfig given and not in a cluster: %w", err)
	}
	return c, nil
}

func runCA(parent context.Context, o *caOptions) error {
	log, err := newLogger(o.logFormat, "ca")
	if err != nil {
		return err
	}
	o.cfg.Logger = log

	rc, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	rc.QPS, rc.Burst = o.qps, o.burst
	rc.UserAgent = "linkerd-ca"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctrl, err := ca.New(client, o.cfg)
	if err != nil {
		return err
	}

	ctx, stop := signalContext(parent)
	defer stop()

	if o.adminAddr != "" {
		l, err := net.Listen("tcp", o.adminAddr)
		if err != nil {
			return fmt.Errorf("admin listener: %w", err)
		}
		o.cfg.Logger.Info("serving admin endpoints", "addr", l.Addr().String())
		go func() {
			if err := ctrl.Serve(ctx, l); err != nil {
				o.cfg.Logger.Error("admin server stopped", "err", err)
			}
		}()
	}
	err = ctrl.Run(ctx)
	if errors.Is(err, ca.ErrLostLease) {
		return fmt.Errorf("%w: exiting so the pod restarts as a standby", err)
	}
	return err
}
