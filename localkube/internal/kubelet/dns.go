package kubelet

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	v1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/kubernetes/pkg/kubelet/network/dns"
)

// ClusterDomain is the cluster's DNS domain, as kubelet's --cluster-domain
// defaults to in every distribution.
const ClusterDomain = "cluster.local"

// hostResolvConf is kubelet's --resolv-conf default: the base of the pods'
// resolver configuration (its search domains, and all of it for
// dnsPolicy: Default). It is only ever read.
const hostResolvConf = "/etc/resolv.conf"

// The files a pod's processes see at /etc/resolv.conf and /etc/hosts, kept
// in the pod dir. They are bind-mounted over the host's in each process's
// own mount namespace; the host's /etc is never written.
const (
	podResolvConf = "etc/resolv.conf"
	podHosts      = "etc/hosts"
)

// newDNSConfigurer is kubelet's own DNS configurer: the pod's dnsPolicy
// (ClusterFirst, ClusterFirstWithHostNet, Default, None), its dnsConfig and
// the resolver limits are applied exactly as kubelet does.
func (k *Kubelet) newDNSConfigurer() *dns.Configurer {
	node := &v1.ObjectReference{Kind: "Node", Name: k.cfg.NodeName, UID: "localkube"}
	return dns.NewConfigurer(k.recorder, node, nil, k.cfg.ClusterDNS, ClusterDomain, hostResolvConf)
}

// writePodEtc writes the pod's resolv.conf and hosts into its dir. They are
// written once, before the first container starts: bind mounts hold the
// inode, so the files must not be replaced while the pod runs.
func (w *podWorker) writePodEtc(ctx context.Context) error {
	cfg, err := w.k.dns.GetPodDNS(ctx, w.pod)
	if err != nil {
		return fmt.Errorf("pod DNS configuration: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(w.dir, "etc"), 0o755); err != nil {
		return err
	}
	// World-readable: containers with a runAsUser resolve names too.
	if err := os.WriteFile(filepath.Join(w.dir, podResolvConf), resolvConf(cfg), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(w.dir, podHosts), hostsFile(w.pod, w.podIP.String()), 0o644)
}

// podMounts are the files each process of the pod sees in place of the
// host's, in its own mount namespace.
func (w *podWorker) podMounts() []bindMount {
	return []bindMount{
		{source: filepath.Join(w.dir, podResolvConf), target: "/etc/resolv.conf"},
		{source: filepath.Join(w.dir, podHosts), target: "/etc/hosts"},
	}
}

// resolvConf renders a resolver configuration as a container runtime
// writes it for the pod sandbox.
func resolvConf(c *runtimeapi.DNSConfig) []byte {
	var b strings.Builder
	if len(c.Searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.Searches, " "))
	}
	for _, s := range c.Servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(c.Options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(c.Options, " "))
	}
	return []byte(b.String())
}

// hostsFile is the kubelet-managed /etc/hosts of a pod: localhost, the
// pod's own name at its IP (with its FQDN when it has a subdomain, as
// headless Services give), then spec.hostAliases.
func hostsFile(pod *v1.Pod, podIP string) []byte {
	var b strings.Builder
	b.WriteString("# Kubernetes-managed hosts file (localkube).\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n")
	host, fqdn := podHostname(pod)
	if fqdn != "" {
		fmt.Fprintf(&b, "%s\t%s\t%s\n", podIP, fqdn, host)
	} else {
		fmt.Fprintf(&b, "%s\t%s\n", podIP, host)
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return []byte(b.String())
}

// podHostname is the pod's hostname (spec.hostname, else its name cut to
// a DNS label) and, with spec.subdomain, its FQDN under the cluster domain.
func podHostname(pod *v1.Pod) (host, fqdn string) {
	host = pod.Spec.Hostname
	if host == "" {
		host = pod.Name
		if len(host) > 63 {
			host = strings.TrimRight(host[:63], "-.")
		}
	}
	if pod.Spec.Subdomain != "" {
		fqdn = fmt.Sprintf("%s.%s.%s.svc.%s", host, pod.Spec.Subdomain, pod.Namespace, ClusterDomain)
	}
	return host, fqdn
}
