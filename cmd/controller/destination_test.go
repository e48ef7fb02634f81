package main

import (
	"bytes"
	"os"
	"path/filepath"
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

// controller tap refuses to start without its certificates, in one line.
func TestTapFlagErrors(t *testing.T) {
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"tap", "--log-format=xml"}, `unknown --log-format "xml"`},
		{[]string{"tap"}, "is required"},
		// Present but unusable is an error at once; missing is awaited
		// (the CA writes it after the pod starts).
		{[]string{"tap", "--tls-cert=" + garbage, "--tls-key=" + garbage, "--identity-cert=a", "--identity-key=b", "--trust-anchors=c"}, "serving certificate " + garbage},
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
