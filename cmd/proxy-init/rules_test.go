package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRulesAreLinkerdsForInjectsFlags(t *testing.T) {
	var out bytes.Buffer
	cmd := newRootCmd(&out)
	// The flags inject writes (inject/proxy.go).
	cmd.SetArgs([]string{"--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140", "--proxy-uid", "2102",
		"--inbound-ports-to-ignore", "4191,4190", "--firewall", "iptables", "--simulate"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	rules := out.String()
	for _, want := range []string{
		"*nat\n",
		"-A PROXY_INIT_REDIRECT -p tcp -m multiport --dports 4190,4191 ",
		"-A PROXY_INIT_REDIRECT -p tcp -m comment --comment \"proxy-init/redirect-all-incoming-to-proxy-port\" -j REDIRECT --to-ports 4143\n",
		"-A PREROUTING -j PROXY_INIT_REDIRECT",
		"-A PROXY_INIT_OUTPUT -m owner --uid-owner 2102 ",
		"-A PROXY_INIT_OUTPUT -o lo ",
		"-j REDIRECT --to-ports 4140\n",
		"-A OUTPUT -j PROXY_INIT_OUTPUT",
		"COMMIT\n",
	} {
		if !strings.Contains(rules, want) {
			t.Errorf("rules lack %q:\n%s", want, rules)
		}
	}
	// The exemptions come before the redirect in each chain, or they
	// would never match.
	if strings.Index(rules, "--dports 4190,4191") > strings.Index(rules, "--to-ports 4143") ||
		strings.Index(rules, "--uid-owner 2102") > strings.Index(rules, "--to-ports 4140") ||
		strings.Index(rules, "-o lo") > strings.Index(rules, "--to-ports 4140") {
		t.Errorf("an exemption follows its redirect:\n%s", rules)
	}
}

// Each bad flag gives one line that names the flag and the bad value.
func TestBadFlagsGiveOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--inbound-ports-to-ignore", "4190,http"}, []string{"--inbound-ports-to-ignore", `"http"`}},
		{[]string{"--incoming-proxy-port", "70000"}, []string{"--incoming-proxy-port", "70000"}},
		{[]string{"--outgoing-proxy-port", "0"}, []string{"--outgoing-proxy-port", "0"}},
		{[]string{"--proxy-uid", "-1"}, []string{"--proxy-uid", "-1"}},
		{[]string{"--outbound-ports-to-ignore", "0"}, []string{"--outbound-ports-to-ignore", `"0"`}},
		{[]string{"--firewall", "ipfw"}, []string{"--firewall", `"ipfw"`, "nft"}},
	} {
		cmd := newRootCmd(&bytes.Buffer{})
		cmd.SetArgs(append(tc.args, "--simulate"))
		err := cmd.Execute()
		if err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error %v, want one line", tc.args, err)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error %q does not name %s", tc.args, err, w)
			}
		}
	}
}

// --simulate in nft mode prints one inet table (IPv4 and IPv6) with the
// same rules, in the same order, as the iptables input, and a script that
// replaces an older copy of the table when nft -f loads it.
func TestNftRulesMatchTheIptablesRules(t *testing.T) {
	args := []string{"--incoming-proxy-port", "4143", "--outgoing-proxy-port", "4140", "--proxy-uid", "2102",
		"--inbound-ports-to-ignore", "4191,4190,4191", "--outbound-ports-to-ignore", "25", "--redirect-local-traffic", "--simulate"}
	simulate := func(extra ...string) string {
		var out bytes.Buffer
		cmd := newRootCmd(&out)
		cmd.SetArgs(append(append([]string{}, args...), extra...))
		if err := cmd.Execute(); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	nft, ipt := simulate(), simulate("--firewall", "iptables")
	if !strings.HasPrefix(nft, "table inet proxy_init\ndelete table inet proxy_init\ntable inet proxy_init {\n") {
		t.Errorf("the nft script does not replace the table:\n%s", nft)
	}
	for _, want := range []string{
		"tcp dport { 4190, 4191 } return comment \"proxy-init/ignore-inbound-ports\"",
		"meta l4proto tcp redirect to :4143 comment",
		"type nat hook prerouting priority dstnat; policy accept;",
		"oifname \"lo\" meta skuid 2102 ip daddr != 127.0.0.1 jump PROXY_INIT_REDIRECT",
		"oifname \"lo\" meta skuid 2102 ip6 daddr != ::1 jump PROXY_INIT_REDIRECT",
		"meta skuid 2102 return",
		"tcp dport { 25 } return",
		"meta l4proto tcp redirect to :4140 comment",
		"type nat hook output priority -100; policy accept;",
	} {
		if !strings.Contains(nft, want) {
			t.Errorf("nft rules lack %q:\n%s", want, nft)
		}
	}
	// Both backends write the same rules, in the same order: compare the
	// comments in each.
	comments := func(s string) []string {
		var out []string
		for _, line := range strings.Split(s, "\n") {
			if i := strings.Index(line, "proxy-init/"); i >= 0 {
				out = append(out, strings.Trim(strings.Fields(line[i:])[0], `"`))
			}
		}
		return out
	}
	c6 := comments(ipt)
	c4 := c6[:len(c6)/2]
	// nft has the IPv4 and IPv6 forms of the local redirect side by side;
	// iptables has one in each family's input.
	var nftOrder []string
	for i, c := range comments(nft) {
		if i > 0 && c == comments(nft)[i-1] {
			continue
		}
		nftOrder = append(nftOrder, c)
	}
	if strings.Join(nftOrder, " ") != strings.Join(c4, " ") {
		t.Errorf("rule order differs:\nnft      %v\niptables %v", nftOrder, c4)
	}
	if !strings.Contains(ipt, "! -d ::1/128 -m owner --uid-owner 2102") || !strings.Contains(ipt, "! -d 127.0.0.1/32 -m owner --uid-owner 2102") {
		t.Errorf("iptables input lacks the local redirect for both families:\n%s", ipt)
	}
	// The local redirect is the default (the proxy reaches the app on
	// 127.0.0.1, so it cannot loop); --redirect-local-traffic=false drops it.
	args = args[:len(args)-2]
	args = append(args, "--simulate")
	if out := simulate(); !strings.Contains(out, "redirect-non-loopback-local-traffic") {
		t.Errorf("the local redirect is not there by default:\n%s", out)
	}
	if out := simulate("--redirect-local-traffic=false"); strings.Contains(out, "redirect-non-loopback-local-traffic") {
		t.Errorf("the local redirect is there with --redirect-local-traffic=false:\n%s", out)
	}
}
