// Command proxy-init is the mesh's init container: it writes the iptables
// rules that send a pod's TCP traffic through its proxy, as Linkerd's
// proxy-init does, then exits. It runs in the pod's network namespace
// with NET_ADMIN, before any other container.
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
		Use:   "proxy-init",
		Short: "Redirect the pod's TCP traffic through its proxy (iptables nat rules)",
		Long: `proxy-init installs, in the network namespace it runs in, the nat rules of
Linkerd's proxy-init: incoming TCP goes to the proxy's inbound port except
the ignored ports; outgoing TCP goes to the proxy's outbound port except
the proxy's own (by uid) and loopback traffic. It needs NET_ADMIN and the
iptables command. If the rules are already there (a restarted init
container), it leaves them alone.`,
		Example: `  proxy-init --incoming-proxy-port 4143 --outgoing-proxy-port 4140 \
    --proxy-uid 2102 --inbound-ports-to-ignore 4190,4191
  proxy-init --simulate ...   # print the iptables-restore input, change nothing`,
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
			input := restoreInput(c)
			if simulate {
				_, err := io.WriteString(stdout, input)
				return err
			}
			return apply(c, input, stdout)
		},
	}
	f := cmd.Flags()
	f.IntVar(&c.InboundPort, "incoming-proxy-port", contract.InboundPort, "port incoming TCP is redirected to")
	f.IntVar(&c.OutboundPort, "outgoing-proxy-port", contract.OutboundPort, "port outgoing TCP is redirected to")
	f.IntVar(&c.ProxyUID, "proxy-uid", contract.ProxyUID, "uid of the proxy, whose own connections are not redirected")
	f.StringVar(&inIgnore, "inbound-ports-to-ignore", "", "comma-separated incoming destination ports that skip the proxy")
	f.StringVar(&outIgnore, "outbound-ports-to-ignore", "", "comma-separated outgoing destination ports that skip the proxy")
	f.BoolVar(&simulate, "simulate", false, "print the rules instead of applying them")
	return cmd
}

func apply(c config, input string, stdout io.Writer) error {
	if _, err := exec.LookPath("iptables-restore"); err != nil {
		return errors.New("iptables-restore not found: install the iptables package")
	}
	// An init container may run again (a pod restart): the rules are
	// then in place and adding them twice would double the jumps.
	if exec.Command("iptables", "-w", "-t", "nat", "-n", "-L", outputChain).Run() == nil {
		fmt.Fprintln(stdout, "proxy-init: rules already in place in this network namespace")
		return nil
	}
	cmd := exec.Command("iptables-restore", "-w", "--noflush")
	cmd.Stdin = strings.NewReader(input)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("iptables-restore: %v: %s", err, strings.TrimSpace(out.String()))
	}
	fmt.Fprint(stdout, input)
	fmt.Fprintf(stdout, "proxy-init: redirect rules installed (inbound to %d, outbound to %d, uid %d exempt)\n", c.InboundPort, c.OutboundPort, c.ProxyUID)
	return nil
}
