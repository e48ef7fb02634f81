package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"meshtls/contract"
	"meshtls/tapapi"
)

type tapOptions struct {
	kubeconfig    string
	addr          string
	adminAddr     string
	logFormat     string
	clusterDomain string
	controllerNS  string
	servingCert   string
	servingKey    string
	identityCert  string
	identityKey   string
	trustAnchors  string
	authorization bool
}

func newTapCmd() *cobra.Command {
	o := &tapOptions{}
	cmd := &cobra.Command{
		Use:   "tap",
		Short: "Run the tap API (tap.linkerd.io), which streams live requests from proxies",
		Long: `Run the tap API, served as the aggregated API tap.linkerd.io/v1alpha1 behind the
Kubernetes API server.

It accepts only the API server's front proxy (a client certificate signed by
the requestheader client CA in kube-system/extension-apiserver-authentication,
with an allowed name), takes the user from its headers, and checks with a
SubjectAccessReview that the user may watch RESOURCE/tap on the target. It
then resolves the target to running meshed pods, opens Tap.Observe on each
pod's proxy (port 4190) over mutual TLS with the controller's identity, and
streams the merged events under one --max-rps budget, telling the client how
many it dropped.`,
		Example: `  # In a pod, as linkerd install runs it
  controller tap --controller-namespace=linkerd --addr=0.0.0.0:8089 \
      --tls-cert=/var/run/linkerd/tap/tls.crt --tls-key=/var/run/linkerd/tap/tls.key \
      --identity-cert=/var/linkerd-io/identity/tls.crt --identity-key=/var/linkerd-io/identity/tls.key \
      --trust-anchors=/var/linkerd-io/trust-anchors/trust-anchors.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := contract.CheckClusterDomain(o.clusterDomain); err != nil {
				return err
			}
			return runTapAPI(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else in-cluster credentials)")
	f.StringVar(&o.addr, "addr", "127.0.0.1:"+strconv.Itoa(contract.TapAPIPort), "HTTPS address the API server reaches")
	f.StringVar(&o.adminAddr, "admin-addr", "127.0.0.1:"+strconv.Itoa(contract.TapAdminPort), "address for /ready, /live and /metrics (empty disables)")
	f.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	f.StringVar(&o.controllerNS, "controller-namespace", "linkerd", "control-plane namespace: only pods meshed by it are tapped")
	f.StringVar(&o.clusterDomain, "cluster-domain", contract.DefaultClusterDomain, "the cluster's DNS domain: it ends the identities proxies present")
	f.StringVar(&o.servingCert, "tls-cert", "", "serving certificate the API server checks against the APIService's caBundle (PEM)")
	f.StringVar(&o.servingKey, "tls-key", "", "its private key (PEM)")
	f.StringVar(&o.identityCert, "identity-cert", "", "the controller's mesh certificate, presented to proxies (PEM)")
	f.StringVar(&o.identityKey, "identity-key", "", "its private key (PEM)")
	f.StringVar(&o.trustAnchors, "trust-anchors", "", "trust anchors proxies' certificates chain to (PEM)")
	f.BoolVar(&o.authorization, "authorize", true, "check each request with a SubjectAccessReview")
	return cmd
}

func runTapAPI(parent context.Context, o *tapOptions) error {
	log, err := newLogger(o.logFormat, "tap")
	if err != nil {
		return err
	}
	for flag, v := range map[string]string{"--tls-cert": o.servingCert, "--tls-key": o.servingKey,
		"--identity-cert": o.identityCert, "--identity-key": o.identityKey, "--trust-anchors": o.trustAnchors} {
		if v == "" {
			return fmt.Errorf("%s is required", flag)
		}
	}
	serving, err := tls.LoadX509KeyPair(o.servingCert, o.servingKey)
	if err != nil {
		return fmt.Errorf("serving certificate %s: %w", o.servingCert, err)
	}
	rc, err := restConfig(o.kubeconfig)
	if err != nil {
		return err
	}
	rc.UserAgent = "linkerd-tap"
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	ctx, stop := signalContext(parent)
	defer stop()

	auth, err := tapapi.LoadRequestHeaderAuth(ctx, client)
	if err != nil {
		return err
	}
	ids := tapapi.IdentityFiles{Cert: o.identityCert, Key: o.identityKey, TrustAnchors: o.trustAnchors}
	if _, err := ids.Credentials("probe"); err != nil {
		// The CA writes the Secret after this pod exists: wait for it
		// rather than crash-loop; taps fail with this error meanwhile.
		log.Warn("controller identity not usable yet; taps fail until it is", "err", err)
	}
	// Events name peer pods once the pod cache is in; until then (or
	// if it never syncs) their addresses show, and taps work meanwhile.
	peers := tapapi.NewPeers(client)
	go func() {
		if err := peers.Run(ctx); err != nil {
			log.Warn("peer pods stay unnamed", "err", err)
			return
		}
		log.Info("pod cache synced: tap events name peer pods")
	}()
	srv, err := tapapi.New(tapapi.Config{Client: client, ControlNamespace: o.controllerNS, ClusterDomain: o.clusterDomain, Credentials: ids.Credentials,
		Auth: auth, Authorize: o.authorization, Peers: peers, Logger: log})
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", o.addr)
	if err != nil {
		return fmt.Errorf("listener: %w", err)
	}
	hs := &http.Server{
		Handler:           srv.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{serving},
			// The front proxy's certificate is checked per request
			// (discovery needs none); a client without one is not tapped.
			ClientAuth: tls.VerifyClientCertIfGiven,
			ClientCAs:  auth.ClientCAs,
		},
	}
	// The API server's requestheader client CA can be rotated: re-read it
	// (and the allowed names and headers) and hand each handshake the
	// current pool.
	base := hs.TLSConfig.Clone()
	hs.TLSConfig.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.ClientCAs = srv.ClientCAs()
		return c, nil
	}
	go srv.ReloadAuth(ctx, time.Minute)
	admin, err := serveAdmin(o.adminAddr, srv.AdminHandler(), log)
	if err != nil {
		_ = l.Close()
		return err
	}
	log.Info("serving tap.linkerd.io", "addr", l.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- hs.ServeTLS(l, "", "") }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		if !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("tap API server: %w", err)
		}
	}
	// Taps are endless: close them rather than wait.
	_ = hs.Close()
	if admin != nil {
		_ = admin.Close()
	}
	return nil
}
