package contract

import (
	"fmt"
	"regexp"
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

// DefaultClusterDomain is the cluster's DNS domain unless install, inject
// and the controllers are told another (--cluster-domain): the one place
// it is spelled out.
const DefaultClusterDomain = "cluster.local"

// Identity is a workload's TLS identity and its certificate's DNS SAN in
// a cluster with the default domain.
func Identity(owner, kind, namespace, controlNamespace string) string {
	return IdentityIn(owner, kind, namespace, controlNamespace, DefaultClusterDomain)
}

// IdentityIn is a workload's TLS identity in the cluster domain
// clusterDomain ("" is DefaultClusterDomain).
func IdentityIn(owner, kind, namespace, controlNamespace, clusterDomain string) string {
	return fmt.Sprintf("%s.%s.%s.%s", owner, kind, namespace, IdentityDomainIn(controlNamespace, clusterDomain))
}

// IdentityDomain is the DNS domain every identity of a control plane ends
// in, with the default cluster domain; the roots the CA generates are
// constrained to it.
func IdentityDomain(controlNamespace string) string {
	return IdentityDomainIn(controlNamespace, DefaultClusterDomain)
}

// IdentityDomainIn is IdentityDomain in the cluster domain clusterDomain.
func IdentityDomainIn(controlNamespace, clusterDomain string) string {
	return "linkerd-managed." + ServiceDomain(controlNamespace, clusterDomain)
}

// ServiceDomain is the DNS domain of namespace's Services:
// <namespace>.svc.<clusterDomain>.
func ServiceDomain(namespace, clusterDomain string) string {
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	return namespace + ".svc." + clusterDomain
}

// ControllerIdentity is the identity proxies expect of control-plane
// components, which run as Deployments in the control-plane namespace.
func ControllerIdentity(component, controlNamespace string) string {
	return ControllerIdentityIn(component, controlNamespace, DefaultClusterDomain)
}

// ControllerIdentityIn is ControllerIdentity in the cluster domain
// clusterDomain.
func ControllerIdentityIn(component, controlNamespace, clusterDomain string) string {
	return IdentityIn(component, KindDeployment, controlNamespace, controlNamespace, clusterDomain)
}

// SecretName is the workload Secret for an owner.
func SecretName(owner, kind string) string {
	return owner + "-" + kind + SecretSuffix
}

// RootCommonName is the subject of a generated root.
func RootCommonName(controlNamespace string) string {
	return RootCommonNameIn(controlNamespace, DefaultClusterDomain)
}

// RootCommonNameIn is RootCommonName in the cluster domain clusterDomain.
func RootCommonNameIn(controlNamespace, clusterDomain string) string {
	if clusterDomain == "" {
		clusterDomain = DefaultClusterDomain
	}
	return "identity.linkerd." + strings.ToLower(controlNamespace) + "." + clusterDomain + " root CA"
}

// CheckClusterDomain rejects a cluster domain no name can end in: it is a
// DNS name without the trailing dot (cluster.local, corp.example).
func CheckClusterDomain(d string) error {
	if d == "" || len(d) > 200 || !clusterDomainRE.MatchString(d) {
		return fmt.Errorf("invalid --cluster-domain %q: want the cluster's DNS domain, lower-case labels separated by dots, without a trailing dot (e.g. cluster.local)", d)
	}
	return nil
}

var clusterDomainRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$`)
