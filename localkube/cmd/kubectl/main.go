// Command kubectl is upstream kubectl at the cluster's version, so a fresh
// machine can talk to localkube without installing a client.
package main

import (
	"os"

	_ "k8s.io/client-go/plugin/pkg/client/auth" // auth plugins, as upstream kubectl has them
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	"k8s.io/kubectl/pkg/cmd"
	"k8s.io/kubectl/pkg/cmd/util"
)

func main() {
	// Verbosity must be known before the command is built (it reads
	// plugins and .kuberc), so it is taken from the raw args first.
	_, _ = logs.GlogSetter(cmd.GetLogVerbosity(os.Args))
	if err := cli.RunNoErrOutput(cmd.NewDefaultKubectlCommand()); err != nil {
		util.CheckErr(err)
	}
}
