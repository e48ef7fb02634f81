package ca

import (
	"strings"

	"meshtls/contract"

	corev1 "k8s.io/api/core/v1"
)

// ownerKey names one TLS owner, or with kind bundleKind one namespace's
// trust bundle. It is the workqueue's item type.
type ownerKey struct {
	Kind      string
	Namespace string
	Name      string
}

const (
	bundleKind = "bundle"
	// anchorsKind is the anchor record in the control-plane namespace.
	anchorsKind = "anchors"
)

func (k ownerKey) String() string { return k.Kind + "/" + k.Namespace + "/" + k.Name }

// wantsTLS says whether pod is one of this control plane's TLS pods.
func wantsTLS(pod *corev1.Pod, controlNS string) bool {
	return contract.TLSMode(pod.Annotations[contract.TLSAnnotation]) && pod.Labels[contract.ControlPlaneNSLabel] == controlNS
}

// podOwner finds the workload that owns pod's identity. inject writes a
// linkerd.io/proxy-<kind> label, which is preferred because it names the
// long-lived owner (a Deployment, not its current ReplicaSet) without an
// API call; pods meshed some other way fall back to their controller
// reference, and a bare pod owns itself.
func podOwner(pod *corev1.Pod) ownerKey {
	for _, kind := range contract.Kinds {
		if name := pod.Labels[contract.KindLabel(kind)]; name != "" {
			return ownerKey{Kind: kind, Namespace: pod.Namespace, Name: name}
		}
	}
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		kind := strings.ToLower(ref.Kind)
		for _, k := range contract.Kinds {
			if k == kind {
				return ownerKey{Kind: kind, Namespace: pod.Namespace, Name: ref.Name}
			}
		}
	}
	return ownerKey{Kind: contract.KindPod, Namespace: pod.Namespace, Name: pod.Name}
}

// secretOwner recovers the owner from one of the CA's Secrets, so a
// deleted Secret can be re-created.
func secretOwner(s *corev1.Secret) (ownerKey, bool) {
	kind := s.Labels[contract.OwnerKindLabel]
	suffix := "-" + kind + contract.SecretSuffix
	if kind == "" || !strings.HasSuffix(s.Name, suffix) {
		return ownerKey{}, false
	}
	return ownerKey{Kind: kind, Namespace: s.Namespace, Name: strings.TrimSuffix(s.Name, suffix)}, true
}
