package contract

import (
	"fmt"
	"strings"
)

// The Secret and bundle layout.
const (
	// BundleConfigMap holds the trust anchors in every TLS namespace.
	BundleConfigMap = "linkerd-ca-bundle"
	// BundleKey is the bundle's key in that ConfigMap.
	BundleKey = "trust-anchors.pem"
	// RootSecret holds the CA root in the control-plane namespace.
	RootSecret = "linkerd-ca-root"
	// AnchorsConfigMap, in the control-plane namespace only, records the
	// roots the trust bundles hold (key BundleKey). It survives the loss of
	// the root Secret, so recovery keeps trusting the mesh's past roots
	// without reading anything a tenant can write.
	AnchorsConfigMap = "linkerd-ca-anchors"
	// SecretSuffix ends every workload Secret's name.
	SecretSuffix = "-tls-linkerd-io"
)

// Owner kinds, spelled as they appear in identities, Secret names and the
// linkerd.io/proxy-<kind> label.
const (
	KindDeployment            = "deployment"
	KindStatefulSet           = "statefulset"
	KindDaemonSet             = "daemonset"
	KindReplicaSet            = "replicaset"
	KindReplicationController = "replicationcontroller"
	KindPod                   = "pod"
	KindJob                   = "job"
	KindCronJob               = "cronjob"
)

// Kinds lists the owner kinds in the order their labels are consulted: a
// pod from a Deployment also carries its ReplicaSet's hash, and the
// Deployment is the owner that outlives rollouts.
// Likewise a CronJob's pods carry their Job's name, and the CronJob is the
// owner that outlives each run.
var Kinds = []string{KindDeployment, KindStatefulSet, KindDaemonSet, KindCronJob, KindJob, KindReplicationController, KindReplicaSet, KindPod}

// Identity is a workload's TLS identity and its certificate's DNS SAN.
func Identity(owner, kind, namespace, controlNamespace string) string {
	return fmt.Sprintf("%s.%s.%s.linkerd-managed.%s.svc.cluster.local", owner, kind, namespace, controlNamespace)
}

// IdentityDomain is the DNS domain every identity of a control plane ends
// in; the roots the CA generates are constrained to it.
func IdentityDomain(controlNamespace string) string {
	return "linkerd-managed." + controlNamespace + ".svc.cluster.local"
}

// ControllerIdentity is the identity proxies expect of control-plane
// components, which run as Deployments in the control-plane namespace.
func ControllerIdentity(component, controlNamespace string) string {
	return Identity(component, KindDeployment, controlNamespace, controlNamespace)
}

// TapIdentity is the one identity a proxy's tap port accepts: the tap
// API's own Deployment, not the destination service's, so neither can
// stand in for the other.
func TapIdentity(controlNamespace string) string {
	return ControllerIdentity(TapComponent, controlNamespace)
}

// SecretName is the workload Secret for an owner.
func SecretName(owner, kind string) string {
	return owner + "-" + kind + SecretSuffix
}

// RootCommonName is the subject of a generated root.
func RootCommonName(controlNamespace string) string {
	return "identity.linkerd." + strings.ToLower(controlNamespace) + ".cluster.local root CA"
}
