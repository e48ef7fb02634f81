package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// The native nf_tables backend (--firewall nft, the default): one table of
// the inet family, so IPv4 and IPv6 are redirected alike, written in one
// netlink transaction. It needs no iptables binary, so the image is the
// static binary alone, and no NET_RAW.
const nftTable = "proxy_init"

// nftMatch is one condition of a rule: its nft syntax (for --simulate and
// for reading `nft list ruleset`) and the expressions that program it.
type nftMatch struct {
	text  string
	exprs []expr.Any
}

// nftRule is one rule of a chain. ports, when set, is the anonymous set
// its lookup reads.
type nftRule struct {
	chain   string
	matches []nftMatch
	verdict nftMatch
	comment string
	ports   []int
}

// nftChain is a chain of the table; base chains have a hook.
type nftChain struct {
	name string
	hook *nftables.ChainHook
	// hookName and priority are the hook's and its priority's nft names,
	// as `nft list ruleset` prints them.
	hookName, priority string
}

var (
	nftChains = []nftChain{
		{name: redirectChain},
		{name: "prerouting", hook: nftables.ChainHookPrerouting, hookName: "prerouting", priority: "dstnat"},
		{name: outputChain},
		{name: "output", hook: nftables.ChainHookOutput, hookName: "output", priority: "-100"},
	}
	loopback4 = netip.MustParseAddr("127.0.0.1")
	loopback6 = netip.IPv6Loopback()
)

func tcp() nftMatch {
	return nftMatch{"meta l4proto tcp", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
	}}
}

// dports matches the TCP destination port against the rule's set; the
// set's name and id are filled in when the rule is programmed.
func dports(ports []int) nftMatch {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(p)
	}
	return nftMatch{"tcp dport { " + strings.Join(s, ", ") + " }", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1},
	}}
}

func skuid(uid int) nftMatch {
	return nftMatch{"meta skuid " + strconv.Itoa(uid), []expr.Any{
		&expr.Meta{Key: expr.MetaKeySKUID, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(uint32(uid))},
	}}
}

func oifname(name string) nftMatch {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return nftMatch{`oifname "` + name + `"`, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b},
	}}
}

// daddrNot matches packets of a's family whose destination is not a.
func daddrNot(a netip.Addr) nftMatch {
	family, word, offset := byte(unix.NFPROTO_IPV4), "ip", uint32(16)
	if a.Is6() {
		family, word, offset = unix.NFPROTO_IPV6, "ip6", 24
	}
	return nftMatch{word + " daddr != " + a.String(), []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{family}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: uint32(a.BitLen() / 8)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: a.AsSlice()},
	}}
}

func ret() nftMatch {
	return nftMatch{"return", []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}}}
}

func jump(chain string) nftMatch {
	return nftMatch{"jump " + chain, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}}
}

func redirectTo(port int) nftMatch {
	return nftMatch{"redirect to :" + strconv.Itoa(port), []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(uint16(port))},
		&expr.Redir{RegisterProtoMin: 1},
	}}
}

// nftRules are the same rules as the iptables backend's, in the same
// order, with the same comments.
func nftRules(c config) []nftRule {
	var rs []nftRule
	add := func(chain, comment string, ports []int, verdict nftMatch, ms ...nftMatch) {
		rs = append(rs, nftRule{chain: chain, matches: ms, verdict: verdict, comment: "proxy-init/" + comment, ports: ports})
	}
	if ports := uniquePorts(c.InboundPortsToIgnore); len(ports) > 0 {
		add(redirectChain, "ignore-inbound-ports", ports, ret(), dports(ports))
	}
	add(redirectChain, "redirect-all-incoming-to-proxy-port", nil, redirectTo(c.InboundPort), tcp())
	add("prerouting", "install-proxy-init-prerouting", nil, jump(redirectChain))
	if c.RedirectLocal {
		// The proxy dialling its own pod (a Service that routes back to
		// this pod) goes out on lo: send it to the inbound side, which
		// terminates the mTLS the outbound side started.
		for _, lo := range []netip.Addr{loopback4, loopback6} {
			add(outputChain, "redirect-non-loopback-local-traffic", nil, jump(redirectChain), oifname("lo"), skuid(c.ProxyUID), daddrNot(lo))
		}
	}
	add(outputChain, "ignore-proxy-user-id", nil, ret(), skuid(c.ProxyUID))
	add(outputChain, "ignore-loopback", nil, ret(), oifname("lo"))
	if ports := uniquePorts(c.OutboundPortsToIgnore); len(ports) > 0 {
		add(outputChain, "ignore-outbound-ports", ports, ret(), dports(ports))
	}
	add(outputChain, "redirect-all-outgoing-to-proxy-port", nil, redirectTo(c.OutboundPort), tcp())
	add("output", "install-proxy-init-output", nil, jump(outputChain))
	return rs
}

// nftScript is the table as `nft -f` reads it: what --simulate prints.
// Its first lines make loading it replace an older copy, as apply does.
func nftScript(c config) string {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s\ndelete table inet %s\ntable inet %s {\n", nftTable, nftTable, nftTable)
	rules := nftRules(c)
	for i, ch := range nftChains {
		if i > 0 {
			b.WriteString("\n")
		}
		fmt.Fprintf(&b, "\tchain %s {\n", ch.name)
		if ch.hook != nil {
			fmt.Fprintf(&b, "\t\ttype nat hook %s priority %s; policy accept;\n", ch.hookName, ch.priority)
		}
		for _, r := range rules {
			if r.chain != ch.name {
				continue
			}
			var parts []string
			for _, m := range r.matches {
				parts = append(parts, m.text)
			}
			parts = append(parts, r.verdict.text, fmt.Sprintf("comment %q", r.comment))
			fmt.Fprintf(&b, "\t\t%s\n", strings.Join(parts, " "))
		}
		b.WriteString("\t}\n")
	}
	b.WriteString("}\n")
	return b.String()
}

// applyNFT replaces the table in one transaction: a restarted init
// container finds the same rules, never two copies, and a pod never sees
// half a table.
func applyNFT(c config, stdout io.Writer) error {
	conn, err := nftables.New()
	if err != nil {
		return nftError(err)
	}
	existed := false
	if _, err := conn.ListTableOfFamily(nftTable, nftables.TableFamilyINet); err == nil {
		existed = true
	} else if errors.Is(err, syscall.EPERM) {
		return nftError(err)
	}
	table := &nftables.Table{Name: nftTable, Family: nftables.TableFamilyINet}
	// Adding an existing table is a no-op, so the delete always finds one.
	conn.AddTable(table)
	conn.DelTable(table)
	conn.AddTable(table)
	chains := map[string]*nftables.Chain{}
	for _, ch := range nftChains {
		nc := &nftables.Chain{Name: ch.name, Table: table}
		if ch.hook != nil {
			accept := nftables.ChainPolicyAccept
			nc.Type, nc.Hooknum, nc.Priority, nc.Policy = nftables.ChainTypeNAT, ch.hook, nftables.ChainPriorityNATDest, &accept
		}
		chains[ch.name] = conn.AddChain(nc)
	}
	for _, r := range nftRules(c) {
		var exprs []expr.Any
		for _, m := range r.matches {
			exprs = append(exprs, m.exprs...)
		}
		if r.ports != nil {
			set := &nftables.Set{Table: table, Anonymous: true, Constant: true, KeyType: nftables.TypeInetService}
			var elems []nftables.SetElement
			for _, p := range r.ports {
				elems = append(elems, nftables.SetElement{Key: binaryutil.BigEndian.PutUint16(uint16(p))})
			}
			if err := conn.AddSet(set, elems); err != nil {
				return fmt.Errorf("nftables: the set of %s: %v", r.comment, err)
			}
			for _, e := range exprs {
				if l, ok := e.(*expr.Lookup); ok {
					l.SetName, l.SetID = set.Name, set.ID
				}
			}
		}
		exprs = append(exprs, r.verdict.exprs...)
		conn.AddRule(&nftables.Rule{
			Table:    table,
			Chain:    chains[r.chain],
			Exprs:    exprs,
			UserData: userdata.AppendString(nil, userdata.TypeComment, r.comment),
		})
	}
	if err := conn.Flush(); err != nil {
		return nftError(err)
	}
	fmt.Fprint(stdout, nftScript(c))
	verb := "installed"
	if existed {
		verb = "replaced (a restarted init container)"
	}
	fmt.Fprintf(stdout, "proxy-init: nftables table inet %s %s: IPv4 and IPv6 inbound to %d, outbound to %d, uid %d exempt\n", nftTable, verb, c.InboundPort, c.OutboundPort, c.ProxyUID)
	return nil
}

func nftError(err error) error {
	switch {
	case errors.Is(err, syscall.EPERM):
		return fmt.Errorf("nftables: %v: proxy-init needs NET_ADMIN in the pod's network namespace (the init container's securityContext adds it)", err)
	case errors.Is(err, syscall.EPROTONOSUPPORT), errors.Is(err, syscall.EAFNOSUPPORT):
		return fmt.Errorf("nftables: %v: this kernel has no nf_tables; run proxy-init from an image that has iptables, with --firewall iptables-legacy", err)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.EOPNOTSUPP):
		return fmt.Errorf("nftables: %v: this kernel lacks nat or redirect for the inet family (nft_nat, nft_redir; Linux 5.2 or newer); run proxy-init from an image that has iptables, with --firewall iptables-legacy", err)
	}
	return fmt.Errorf("nftables: %v", err)
}
