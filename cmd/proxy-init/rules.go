package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Chain names as Linkerd's proxy-init writes them, so that anyone who
// knows a Linkerd pod's nat table recognises ours.
const (
	redirectChain = "PROXY_INIT_REDIRECT"
	outputChain   = "PROXY_INIT_OUTPUT"
)

// config is what the flags say; inject writes the same flags for every pod.
type config struct {
	InboundPort          int
	OutboundPort         int
	ProxyUID             int
	InboundPortsToIgnore []int
	// OutboundPortsToIgnore: connections to these destination ports skip
	// the proxy.
	OutboundPortsToIgnore []int
	// Firewall is the backend: nft (native nf_tables), iptables or
	// iptables-legacy (the commands of those names).
	Firewall string
	// RedirectLocal sends the proxy's own connections to its pod's IP
	// (not 127.0.0.1) to the inbound port: Linkerd's
	// redirect-non-loopback-local-traffic. It needs a proxy whose inbound
	// side reaches the app on 127.0.0.1, or the inbound side's own
	// connection to the app would loop back to it.
	RedirectLocal bool
}

// firewalls are the --firewall values.
var firewalls = []string{"nft", "iptables", "iptables-legacy"}

func (c config) validate() error {
	for name, p := range map[string]int{"--incoming-proxy-port": c.InboundPort, "--outgoing-proxy-port": c.OutboundPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("%s %d: not a TCP port", name, p)
		}
	}
	switch c.Firewall {
	case "nft", "iptables", "iptables-legacy":
	default:
		return fmt.Errorf("--firewall %q: use %s", c.Firewall, strings.Join(firewalls, ", "))
	}
	if c.ProxyUID < 0 {
		return fmt.Errorf("--proxy-uid %d: not a uid", c.ProxyUID)
	}
	for _, p := range append(append([]int{}, c.InboundPortsToIgnore...), c.OutboundPortsToIgnore...) {
		if p < 1 || p > 65535 {
			return fmt.Errorf("port to ignore %d: not a TCP port", p)
		}
	}
	return nil
}

// restoreInput is the nat table fragment for iptables-restore --noflush
// (ip6tables-restore when v6): inbound TCP (except the ignored ports) goes
// to the proxy's inbound port; outbound TCP goes to its outbound port,
// except the proxy's own traffic (by uid, or it would loop) and traffic on
// loopback (the proxy talking to the app, and the app to itself), as
// Linkerd's rules do.
func restoreInput(c config, v6 bool) string {
	var b strings.Builder
	comment := func(what string) string { return fmt.Sprintf(`-m comment --comment "proxy-init/%s"`, what) }
	loopback := "127.0.0.1/32"
	if v6 {
		loopback = "::1/128"
	}
	fmt.Fprintln(&b, "*nat")
	fmt.Fprintf(&b, ":%s - [0:0]\n", redirectChain)
	fmt.Fprintf(&b, ":%s - [0:0]\n", outputChain)
	if ports := portList(c.InboundPortsToIgnore); ports != "" {
		fmt.Fprintf(&b, "-A %s -p tcp -m multiport --dports %s %s -j RETURN\n", redirectChain, ports, comment("ignore-inbound-ports"))
	}
	fmt.Fprintf(&b, "-A %s -p tcp %s -j REDIRECT --to-ports %d\n", redirectChain, comment("redirect-all-incoming-to-proxy-port"), c.InboundPort)
	fmt.Fprintf(&b, "-A PREROUTING -j %s %s\n", redirectChain, comment("install-proxy-init-prerouting"))
	if c.RedirectLocal {
		fmt.Fprintf(&b, "-A %s -o lo ! -d %s -m owner --uid-owner %d %s -j %s\n", outputChain, loopback, c.ProxyUID, comment("redirect-non-loopback-local-traffic"), redirectChain)
	}
	fmt.Fprintf(&b, "-A %s -m owner --uid-owner %d %s -j RETURN\n", outputChain, c.ProxyUID, comment("ignore-proxy-user-id"))
	fmt.Fprintf(&b, "-A %s -o lo %s -j RETURN\n", outputChain, comment("ignore-loopback"))
	if ports := portList(c.OutboundPortsToIgnore); ports != "" {
		fmt.Fprintf(&b, "-A %s -p tcp -m multiport --dports %s %s -j RETURN\n", outputChain, ports, comment("ignore-outbound-ports"))
	}
	fmt.Fprintf(&b, "-A %s -p tcp %s -j REDIRECT --to-ports %d\n", outputChain, comment("redirect-all-outgoing-to-proxy-port"), c.OutboundPort)
	fmt.Fprintf(&b, "-A OUTPUT -j %s %s\n", outputChain, comment("install-proxy-init-output"))
	fmt.Fprintln(&b, "COMMIT")
	return b.String()
}

// uniquePorts is ports sorted, without repeats.
func uniquePorts(ports []int) []int {
	seen := map[int]bool{}
	var out []int
	for _, p := range ports {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Ints(out)
	return out
}

// portList is the sorted, de-duplicated multiport list ("" for none).
func portList(ports []int) string {
	out := uniquePorts(ports)
	s := make([]string, len(out))
	for i, p := range out {
		s[i] = strconv.Itoa(p)
	}
	return strings.Join(s, ",")
}

// parsePorts reads "4190,4191" (and ranges are not supported: one clear error).
func parsePorts(flag, v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := strconv.Atoi(f)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("%s: %q is not a TCP port", flag, f)
		}
		out = append(out, p)
	}
	return out, nil
}
