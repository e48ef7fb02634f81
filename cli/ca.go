package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"meshtls/ca"
	"meshtls/ca/pki"
	"meshtls/contract"
)

func newCACmd(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage the certificate authority's root",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newCARotateCmd(f))
	return cmd
}

type caRotateOptions struct {
	rootCert, rootKey, trustAnchors string
	clusterDomain                   string
	rootLifetime                    time.Duration
	propagationDelay                time.Duration
	timeout                         time.Duration
	output                          string
	rootKeyOut                      string
}

func newCARotateCmd(f *Factory) *cobra.Command {
	o := &caRotateOptions{}
	cmd := &cobra.Command{
		Use:   "rotate [flags]",
		Short: "Replace the CA's root without breaking a single handshake",
		Long: `Replace the CA's root with overlap, so no TLS handshake fails on the way.

1. add-anchors: the next root joins every trust bundle beside the current
   one; once all bundles hold both, wait --propagation-delay for kubelets to
   put them into the pods.
2. reissue: the next root starts issuing and the CA re-issues every workload
   certificate from it; once all have moved, wait --propagation-delay again.
3. retire: the old root leaves the bundles.

Each step is recorded on the root Secret (annotation linkerd.io/ca-rotation):
if the command is interrupted, run it again and it resumes. Without
--root-cert/--root-key a new root, constrained to the mesh's identity domain,
and an intermediate issuer under it are generated: only the issuer and its key
go into the cluster. The root's key is written to --root-key-out if given, else
dropped; without it, the next rotation generates a new root again (nothing can
sign a new issuer under the old one). With --root-cert/--root-key, that root
(or, with --trust-anchors, that intermediate issuer and its offline root) is used.

If the root Secret was lost, a new root is created whose bundles keep the old
roots, so existing certificates keep verifying while they are re-issued.`,
		Example: `  # Rotate to a freshly generated root and issuer; the root's key is dropped
  linkerd ca rotate

  # The same, keeping the new root's key offline (mode 0600)
  linkerd ca rotate --root-key-out ./next-root.key

  # Rotate to your own root
  linkerd ca rotate --root-cert next.crt --root-key next.key

  # Rotate to an intermediate issuer signed by an offline root
  linkerd ca rotate --root-cert issuer.crt --root-key issuer.key --trust-anchors offline-root.crt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runCARotate(cmd.Context(), f, o) },
	}
	fl := cmd.Flags()
	fl.StringVar(&o.rootCert, "root-cert", "", "PEM file of the next root (or issuer) certificate, with --root-key")
	fl.StringVar(&o.rootKey, "root-key", "", "PEM file of the next root's (or issuer's) private key")
	fl.StringVar(&o.trustAnchors, "trust-anchors", "", "PEM file of the offline root(s) that signed --root-cert, when it is an intermediate issuer")
	fl.StringVar(&o.rootKeyOut, "root-key-out", "", "write the generated root's private key to this new file (mode 0600) instead of dropping it")
	fl.StringVar(&o.clusterDomain, "cluster-domain", contract.DefaultClusterDomain, "the cluster's DNS domain, as given to install: a generated root is constrained to the identities under it")
	fl.DurationVar(&o.rootLifetime, "root-lifetime", pki.DefaultRootLifetime, "lifetime of a generated root")
	fl.DurationVar(&o.propagationDelay, "propagation-delay", ca.DefaultPropagationDelay, "wait this long after bundles, then certificates, are written, for kubelets to update pods' files")
	fl.DurationVar(&o.timeout, "timeout", 30*time.Minute, "give up (resumably) after this long")
	fl.StringVarP(&o.output, "output", "o", "", `output format: "" (progress lines) or "json"`)
	return cmd
}

func runCARotate(ctx context.Context, f *Factory, o *caRotateOptions) error {
	if o.output != "" && o.output != "json" {
		return usageErrorf("invalid --output %q: use json or leave it empty", o.output)
	}
	if (o.rootCert == "") != (o.rootKey == "") {
		return usageErrorf("--root-cert and --root-key go together: give both or neither")
	}
	if o.trustAnchors != "" && o.rootCert == "" {
		return usageErrorf("--trust-anchors needs --root-cert and --root-key")
	}
	if o.propagationDelay < 0 {
		return usageErrorf("--propagation-delay must not be negative")
	}
	if o.rootKeyOut != "" && o.rootCert != "" {
		return usageErrorf("--root-key-out keeps a generated root's key; with --root-cert you already hold yours")
	}
	if err := contract.CheckClusterDomain(o.clusterDomain); err != nil {
		return usageErrorf("%v", err)
	}
	opts := ca.RotateOptions{ControlNamespace: f.LinkerdNamespace, ClusterDomain: o.clusterDomain, RootLifetime: o.rootLifetime, PropagationDelay: o.propagationDelay}
	if o.rootKeyOut != "" {
		path := o.rootKeyOut
		opts.SaveRootKey = func(keyPEM []byte) error {
			// O_EXCL: never overwrite a key someone kept.
			fh, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("--root-key-out: %w", err)
			}
			if _, err := fh.Write(keyPEM); err != nil {
				fh.Close()
				return fmt.Errorf("--root-key-out: %w", err)
			}
			return fh.Close()
		}
	}
	var err error
	for _, in := range []struct {
		flag, path string
		dst        *[]byte
	}{{"--root-cert", o.rootCert, &opts.NextCertPEM}, {"--root-key", o.rootKey, &opts.NextKeyPEM}, {"--trust-anchors", o.trustAnchors, &opts.NextAnchorsPEM}} {
		if in.path == "" {
			continue
		}
		// The error names the file, never its contents.
		if *in.dst, err = os.ReadFile(in.path); err != nil {
			return fmt.Errorf("cannot read %s: %w", in.flag, err)
		}
	}
	client, err := f.KubeClient()
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	opts.Progress = func(step, msg string) {
		if o.output == "" {
			fmt.Fprintf(f.IO.ErrOut, "[%s] %s\n", step, msg)
		}
	}
	res, err := ca.Rotate(ctx, client, opts)
	if err != nil {
		return err
	}
	if o.output == "json" {
		enc := json.NewEncoder(f.IO.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			OldIssuer string `json:"oldIssuer"`
			NewIssuer string `json:"newIssuer"`
			Bundles   int    `json:"bundles"`
			Secrets   int    `json:"secrets"`
			LostRoot  bool   `json:"lostRoot"`
		}{res.OldIssuer, res.NewIssuer, res.Bundles, res.Secrets, res.LostRoot})
	}
	fmt.Fprintf(f.IO.Out, "Root rotated: issuer %s → %s; %d bundle(s) and %d certificate(s) moved with no gap in trust.\n",
		short(res.OldIssuer), short(res.NewIssuer), res.Bundles, res.Secrets)
	return nil
}

func short(fp string) string {
	if len(fp) > 16 {
		return fp[:16]
	}
	return fp
}
