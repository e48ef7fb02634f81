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
		"--inbound-ports-to-ignore", "4191,4190", "--simulate"})
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
