package inject

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"meshtls/contract"
)

// podConfig is what a pod template's config.linkerd.io annotations ask of
// its proxy (Linkerd's names and value syntax).
type podConfig struct {
	opaquePorts     string // proxy env, defaults included
	skipIn, skipOut string // proxy-init flags
	resources       corev1.ResourceRequirements
	cores           int    // LINKERD2_PROXY_CORES, from the CPU limit; 0 unset
	tlsExempt       string // plain-text ports of a required pod
	probes          string // contract.EnvInboundProbes of a required pod
	networks        string // LINKERD2_PROXY_DESTINATION_GET_NETWORKS; "" unset
}

// CheckNetworks reads a comma-separated CIDR list ("10.0.0.0/8,fd00::/8")
// and returns it normalised; what names the setting in the error.
func CheckNetworks(what, v string) (string, error) {
	var out []string
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return "", fmt.Errorf("%s: %q is not a CIDR such as 10.0.0.0/8 or fd00::/8", what, f)
		}
		out = append(out, p.Masked().String())
	}
	if len(out) == 0 && strings.TrimSpace(v) != "" {
		return "", fmt.Errorf("%s: %q lists no CIDR", what, v)
	}
	return strings.Join(out, ","), nil
}

// readPodConfig reads and checks the annotations. An error names the
// annotation and the value, so inject can refuse the workload clearly.
func readPodConfig(podMeta map[string]any) (podConfig, error) {
	var c podConfig
	ports := func(key string) (string, error) {
		v := strings.TrimSpace(annotation(podMeta, key))
		if v == "" {
			return "", nil
		}
		for _, f := range strings.Split(v, ",") {
			lo, hi, isRange := strings.Cut(strings.TrimSpace(f), "-")
			a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
			b := a
			var err2 error
			if isRange {
				b, err2 = strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
			}
			if err1 != nil || err2 != nil || a == 0 || b < a {
				return "", fmt.Errorf("annotation %s: %q is not a port (1-65535) or a range such as 8000-8010", key, f)
			}
		}
		return strings.Join(strings.Fields(strings.ReplaceAll(v, ",", " ")), ","), nil
	}
	var err error
	if c.networks, err = CheckNetworks("annotation "+contract.ClusterNetworksAnnotation, annotation(podMeta, contract.ClusterNetworksAnnotation)); err != nil {
		return c, err
	}
	opaque, err := ports(contract.OpaquePortsAnnotation)
	if err != nil {
		return c, err
	}
	c.opaquePorts = contract.DefaultOpaquePorts
	if opaque != "" {
		c.opaquePorts += "," + opaque
	}
	if c.skipIn, err = ports(contract.SkipInboundPortsAnnotation); err != nil {
		return c, err
	}
	if c.skipOut, err = ports(contract.SkipOutboundPortsAnnotation); err != nil {
		return c, err
	}
	if c.tlsExempt, err = ports(contract.TLSExemptPortsAnnotation); err != nil {
		return c, err
	}
	for _, q := range []struct {
		key  string
		list *corev1.ResourceList
		name corev1.ResourceName
	}{
		{contract.ProxyCPURequestAnnotation, &c.resources.Requests, corev1.ResourceCPU},
		{contract.ProxyCPULimitAnnotation, &c.resources.Limits, corev1.ResourceCPU},
		{contract.ProxyMemRequestAnnotation, &c.resources.Requests, corev1.ResourceMemory},
		{contract.ProxyMemLimitAnnotation, &c.resources.Limits, corev1.ResourceMemory},
	} {
		v := strings.TrimSpace(annotation(podMeta, q.key))
		if v == "" {
			continue
		}
		qty, err := resource.ParseQuantity(v)
		if err != nil || qty.Sign() <= 0 {
			return c, fmt.Errorf("annotation %s: %q is not a positive quantity such as 100m or 64Mi", q.key, v)
		}
		if *q.list == nil {
			*q.list = corev1.ResourceList{}
		}
		(*q.list)[q.name] = qty
	}
	for _, name := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		req, hasReq := c.resources.Requests[name]
		lim, hasLim := c.resources.Limits[name]
		if hasReq && hasLim && req.Cmp(lim) > 0 {
			return c, fmt.Errorf("proxy %s request %s is above its limit %s", name, req.String(), lim.String())
		}
	}
	if lim, ok := c.resources.Limits[corev1.ResourceCPU]; ok {
		// As Linkerd: the proxy's threads follow its CPU limit, rounded
		// up to whole cores.
		c.cores = int((lim.MilliValue() + 999) / 1000)
	}
	return c, nil
}
