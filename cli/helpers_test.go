package cli

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// errNoCluster stands in for a kubeconfig in tests that must not reach
// whatever cluster the machine happens to have.
var errNoCluster = errors.New("no cluster in this test")

type runResult struct {
	out, errOut string
	code        int
}

// execute runs the CLI in-process, as `linkerd args...`, with no cluster.
func execute(t *testing.T, tty bool, args ...string) runResult {
	t.Helper()
	return executeIO(t, tty, "", args...)
}

// executeWithInput is execute with text on stdin.
func executeWithInput(t *testing.T, in string, args ...string) runResult {
	t.Helper()
	return executeIO(t, false, in, args...)
}

func executeIO(t *testing.T, tty bool, in string, args ...string) runResult {
	t.Helper()
	io, out, errOut := TestStreams(tty)
	io.In = strings.NewReader(in)
	f := NewFactory(io)
	f.RESTConfig = func() (*rest.Config, error) { return nil, errNoCluster }
	f.KubeClient = func() (kubernetes.Interface, error) { return nil, errNoCluster }
	root := NewRootCmd(f)
	root.SetArgs(args)
	code, line := exitCode(root.Execute())
	if line != "" {
		errOut.WriteString(line + "\n")
	}
	return runResult{out: out.String(), errOut: errOut.String(), code: code}
}
