// Command proxy-init is the mesh's init container: it writes the nat
// rules that send a pod's TCP traffic through its proxy, as Linkerd's
// proxy-init does, then exits. It runs in the pod's network namespace
// with NET_ADMIN, before any other container. It programs nf_tables
// itself (no iptables binary in its image), or runs iptables-restore when
// asked (--firewall iptables|iptables-legacy).
package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/spf13/cobra"

	"meshtls/contract"
	"meshtls/internal/version"
)

func main() {
	if err := newRootCmd(os.Stdout).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "Error: "+strings.Join(strings.Fields(err.Error()), " "))
		os.Exit(1)
	}
}

func newRootCmd(stdout io.Writer) *cobra.Command {
	c := config{}
	var inIgnore, outIgnore string
	var simulate bool
	cmd := &cobra.Command{
		Use:     "proxy-init",
		Short:   "Redirect the pod's TCP traffic through its proxy (nat rules, nftables or iptables)",
		Version: version.Version,
		Long: `proxy-init installs, in the network namespace it runs in, the nat rules of
Linkerd's proxy-init: incoming TCP goes to the proxy's inbound port except
the ignored ports; outgoing TCP goes to the proxy's outbound port except
the proxy's own (by uid) and loopback traffic. IPv4 and IPv6 alike. The
proxy's own connections to its pod's IP (a Service that routes back to the
same pod) go to its inbound port, so they are served over mTLS too.

--firewall nft (the default) programs one nf_tables table, inet
proxy_init, through netlink: no iptables binary needed, NET_ADMIN only.
--firewall iptables and iptables-legacy run iptables-restore and
ip6tables-restore (or their -legacy forms), for nodes that need them.

A restarted init container finds its rules in place: nft mode replaces
its table in one transaction, iptables mode leaves existing chains alone.`,
		Example: `  proxy-init --incoming-proxy-port 4143 --outgoing-proxy-port 4140 \
    --proxy-uid 2102 --inbound-ports-to-ignore 4190,4191
  proxy-init --simulate ...                     # print the nft ruleset, change nothing
  proxy-init --firewall iptables --simulate ... # print the iptables-restore input
  nft list table inet proxy_init                # what nft mode installed`,
		Args:          cobra.NoArgs,
		SilenceUsage:  true,
		SilenceErrors: true,
		RunE: func(*cobra.Command, []string) error {
			var err error
			if c.InboundPortsToIgnore, err = parsePorts("--inbound-ports-to-ignore", inIgnore); err != nil {
				return err
			}
			if c.OutboundPortsToIgnore, err = parsePorts("--outbound-ports-to-ignore", outIgnore); err != nil {
				return err
			}
			if err := c.validate(); err != nil {
				return err
			}
			if simulate {
				var err error
				if c.Firewall == "nft" {
					_, err = io.WriteString(stdout, nftScript(c))
				} else {
					_, err = io.WriteString(stdout, restoreInput(c, false)+restoreInput(c, true))
				}
				return err
			}
			if c.Firewall == "nft" {
				return applyNFT(c, stdout)
			}
			return applyIptables(c, stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.InboundPort, "incoming-proxy-port", contract.InboundPort, "port incoming TCP is redirected to")
	f.IntVar(&c.OutboundPort, "outgoing-proxy-port", contract.OutboundPort, "port outgoing TCP is redirected to")
	f.IntVar(&c.ProxyUID, "proxy-uid", contract.ProxyUID, "uid of the proxy, whose own connections are not redirected")
	f.StringVar(&inIgnore, "inbound-ports-to-ignore", "", "comma-separated incoming destination ports that skip the proxy")
	f.StringVar(&outIgnore, "outbound-ports-to-ignore", "", "comma-separated outgoing destination ports that skip the proxy")
	f.StringVar(&c.Firewall, "firewall", "nft", "how to write the rules: nft (nf_tables through netlink), iptables or iptables-legacy (their restore commands)")
	f.BoolVar(&c.RedirectLocal, "redirect-local-traffic", true, "send the proxy's connections to its own pod IP to the inbound port (Linkerd's redirect-non-loopback-local-traffic), so a pod calling a Service that routes back to itself is served over mTLS; =false only with a proxy that forwards inbound traffic to the pod IP rather than 127.0.0.1")
	f.BoolVar(&simulate, "simulate", false, "print the rules instead of applying them")
	return cmd
}

// iptablesCommands are the list and restore commands of a backend and
// family.
func iptablesCommands(firewall string, v6 bool) (list, restore string) {
	base := "iptables"
	if v6 {
		base = "ip6tables"
	}
	if firewall == "iptables-legacy" {
		base += "-legacy"
	}
	return base, base + "-restore"
}

// ipv6Enabled says whether this network namespace can carry IPv6 at all:
// with the kernel's IPv6 off there is nothing to redirect.
func ipv6Enabled() bool {
	_, err := os.Stat("/proc/sys/net/ipv6")
	return err == nil
}

func applyIptables(c config, stdout io.Writer) error {
	families := []bool{false}
	if ipv6Enabled() {
		families = append(families, true)
	} else {
		fmt.Fprintln(stdout, "proxy-init: IPv6 is off in this kernel: IPv4 rules only")
	}
	for _, v6 := range families {
		if err := applyIptablesFamily(c, v6, stdout); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "proxy-init: %s redirect rules in place (inbound to %d, outbound to %d, uid %d exempt)\n", c.Firewall, c.InboundPort, c.OutboundPort, c.ProxyUID)
	return nil
}

func applyIptablesFamily(c config, v6 bool, stdout io.Writer) error {
	list, restore := iptablesCommands(c.Firewall, v6)
	if _, err := exec.LookPath(restore); err != nil {
		return fmt.Errorf("%s not found: install the iptables package, or use --firewall nft", restore)
	}
	// An init container may run again (a pod restart): the rules are
	// then in place and adding them twice would double the jumps.
	if exec.Command(list, "-w", "-t", "nat", "-n", "-L", outputChain).Run() == nil {
		fmt.Fprintf(stdout, "proxy-init: %s rules already in place in this network namespace\n", list)
		return nil
	}
	input := restoreInput(c, v6)
	cmd := exec.Command(restore, "-w", "--noflush")
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := fmt.Sprintf("%s: %v: %s", restore, err, strings.TrimSpace(out.String()))
		if v6 {
			return errors.New(msg + " (IPv6 traffic would bypass the proxy, so proxy-init stops; --firewall nft covers both families)")
		}
		return errors.New(msg)
	}
	fmt.Fprint(stdout, input)
	return nil
}
