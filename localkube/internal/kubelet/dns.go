package kubelet

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
)

// ClusterDomain is the cluster's DNS domain, as kubelet's --cluster-domain
// defaults to in every distribution.
const ClusterDomain = "cluster.local"

// hostResolvConf is kubelet's --resolv-conf default: the base of the pods'
// resolver configuration (its search domains, and all of it for
// dnsPolicy: Default). It is only ever read.
const hostResolvConf = "/etc/resolv.conf"

// The resolver limits kubelet enforces (the API validates dnsConfig with
// the same ones): nameservers, search domains, and the search line's length.
const (
	maxNameservers    = 3
	maxSearches       = 32
	maxSearchLine     = 2048
	maxSearchDomain   = 253
	clusterFirstNdots = "ndots:5"
)

// dnsConfig is a pod's resolver configuration, as kubelet hands it to the
// container runtime.
type dnsConfig struct {
	servers, searches, options []string
}

// The files a pod's processes see at /etc/resolv.conf and /etc/hosts, kept
// in the pod dir. They are bind-mounted over the host's in each process's
// own mount namespace; the host's /etc is never written.
const (
	podResolvConf = "etc/resolv.conf"
	podHosts      = "etc/hosts"
)

// podDNS computes the pod's resolver configuration with kubelet's rules
// (pkg/kubelet/network/dns; its package is not imported because it links
// the container runtime client and doubles localkube's size and memory):
//
//   - ClusterFirst (the default; for a hostNetwork pod, Default) and
//     ClusterFirstWithHostNet: the cluster DNS alone, the search list
//     NS.svc.DOMAIN svc.DOMAIN DOMAIN then the node's, and ndots:5; without
//     a cluster DNS, a MissingClusterDNS event and Default;
//   - Default: the node's resolv.conf;
//   - None: nothing but dnsConfig;
//   - then dnsConfig's nameservers and searches are appended (duplicates
//     dropped) and its options merged (same name: dnsConfig's wins), and the
//     limits are applied with a DNSConfigForming event.
//
// One difference: kubelet merges options through a map, in random order;
// here they keep their order (the base's, then dnsConfig's new ones).
func (k *Kubelet) podDNS(pod *v1.Pod) (dnsConfig, error) {
	b, err := os.ReadFile(hostResolvConf)
	if err != nil && !os.IsNotExist(err) {
		return dnsConfig{}, fmt.Errorf("read the node's %s: %w", hostResolvConf, err)
	}
	return k.dnsFor(pod, parseResolvConf(b)), nil
}

// dnsFor is podDNS on the node's resolver configuration host.
func (k *Kubelet) dnsFor(pod *v1.Pod, host dnsConfig) dnsConfig {
	cfg := dnsConfig{servers: slices.Clone(host.servers), searches: slices.Clone(host.searches), options: slices.Clone(host.options)}
	policy := pod.Spec.DNSPolicy
	if policy == v1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = v1.DNSDefault
	}
	switch policy {
	case v1.DNSNone:
		cfg = dnsConfig{}
	case v1.DNSDefault:
	default: // ClusterFirst, ClusterFirstWithHostNet; the API refuses others
		if len(k.cfg.ClusterDNS) == 0 {
			k.event(pod, v1.EventTypeWarning, "MissingClusterDNS", fmt.Sprintf(
				"pod: %s/%s. kubelet does not have ClusterDNS IP configured and cannot create Pod using %q policy. Falling back to %q policy.",
				pod.Namespace, pod.Name, v1.DNSClusterFirst, v1.DNSDefault))
			break
		}
		cfg.servers = nil
		for _, ip := range k.cfg.ClusterDNS {
			cfg.servers = append(cfg.servers, ip.String())
		}
		cfg.searches = omitDuplicates(append([]string{pod.Namespace + ".svc." + ClusterDomain, "svc." + ClusterDomain, ClusterDomain}, host.searches...))
		cfg.options = []string{clusterFirstNdots}
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		cfg.servers = omitDuplicates(append(cfg.servers, dc.Nameservers...))
		cfg.searches = omitDuplicates(append(cfg.searches, dc.Searches...))
		for _, o := range dc.Options {
			opt := o.Name
			if o.Value != nil && *o.Value != "" {
				opt += ":" + *o.Value
			}
			cfg.options = setOption(cfg.options, opt)
		}
	}
	return k.fitLimits(pod, cfg)
}

// parseResolvConf reads a resolv.conf as kubelet does: nameservers add up,
// the last search line wins (without "." and trailing dots), options merge.
func parseResolvConf(b []byte) dnsConfig {
	var c dnsConfig
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch f[0] {
		case "nameserver":
			if len(f) >= 2 {
				c.servers = append(c.servers, f[1])
			}
		case "search":
			c.searches = nil
			for _, s := range f[1:] {
				if s != "." {
					c.searches = append(c.searches, strings.TrimSuffix(s, "."))
				}
			}
		case "options":
			for _, o := range f[1:] {
				c.options = setOption(c.options, o)
			}
		}
	}
	return c
}

// setOption sets opt (NAME or NAME:VALUE) in options, in place of an
// option of the same name.
func setOption(options []string, opt string) []string {
	name, _, _ := strings.Cut(opt, ":")
	for i, o := range options {
		if n, _, _ := strings.Cut(o, ":"); n == name {
			options[i] = opt
			return options
		}
	}
	return append(options, opt)
}

func omitDuplicates(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range in {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// fitLimits cuts what a resolver cannot take, as kubelet does, and says so
// in an event.
func (k *Kubelet) fitLimits(pod *v1.Pod, c dnsConfig) dnsConfig {
	if len(c.servers) > maxNameservers {
		c.servers = c.servers[:maxNameservers]
		k.event(pod, v1.EventTypeWarning, "DNSConfigForming", "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver line is: "+strings.Join(c.servers, " "))
	}
	cut := false
	if len(c.searches) > maxSearches {
		c.searches, cut = c.searches[:maxSearches], true
	}
	var kept []string
	for _, s := range c.searches {
		if len(s) > maxSearchDomain {
			cut = true
			continue
		}
		kept = append(kept, s)
	}
	c.searches = kept
	for len(c.searches) > 0 && len(strings.Join(c.searches, " ")) > maxSearchLine {
		c.searches, cut = c.searches[:len(c.searches)-1], true
	}
	if cut {
		k.event(pod, v1.EventTypeWarning, "DNSConfigForming", "Search Line limits were exceeded, some search paths have been omitted, the applied search line is: "+strings.Join(c.searches, " "))
	}
	return c
}

// writePodEtc writes the pod's resolv.conf and hosts into its dir. They are
// written once, before the first container starts: bind mounts hold the
// inode, so the files must not be replaced while the pod runs.
func (w *podWorker) writePodEtc() error {
	cfg, err := w.k.podDNS(w.pod)
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
func resolvConf(c dnsConfig) []byte {
	var b strings.Builder
	if len(c.searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(c.searches, " "))
	}
	for _, s := range c.servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(c.options) > 0 {
		fmt.Fprintf(&b, "options %s\n", strings.Join(c.options, " "))
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
