package cli

import (
	"fmt"
	"sync"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"meshtls/tap"
	"meshtls/tapapi"
)

// Factory hands commands what they need, lazily: nothing connects to a
// cluster until a command asks for a client.
type Factory struct {
	IO *IOStreams

	// KubeFlags are kubectl's own --kubeconfig/--context/-n flags.
	KubeFlags *genericclioptions.ConfigFlags
	// LinkerdNamespace is the control-plane namespace (-L).
	LinkerdNamespace string

	// RESTConfig and KubeClient are functions so tests can replace them.
	RESTConfig func() (*rest.Config, error)
	KubeClient func() (kubernetes.Interface, error)
	// TapSource is the live tap API (tap.linkerd.io through the API
	// server, with RESTConfig's credentials only).
	TapSource func() (tap.Source, error)
}

// NewFactory builds a factory bound to real kubeconfig loading.
func NewFactory(io *IOStreams) *Factory {
	f := &Factory{
		IO:               io,
		KubeFlags:        genericclioptions.NewConfigFlags(true),
		LinkerdNamespace: "linkerd",
	}
	var (
		once   sync.Once
		client kubernetes.Interface
		cfg    *rest.Config
		err    error
	)
	f.RESTConfig = func() (*rest.Config, error) {
		// Without any kubeconfig client-go falls back to localhost:8080,
		// which only produces a confusing connection error later.
		raw, err := f.KubeFlags.ToRawKubeConfigLoader().RawConfig()
		if err == nil && len(raw.Clusters) == 0 && (f.KubeFlags.APIServer == nil || *f.KubeFlags.APIServer == "") {
			return nil, fmt.Errorf("no Kubernetes cluster configured: set --kubeconfig or KUBECONFIG")
		}
		c, err := f.KubeFlags.ToRESTConfig()
		if err != nil {
			return nil, fmt.Errorf("cannot load kubeconfig: %w (set --kubeconfig or KUBECONFIG)", err)
		}
		return c, nil
	}
	f.KubeClient = func() (kubernetes.Interface, error) {
		once.Do(func() {
			cfg, err = f.RESTConfig()
			if err != nil {
				return
			}
			client, err = kubernetes.NewForConfig(cfg)
		})
		return client, err
	}
	f.TapSource = func() (tap.Source, error) {
		cfg, err := f.RESTConfig()
		if err != nil {
			return nil, err
		}
		return &tapapi.Source{Config: cfg, ControlNamespace: f.LinkerdNamespace}, nil
	}
	return f
}

// Namespace is the namespace from -n or the kubeconfig context, defaulting
// to "default" when neither says. It never needs a reachable cluster.
func (f *Factory) Namespace() string {
	if f.KubeFlags.Namespace != nil && *f.KubeFlags.Namespace != "" {
		return *f.KubeFlags.Namespace
	}
	ns, _, err := f.KubeFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil || ns == "" {
		return "default"
	}
	return ns
}

// warn prints one warning line on stderr.
func (f *Factory) warn(msg string) { fmt.Fprintln(f.IO.ErrOut, "Warning: "+msg) }
