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

	// TLSAnnotation marks a pod whose proxy wants a certificate, and how
	// strictly: TLSOptional or TLSRequired. On a Namespace it is the
	// default for the pods inject sees in that namespace; a pod's own
	// annotation wins.
	TLSAnnotation = "linkerd.io/tls"
	// TLSOptional fails open: mTLS where both ends can, plain text
	// otherwise.
	TLSOptional = "optional"
	// TLSRequired is TLSOptional plus enforcement: the proxy accepts
	// inbound application traffic only over mTLS from a mesh identity.
	TLSRequired = "required"
	// TLSPinnedAnnotation "true" says the pod template's TLSAnnotation was
	// the user's own (it wins over the namespace and --tls when injected
	// again), not one inject wrote from --tls or the namespace.
	TLSPinnedAnnotation = "linkerd.io/tls-pinned"
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
	// IssuerAnnotation is the SHA-256 (hex) of the issuer certificate that
	// signed a workload Secret's leaf, so a rotation can tell which leaves
	// have moved to the new root without reading any Secret's data.
	IssuerAnnotation = "linkerd.io/tls-issuer"

	// RotationAnnotation on the root Secret names the step a root rotation
	// is at: RotationAddAnchors, RotationReissue or RotationRetire; absent
	// when no rotation is under way.
	RotationAnnotation = "linkerd.io/ca-rotation"
	RotationAddAnchors = "add-anchors"
	RotationReissue    = "reissue"
	RotationRetire     = "retire"
)

// Extra keys of the root Secret (besides tls.crt and tls.key, the issuer).
const (
	// RootAnchorsKey holds the roots an intermediate issuer chains to
	// (cert-manager's layout); absent when tls.crt is a self-signed root.
	RootAnchorsKey = "ca.crt"
	// RootBundleKey, when present, is exactly what every trust bundle must
	// hold: during a rotation, the old and the new roots.
	RootBundleKey = BundleKey
	// RootNextCertKey, RootNextKeyKey and RootNextAnchorsKey hold the next
	// issuer while bundles learn its root, before it starts issuing.
	RootNextCertKey    = "next-tls.crt"
	RootNextKeyKey     = "next-tls.key"
	RootNextAnchorsKey = "next-ca.crt"
)

// TLSMode says whether v, a TLSAnnotation value, asks for a certificate:
// TLSOptional or TLSRequired (required implies everything optional does).
func TLSMode(v string) bool { return v == TLSOptional || v == TLSRequired }

// KindLabel is the pod label naming the owner of kind.
func KindLabel(kind string) string { return ProxyKindLabelPrefix + kind }
