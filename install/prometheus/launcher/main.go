// Command prometheus starts the Prometheus server built from this module
// (prometheus-server, next to this binary) with its arguments unchanged,
// except in one place: a pod of the local cluster (localkube), which has
// no /var/run/secrets/kubernetes.io/serviceaccount mount (pods are
// processes without a mount namespace) and so no in-cluster config.
// There the kubelet hands the pod its ServiceAccount token through
// $KUBECONFIG instead, and this launcher passes that kubeconfig to every
// kubernetes_sd_configs entry that would otherwise use the in-cluster
// config, so Kubernetes service discovery runs with the pod's own
// ServiceAccount credentials, as on a real cluster.
//
// On a real cluster (the token mounted) it only execs the server.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"
)

const (
	serverName   = "prometheus-server"
	inClusterDir = "/var/run/secrets/kubernetes.io/serviceaccount"
	configFlag   = "config.file"
	storageFlag  = "storage.tsdb.path"
	// generatedName is the rewritten config, written under the TSDB dir
	// (the one place the server may write).
	generatedName = "localkube-prometheus.yml"
)

func main() {
	if err := run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "prometheus launcher:", err)
		os.Exit(1)
	}
}

func run(argv []string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	server := filepath.Join(filepath.Dir(self), serverName)
	args := append([]string{server}, argv[1:]...)
	if needsKubeconfig() {
		if args, err = withKubeconfig(args, os.Getenv("KUBECONFIG")); err != nil {
			return err
		}
	}
	return syscall.Exec(server, args, os.Environ())
}

// needsKubeconfig says whether client-go's in-cluster config cannot work
// here (it needs the mounted token, whatever KUBERNETES_SERVICE_HOST says)
// but a kubeconfig from the kubelet can.
func needsKubeconfig() bool {
	if os.Getenv("KUBECONFIG") == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(inClusterDir, "token"))
	return err != nil
}

// withKubeconfig rewrites the config named by --config.file into the TSDB
// dir with kubeconfig set, and points the server's arguments at it.
func withKubeconfig(args []string, kubeconfig string) ([]string, error) {
	cfgPath, cfgIdx := flagValue(args, configFlag, "prometheus.yml")
	dataDir, _ := flagValue(args, storageFlag, "data/")
	in, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, err
	}
	out, n, err := addKubeconfig(in, kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if n == 0 {
		return args, nil
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, err
	}
	gen := filepath.Join(dataDir, generatedName)
	if err := os.WriteFile(gen, out, 0o644); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "prometheus launcher: no in-cluster ServiceAccount mount; %d kubernetes_sd_configs use the pod's kubeconfig %s (config %s)\n", n, kubeconfig, gen)
	args = append([]string(nil), args...)
	if cfgIdx < 0 {
		return append(args, "--"+configFlag+"="+gen), nil
	}
	if strings.Contains(args[cfgIdx], "=") {
		args[cfgIdx] = "--" + configFlag + "=" + gen
	} else {
		args[cfgIdx+1] = gen
	}
	return args, nil
}

// flagValue finds --name=V or --name V (kingpin takes both) and returns V
// and the index of the flag, or def and -1.
func flagValue(args []string, name, def string) (string, int) {
	for i, a := range args {
		for _, p := range []string{"--", "-"} {
			switch {
			case a == p+name && i+1 < len(args):
				return args[i+1], i
			case strings.HasPrefix(a, p+name+"="):
				return strings.TrimPrefix(a, p+name+"="), i
			}
		}
	}
	return def, -1
}

// addKubeconfig sets kubeconfig_file on every kubernetes_sd_configs entry
// that names neither an api_server nor a kubeconfig_file (those use the
// in-cluster config), keeping everything else as written. It returns how
// many entries it changed.
func addKubeconfig(config []byte, kubeconfig string) ([]byte, int, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(config, &doc); err != nil {
		return nil, 0, err
	}
	if len(doc.Content) == 0 {
		return config, 0, nil
	}
	n := 0
	for _, sc := range seq(mapValue(doc.Content[0], "scrape_configs")) {
		for _, sd := range seq(mapValue(sc, "kubernetes_sd_configs")) {
			if sd.Kind != yaml.MappingNode || mapValue(sd, "api_server") != nil || mapValue(sd, "kubeconfig_file") != nil {
				continue
			}
			sd.Content = append(sd.Content,
				&yaml.Node{Kind: yaml.ScalarNode, Value: "kubeconfig_file"},
				&yaml.Node{Kind: yaml.ScalarNode, Value: kubeconfig})
			n++
		}
	}
	if n == 0 {
		return config, 0, nil
	}
	out, err := yaml.Marshal(&doc)
	return out, n, err
}

func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

func seq(n *yaml.Node) []*yaml.Node {
	if n == nil || n.Kind != yaml.SequenceNode {
		return nil
	}
	return n.Content
}
