package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"

	"meshtls/contract"
	"meshtls/destination"
)

type destinationOptions struct {
	kubeconfig   string
	addr         string
	adminAddr    string
	logFormat    string
	tlsCert      string
	tlsKey       string
	trustAnchors string
	cfg          destination.Config
}

func newDestinationCmd() *cobra.Command {
	o := &destinationOptions{}
	cmd := &cobra.Command{
		Use:   "destination",
		Short: "Run the service discovery API proxies ask for endpoints and TLS identities",
		Long: `Run the destination service.

Proxies open a Destination.Get stream per authority ("svc.ns:port",
"svc.ns.svc.<cluster-domain>:port") or address ("IP:port", a pod IP or a
Service's ClusterIP) and receive its endpoints, then changes, from watches on
Services, EndpointSlices and Pods. An endpoint carries its pod's TLS identity
only when the pod is meshed by this control plane with linkerd.io/tls=optional,
is Ready, and presents a certificate for that identity, chaining to the trust
anchors of the moment, on its inbound port (4143) when the controller opens a
TLS handshake there. Until that check concludes (and while such a pod is not
Ready) the pod is left out of answers rather than advertised without identity.
The trust anchors are re-read when the bundle changes. Each client connection
may hold at most 2048 Get streams.

With --tls-cert, --tls-key and --tls-trust-anchors (the controller's own
Secret and the trust bundle), the gRPC port serves TLS with the controller's
identity, verifying client certificates against the anchors, and still
accepts plain-text clients (proxies without a certificate). The files are
re-read when they change; until they exist, TLS handshakes fail and plain text
works. Without those flags it serves plain text only.`,
		Example: `  # In a pod, as linkerd install runs it
  controller destination --controller-namespace=linkerd --addr=0.0.0.0:8086 --admin-addr=0.0.0.0:9996

  # From a workstation against a cluster
  controller destination --kubeconfig ~/.kube/config --addr 127.0.0.1:8086`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDestination(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else in-cluster credentials)")
	f.StringVar(&o.addr, "addr", fmt.Sprintf("127.0.0.1:%d", contract.DestinationPort), "address for the Destination gRPC API")
	f.StringVar(&o.adminAddr, "admin-addr", "127.0.0.1:9996", "address for /ready, /live and /metrics (empty disables)")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.cfg.ControlNamespace, "controller-namespace", "linkerd", "control-plane namespace: only pods meshed by it get identities")
	f.StringVar(&o.cfg.ClusterDomain, "cluster-domain", contract.DefaultClusterDomain, "the cluster's DNS domain: it ends Service names and the identities of pods")
	f.DurationVar(&o.cfg.Resync, "resync", 0, "re-deliver every watched object this often (0: never)")
	f.BoolVar(&o.cfg.TrustReadiness, "trust-readiness", false, "advertise a TLS pod's identity once it is Ready, without checking by a handshake to its inbound port that it serves it (for clusters where the controller cannot reach pods)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "the controller's certificate (PEM, leaf then chain)")
	f.StringVar(&o.tlsKey, "tls-key", "", "the controller's private key (PEM)")
	f.StringVar(&o.trustAnchors, "tls-trust-anchors", "", "trust anchors that client certificates must chain to (PEM)")
	return cmd
}

func runDestination(parent context.Context, o *destinationOptions) error {
	log, err := newLogger(o.logFormat, "destination")
	if err != nil {
		return err
	}
	o.cfg.Logger = log

	tlsFlags := 0
	for _, v := range []string{o.tlsCert, o.tlsKey, o.trustAnchors} {
		if v != "" {
			tlsFlags++
		}
	}
	if tlsFlags != 0 && tlsFlags != 3 {
		return errors.New("--tls-cert, --tls-key and --tls-trust-anchors go together: give all three or none")
	}

	rc, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	rc.UserAgent = "linkerd-destination"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, stop := signalContext(parent)
	defer stop()

	l, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("gRPC listener: %w", err)
	}
	var anchors *destination.AnchorsFile
	if o.trustAnchors != "" {
		anchors = &destination.AnchorsFile{Path: o.trustAnchors, Logger: log}
		if err := anchors.Load(); err != nil {
			if _, statErr := os.Stat(o.trustAnchors); statErr == nil {
				_ = l.Close()
				return fmt.Errorf("--tls-trust-anchors: %w", err)
			}
			// The bundle is mounted optional and may arrive after us.
			log.Warn("trust anchors not readable yet: served pod certificates are checked for identity and dates only until they are", "err", err)
		}
		o.cfg.Anchors = anchors.Pool
	}
	srv, err := destination.New(client, o.cfg)
	if err != nil {
		_ = l.Close()
		return err
	}
	if anchors != nil {
		// A rotated bundle re-checks every pod, so pods issued under the
		// new root are advertised with their identity.
		anchors.Changed = srv.AnchorsChanged
		go anchors.Watch(ctx, 10*time.Second)
	}

	opts := destination.ServerOptions()
	if tlsFlags == 3 {
		files := &destination.CertFiles{Cert: o.tlsCert, Key: o.tlsKey, TrustAnchors: o.trustAnchors, Logger: log}
		if err := files.Load(); err != nil {
			// The Secret is mounted optional and may arrive after us.
			log.Warn("serving plain text until the controller identity is usable", "err", err)
		}
		opts = append(opts, grpc.Creds(destination.EitherCredentials(files.ServerConfig())))
		log.Info("serving Destination API: TLS with the controller identity, and plain text", "addr", l.Addr().String())
	} else {
		log.Info("serving Destination API in plain text (no --tls-cert)", "addr", l.Addr().String())
	}
	g := grpc.NewServer(opts...)
	srv.Register(g)

	admin, err := serveAdmin(o.adminAddr, srv.AdminHandler(), log)
	if err != nil {
		_ = l.Close()
		return err
	}

	runErr := make(chan error, 1)
	go func() { runErr <- srv.Run(ctx) }()
	serveErr := make(chan error, 1)
	go func() { serveErr <- g.Serve(l) }()

	var result error
	select {
	case err := <-runErr:
		result = err
	case err := <-serveErr:
		result = fmt.Errorf("gRPC server: %w", err)
	}
	stop()
	// Streams are endless: stop them rather than wait for them.
	g.Stop()
	if admin != nil {
		_ = admin.Close()
	}
	return result
}
