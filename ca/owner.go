package ca

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"meshtls/ca/pki"
)

// Labels and annotations of the contract (DESIGN.md) the CA reads or writes.
const (
	// TLSAnnotation marks a pod whose proxy wants a certificate.
	TLSAnnotation = "linkerd.io/tls"
	// ControlPlaneNSLabel ties a meshed pod, and each object the CA writes,
	// to one control plane.
	ControlPlaneNSLabel = "linkerd.io/control-plane-ns"
	// OwnerKindLabel marks the CA's workload Secrets and names their owner's
	// kind; with the Secret name it recovers the owner on a delete.
	OwnerKindLabel = "linkerd.io/tls-owner-kind"
	// BundleLabel marks the trust bundles the CA writes.
	BundleLabel = "linkerd.io/ca-bundle"
	// IdentityAnnotation repeats a Secret's identity for humans and check.
	IdentityAnnotation = "linkerd.io/tls-identity"
	// NotAfterAnnotation repeats a Secret's expiry (RFC 3339).
	NotAfterAnnotation = "linkerd.io/tls-not-after"
)

// ownerKey names one TLS owner, or with kind bundleKind one namespace's
// trust bundle. It is the workqueue's item type.
type ownerKey struct {
	Kind      string
	Namespace string
	Name      string
}

const bundleKind = "bundle"

func (k ownerKey) String() string { return k.Kind + "/" + k.Namespace + "/" + k.Name }

// wantsTLS says whether pod is one of this control plane's TLS pods.
func wantsTLS(pod *corev1.Pod, controlNS string) bool {
	return pod.Annotations[TLSAnnotation] == "optional" && pod.Labels[ControlPlaneNSLabel] == controlNS
}

// podOwner finds the workload that owns pod's identity. inject writes a
// linkerd.io/proxy-<kind> label, which is preferred because it names the
// long-lived owner (a Deployment, not its current ReplicaSet) without an
// API call; pods meshed some other way fall back to their controller
// reference, and a bare pod owns itself.
func podOwner(pod *corev1.Pod) ownerKey {
	for _, kind := range pki.Kinds {
		if name := pod.Labels[pki.KindLabel(kind)]; name != "" {
			return ownerKey{Kind: kind, Namespace: pod.Namespace, Name: name}
		}
	}
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		kind := strings.ToLower(ref.Kind)
		for _, k := range pki.Kinds {
			if k == kind {
				return ownerKey{Kind: kind, Namespace: pod.Namespace, Name: ref.Name}
			}
		}
	}
	return ownerKey{Kind: pki.KindPod, Namespace: pod.Namespace, Name: pod.Name}
}

// secretOwner recovers the owner from one of the CA's Secrets, so a
// deleted Secret can be re-created.
func secretOwner(s *corev1.Secret) (ownerKey, bool) {
	kind := s.Labels[OwnerKindLabel]
	suffix := "-" + kind + pki.SecretSuffix
	if kind == "" || !strings.HasSuffix(s.Name, suffix) {
		return ownerKey{}, false
	}
	return ownerKey{Kind: kind, Namespace: s.Namespace, Name: strings.TrimSuffix(s.Name, suffix)}, true
}
