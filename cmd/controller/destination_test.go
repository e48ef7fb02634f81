package main

import (
	"bytes"
	"strings"
	"testing"
)

// Bad flags fail with one line naming the cause, before any connection.
func TestDestinationFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"destination", "--log-format=xml"}, `unknown --log-format "xml"`},
		{[]string{"destination", "--tls-cert=/tmp/c.pem"}, "--tls-cert, --tls-key and --tls-trust-anchors go together"},
		{[]string{"destination", "extra"}, `unknown command "extra"`},
	} {
		cmd := newRootCmd()
		var out bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(tc.args)
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestDestinationHelp(t *testing.T) {
	cmd := newRootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"destination", "--help"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Examples:", "--trust-readiness", "--tls-trust-anchors", "--addr"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("help lacks %q:\n%s", want, out.String())
		}
	}
}
