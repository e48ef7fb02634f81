package cli

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"meshtls/ca/pki"
	"meshtls/contract"
	"meshtls/install"
	"meshtls/internal/imageref"
)

type installOptions struct {
	tls                string
	registry           string
	version            string
	prometheusImage    string
	controllerReplicas int
	ha                 bool
	certLifetime       time.Duration
	rootCert, rootKey  string
	issuerCert         string
	issuerKey          string
	trustAnchors       string
	images             imageFlags
}

// imageFlags are the flags install and inject share to fit a cluster's
// registry, pull rules and DNS domain.
type imageFlags struct {
	registry      string
	pullPolicy    string
	pullSecrets   []string
	digestFile    string
	clusterDomain string
}

func (i *imageFlags) add(fl *pflag.FlagSet, what string) {
	fl.StringVar(&i.registry, "registry", imageref.DefaultRegistryFromEnv(), "registry of the "+what+" images (default from $"+imageref.RegistryEnv+" when set)")
	fl.StringVar(&i.pullPolicy, "image-pull-policy", string(corev1.PullIfNotPresent), "imagePullPolicy of the "+what+" containers: Always, IfNotPresent or Never")
	fl.StringArrayVar(&i.pullSecrets, "image-pull-secret", nil, "Secret to pull the "+what+" images with, added to the pods' imagePullSecrets (repeatable)")
	fl.StringVar(&i.digestFile, "image-digests", "", "pin the "+what+" images by digest, read from this file (bin/images/digests.json, written by make images)")
	fl.StringVar(&i.clusterDomain, "cluster-domain", contract.DefaultClusterDomain, "the cluster's DNS domain (the kubelet's --cluster-domain)")
}

// check validates the flags into one usage error each, and reads the
// digests of the images named when --image-digests is set.
func (i *imageFlags) check(versionFlag, version string, names ...string) (map[string]string, error) {
	if err := imageref.CheckRegistry("--registry", i.registry); err != nil {
		return nil, usageErrorf("%v", err)
	}
	if err := imageref.CheckVersion(versionFlag, version); err != nil {
		return nil, usageErrorf("%v", err)
	}
	if _, err := imageref.PullPolicy(i.pullPolicy); err != nil {
		return nil, usageErrorf("%v", err)
	}
	if _, err := imageref.PullSecrets(i.pullSecrets); err != nil {
		return nil, usageErrorf("%v", err)
	}
	if err := contract.CheckClusterDomain(i.clusterDomain); err != nil {
		return nil, usageErrorf("%v", err)
	}
	if i.digestFile == "" {
		return nil, nil
	}
	d, err := imageref.ReadDigests(i.digestFile, version, names...)
	if err != nil {
		return nil, usageErrorf("%v", err)
	}
	return d, nil
}

func newInstallCmd(f *Factory) *cobra.Command {
	o := &installOptions{}
	cmd := &cobra.Command{
		Use:   "install [flags]",
		Short: "Print the control plane's Kubernetes YAML",
		Long: `Print the control plane's Kubernetes YAML, for kubectl apply.

With --tls=optional it includes the certificate authority, which gives every
workload injected with --tls=optional a certificate for its identity. The
output holds no private key unless you pass one in.

By default the CA, on its first start, generates a root constrained to the
mesh's identity domain (linkerd-managed.<namespace>.svc.<cluster-domain>) and an
intermediate issuer under it, keeps only the issuer, its key and the root's
certificate in the Secret linkerd-ca-root, and drops the root's key: nothing
in the cluster, its backups or a stolen token can sign a new issuer under that
root. The consequence: the issuer lives as long as the root (--root-lifetime of
the CA, a year), and replacing it is a rotation to a new root with
'linkerd ca rotate' (which can keep the new root's key with --root-key-out).

To keep a root of your own offline, give an intermediate issuer signed by it:
--issuer-cert, --issuer-key and --trust-anchors (the offline root's
certificate). --root-cert and --root-key put a root and its key into the
cluster (and into this output): supported, but warned about.`,
		Example: `  # Install the control plane with automatic TLS
  linkerd install --tls=optional | kubectl apply -f -

  # Two CA replicas (one issues, one stands by) and 12-hour certificates
  linkerd install --tls=optional --ha --cert-lifetime 12h | kubectl apply -f -

  # Bring your own root
  linkerd install --tls=optional --root-cert root.crt --root-key root.key | kubectl apply -f -

  # Images from your own registry, pinned to the digests make images built
  linkerd install --tls=optional --registry registry.example/meshtls \
    --image-digests bin/images/digests.json | kubectl apply -f -

  # A cluster with its own DNS domain, pulling the images with a Secret
  linkerd install --tls=optional --cluster-domain corp.example --image-pull-secret regcred | kubectl apply -f -

  # Sign with an intermediate issuer; the offline root's key stays offline
  linkerd install --tls=optional --issuer-cert issuer.crt --issuer-key issuer.key \
    --trust-anchors root.crt | kubectl apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts, err := o.toOptions(f, cmd)
			if err != nil {
				return err
			}
			if err := install.Render(f.IO.Out, opts); err != nil {
				return err
			}
			if imageref.Unpublished(opts.Version) {
				fmt.Fprintf(f.IO.ErrOut, "Warning: version %s was never published: the nodes can pull %s only once you load or push it: `make images`, then `kind load image-archive bin/images/meshtls-%s.oci.tar` (kind), `k3s ctr images import` of that archive (k3s), or `make images-push REGISTRY=…` with --registry (any cluster)\n",
					opts.Version, imageref.Images{Registry: opts.Registry, Version: opts.Version}.Ref("controller"), opts.Version)
			}
			if len(opts.RootKeyPEM) > 0 {
				fmt.Fprintln(f.IO.ErrOut, "Warning: --root-cert/--root-key put the root's private key into this output and into the cluster, where whoever reads Secret "+
					f.LinkerdNamespace+"/linkerd-ca-root can mint any identity; prefer --issuer-cert/--issuer-key/--trust-anchors with the root kept offline, or let the CA generate a root whose key it drops")
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.tls, "tls", "", `enable TLS: "optional" runs the CA and lets meshed pods fail open to plain text`)
	o.images.add(fl, "control-plane")
	fl.StringVar(&o.version, "version", Version, "tag of the control-plane images (default: this CLI's version)")
	fl.StringVar(&o.prometheusImage, "prometheus-image", install.DefaultPrometheusImage, "Prometheus image")
	fl.IntVar(&o.controllerReplicas, "controller-replicas", 1, "replicas of each controller; the CA elects one to issue")
	fl.BoolVar(&o.ha, "ha", false, "high availability: 3 controller replicas unless --controller-replicas says otherwise")
	fl.DurationVar(&o.certLifetime, "cert-lifetime", pki.DefaultLeafLifetime, "lifetime of workload certificates (at least "+pki.MinLeafLifetime.String()+"); they renew at 0.57 to 0.67 of it")
	fl.StringVar(&o.rootCert, "root-cert", "", "PEM file of a root certificate for the CA to use (with --root-key)")
	fl.StringVar(&o.rootKey, "root-key", "", "PEM file of the root's private key (with --root-cert)")
	fl.StringVar(&o.issuerCert, "issuer-cert", "", "PEM file of an intermediate issuer certificate (with --issuer-key and --trust-anchors)")
	fl.StringVar(&o.issuerKey, "issuer-key", "", "PEM file of the issuer's private key")
	fl.StringVar(&o.trustAnchors, "trust-anchors", "", "PEM file of the offline root certificate(s) that signed --issuer-cert")
	return cmd
}

func (o *installOptions) toOptions(f *Factory, cmd *cobra.Command) (install.Options, error) {
	opts := install.Options{
		ControlNamespace:   f.LinkerdNamespace,
		TLS:                o.tls,
		Registry:           o.images.registry,
		Version:            o.version,
		ImagePullPolicy:    o.images.pullPolicy,
		ImagePullSecrets:   o.images.pullSecrets,
		ClusterDomain:      o.images.clusterDomain,
		PrometheusImage:    o.prometheusImage,
		ControllerReplicas: o.controllerReplicas,
		CertLifetime:       o.certLifetime,
	}
	if o.tls != "" && o.tls != "optional" {
		return opts, usageErrorf("invalid --tls value %q: the only supported value is \"optional\"", o.tls)
	}
	var err error
	if opts.ImageDigests, err = o.images.check("--version", o.version, install.Images...); err != nil {
		return opts, err
	}
	if o.ha && !cmd.Flags().Changed("controller-replicas") {
		opts.ControllerReplicas = 3
	}
	if o.rootCert != "" {
		if opts.RootCertPEM, err = os.ReadFile(o.rootCert); err != nil {
			return opts, fmt.Errorf("cannot read --root-cert: %w", err)
		}
	}
	// Errors name the file, never its contents.
	for _, in := range []struct {
		flag, path string
		dst        *[]byte
	}{
		{"--root-key", o.rootKey, &opts.RootKeyPEM},
		{"--issuer-cert", o.issuerCert, &opts.IssuerCertPEM},
		{"--issuer-key", o.issuerKey, &opts.IssuerKeyPEM},
		{"--trust-anchors", o.trustAnchors, &opts.TrustAnchorsPEM},
	} {
		if in.path == "" {
			continue
		}
		if *in.dst, err = os.ReadFile(in.path); err != nil {
			return opts, fmt.Errorf("cannot read %s: %w", in.flag, err)
		}
	}
	return opts, nil
}
