package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"meshtls/inject"
)

func newInjectCmd(f *Factory) *cobra.Command {
	o := inject.Options{}
	var images imageFlags
	cmd := &cobra.Command{
		Use:   "inject [flags] FILE|DIR|-",
		Short: "Add the linkerd proxy to Kubernetes workloads",
		Long: `Add the linkerd proxy to the workloads in Kubernetes YAML.

It reads a file, every .yaml/.yml/.json file under a directory, or standard
input (-), and prints the injected YAML to standard output and a report to
standard error. Deployments, StatefulSets, DaemonSets, ReplicaSets,
ReplicationControllers, Pods and Lists of them are injected; other objects
pass through unchanged. Pods that use hostNetwork, objects in kube-system
and those annotated linkerd.io/inject: disabled are skipped. Injecting twice
gives the same output.

With --tls=optional each proxy is given its workload's certificate Secret
and the trust bundle, both written by the CA of linkerd install --tls=optional. --tls=required
does the same and makes each proxy refuse inbound plain text: HTTP gets 403,
gRPC PERMISSION_DENIED, other TCP is closed. The pod's HTTP probes, the
proxy's admin and tap ports, and ports listed in
config.linkerd.io/tls-exempt-ports stay reachable. linkerd.io/tls on a pod
template, or on a Namespace in the same input, wins over --tls.`,
		Example: `  # Inject a manifest with TLS and apply it
  linkerd inject --tls=optional app.yml | kubectl apply -f -

  # Inject what is running now
  kubectl get deploy -n emojivoto -o yaml | linkerd inject --tls=optional - | kubectl apply -f -

  # Require mutual TLS for one workload's inbound traffic
  kubectl get deploy/web -n emojivoto -o yaml | linkerd inject --tls=required - | kubectl apply -f -

  # Inject every manifest in a directory
  linkerd inject --tls=optional ./k8s/

  # Proxies from your own registry, pinned by digest, pulled with a Secret
  linkerd inject --tls=optional --registry registry.example/meshtls \
    --image-digests bin/images/digests.json --image-pull-secret regcred app.yml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.ControlNamespace = f.LinkerdNamespace
			if o.TLS != "" && o.TLS != "optional" && o.TLS != "required" {
				return usageErrorf("invalid --tls value %q: use \"optional\" or \"required\"", o.TLS)
			}
			if cmd.Flags().Changed("version") {
				fmt.Fprintln(f.IO.ErrOut, "Warning: inject's --version is deprecated: use --proxy-version")
			}
			digests, err := images.check("--proxy-version", o.Version, inject.Images...)
			if err != nil {
				return err
			}
			o.Registry, o.ImageDigests = images.registry, digests
			o.ImagePullPolicy, o.ImagePullSecrets, o.ClusterDomain = images.pullPolicy, images.pullSecrets, images.clusterDomain
			return runInject(f, args[0], o)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&o.TLS, "tls", "", `enable TLS: "optional" gives each proxy its workload's certificate and falls back to plain text; "required" also refuses inbound plain text (probes, admin and tap ports, and config.linkerd.io/tls-exempt-ports excepted); a linkerd.io/tls annotation on a pod template or on a Namespace in the input wins`)
	images.add(fl, "proxy and proxy-init")
	fl.StringVar(&o.Version, "proxy-version", Version, "tag of the proxy and proxy-init images (default: this CLI's version)")
	// --version was this flag's first name. Not cobra's MarkDeprecated:
	// it prints to stdout, into the manifest kubectl applies.
	fl.StringVar(&o.Version, "version", Version, "tag of the proxy images")
	_ = fl.MarkHidden("version")
	fl.StringVar(&o.ProxyLogLevel, "proxy-log-level", "warn,linkerd2_proxy=info", "log filter of the proxy")
	fl.StringVar(&o.ClusterNetworks, "cluster-networks", "", "comma-separated CIDRs the proxies ask discovery about (the cluster's pod and Service ranges); traffic elsewhere is plain text without asking. Unset: every non-loopback address is asked about. A pod's config.linkerd.io/cluster-networks annotation overrides it")
	return cmd
}

type injectInput struct {
	name string
	data []byte
}

func readInjectInputs(f *Factory, arg string) ([]injectInput, error) {
	if arg == "-" {
		data, err := io.ReadAll(f.IO.In)
		if err != nil {
			return nil, fmt.Errorf("cannot read standard input: %w", err)
		}
		return []injectInput{{"stdin", data}}, nil
	}
	st, err := os.Stat(arg)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", arg, errors.Unwrap(err))
	}
	if !st.IsDir() {
		data, err := os.ReadFile(arg)
		if err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", arg, err)
		}
		return []injectInput{{arg, data}}, nil
	}
	var inputs []injectInput
	err = filepath.WalkDir(arg, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch strings.ToLower(filepath.Ext(path)) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		if d.IsDir() {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		inputs = append(inputs, injectInput{path, data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", arg, err)
	}
	if len(inputs) == 0 {
		return nil, fmt.Errorf("no .yaml, .yml or .json files under %s", arg)
	}
	return inputs, nil
}

func runInject(f *Factory, arg string, o inject.Options) error {
	inputs, err := readInjectInputs(f, arg)
	if err != nil {
		return err
	}
	// Inject everything before printing anything, so an error in the
	// third file never leaves half a manifest on stdout for kubectl.
	var out bytes.Buffer
	var results []*inject.Result
	for _, in := range inputs {
		res, err := inject.Inject(in.data, in.name, o)
		if err != nil {
			return err
		}
		out.Write(res.YAML)
		results = append(results, res)
	}
	if _, err := f.IO.Out.Write(out.Bytes()); err != nil {
		return err
	}
	inject.WriteReport(f.IO.ErrOut, results)
	return nil
}
