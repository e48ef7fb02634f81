package contract

// Labels and annotations on meshed pods and on the objects the CA writes.
const (
	// ControlPlaneNSLabel ties a meshed pod, and each object the CA writes,
	// to one control plane.
	ControlPlaneNSLabel = "linkerd.io/control-plane-ns"
	// ProxyKindLabelPrefix starts the label naming a pod's owner:
	// linkerd.io/proxy-deployment=web.
	ProxyKindLabelPrefix = "linkerd.io/proxy-"
	// ComponentLabel names the control-plane component of a pod; Services
	// and check select on it.
	ComponentLabel = "linkerd.io/control-plane-component"

	// TLSAnnotation "optional" marks a pod whose proxy wants a certificate.
	TLSAnnotation = "linkerd.io/tls"
	// TLSOptional is the only value TLSAnnotation takes today.
	TLSOptional = "optional"
	// ProxyVersionAnnotation is the injected proxy's version.
	ProxyVersionAnnotation = "linkerd.io/proxy-version"
	// CreatedByAnnotation names the tool that wrote an object.
	CreatedByAnnotation = "linkerd.io/created-by"
	// InjectAnnotation "disabled" on a workload or its pods opts out.
	InjectAnnotation = "linkerd.io/inject"

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

// KindLabel is the pod label naming the owner of kind.
func KindLabel(kind string) string { return ProxyKindLabelPrefix + kind }
