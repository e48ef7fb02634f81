// Package install renders the control plane as Kubernetes YAML for
// `linkerd install`. It builds typed objects, so what it prints is what
// the API server validates, and it prints them in a fixed order so the
// output is stable enough for golden files and for diffing upgrades.
package install

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"meshtls/ca/pki"
	"meshtls/contract"
	"meshtls/internal/imageref"
)

// Ports of the control plane's own endpoints.
const (
	CAAdminPort    = 9995
	PrometheusPort = 9090
)

// Options is what `linkerd install` can change.
type Options struct {
	// ControlNamespace is the control-plane namespace.
	ControlNamespace string
	// TLS is "" (no CA) or "optional".
	TLS string
	// Registry prefixes our images: <Registry>/controller:<Version>.
	Registry string
	// Version is the control plane's image tag.
	Version string
	// ImageDigests, when set, pins our images by digest (name → digest,
	// from the digest file make images writes).
	ImageDigests map[string]string
	// ImagePullPolicy of every container; "" is IfNotPresent.
	ImagePullPolicy string
	// ImagePullSecrets go into every pod spec install creates.
	ImagePullSecrets []string
	// ClusterDomain is the cluster's DNS domain; "" is cluster.local.
	ClusterDomain string
	// PrometheusImage is the full Prometheus image reference.
	PrometheusImage string
	// ControllerReplicas runs this many CA replicas; more than one is the
	// HA setup, where a Lease picks the one that issues.
	ControllerReplicas int
	// CertLifetime is the workload certificate lifetime.
	CertLifetime time.Duration
	// RootCertPEM and RootKeyPEM, when set, become the CA's root instead
	// of one it generates.
	RootCertPEM, RootKeyPEM []byte
	// IssuerCertPEM and IssuerKeyPEM, with TrustAnchorsPEM, are an
	// intermediate issuer signed by an offline root: the CA signs with the
	// issuer, bundles hold TrustAnchorsPEM, and the root's key never
	// enters the cluster.
	IssuerCertPEM, IssuerKeyPEM, TrustAnchorsPEM []byte
	// Now validates a supplied root's dates; nil means time.Now.
	Now func() time.Time
}

// DefaultPrometheusImage is the Prometheus the project builds and tests:
// the release of the module install/prometheus/go.mod pins (Prometheus
// X.Y.Z is module version v0.XYY.Z); TestPrometheusImageMatchesModule
// fails when the two disagree.
const DefaultPrometheusImage = "prom/prometheus:v3.16.0"

// DefaultRegistry is the default of --registry.
const DefaultRegistry = imageref.DefaultRegistry

// Images is what install references of ours: the controller image.
var Images = []string{"controller"}

func (o Options) images() imageref.Images {
	return imageref.Images{Registry: o.Registry, Version: o.Version, Digests: o.ImageDigests}
}

// pullPolicy is the validated ImagePullPolicy.
func (o Options) pullPolicy() corev1.PullPolicy {
	p, _ := imageref.PullPolicy(o.ImagePullPolicy) // checked by Validate
	return p
}

// pullSecrets is the validated ImagePullSecrets.
func (o Options) pullSecrets() []corev1.LocalObjectReference {
	r, _ := imageref.PullSecrets(o.ImagePullSecrets) // checked by Validate
	return r
}

// clusterDomainArgs passes a cluster domain other than the default to a
// controller, whose flag defaults to it.
func (o Options) clusterDomainArgs() []string {
	if o.ClusterDomain == "" || o.ClusterDomain == contract.DefaultClusterDomain {
		return nil
	}
	return []string{"--cluster-domain=" + o.ClusterDomain}
}

// Validate checks options before anything is printed, so a bad flag never
// yields half a manifest.
func (o *Options) Validate() error {
	if o.ControlNamespace == "" {
		o.ControlNamespace = "linkerd"
	}
	if errs := validation.IsDNS1123Label(o.ControlNamespace); len(errs) > 0 {
		return fmt.Errorf("invalid control-plane namespace %q: %s", o.ControlNamespace, errs[0])
	}
	switch o.TLS {
	case "", "optional":
	default:
		return fmt.Errorf("invalid --tls value %q: the only supported value is \"optional\"", o.TLS)
	}
	if o.Registry == "" {
		o.Registry = DefaultRegistry
	}
	if err := imageref.CheckRegistry("--registry", o.Registry); err != nil {
		return err
	}
	if err := imageref.CheckVersion("--version", o.Version); err != nil {
		return err
	}
	if _, err := imageref.PullPolicy(o.ImagePullPolicy); err != nil {
		return err
	}
	if _, err := imageref.PullSecrets(o.ImagePullSecrets); err != nil {
		return err
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = contract.DefaultClusterDomain
	}
	if err := contract.CheckClusterDomain(o.ClusterDomain); err != nil {
		return err
	}
	if o.PrometheusImage == "" {
		o.PrometheusImage = DefaultPrometheusImage
	}
	if o.ControllerReplicas == 0 {
		o.ControllerReplicas = 1
	}
	if o.ControllerReplicas < 1 {
		return fmt.Errorf("invalid controller replicas %d: want at least 1", o.ControllerReplicas)
	}
	if o.CertLifetime == 0 {
		o.CertLifetime = pki.DefaultLeafLifetime
	}
	if o.CertLifetime < pki.MinLeafLifetime {
		return fmt.Errorf("certificate lifetime %s is too short: the kubelet may take minutes to deliver a renewed certificate to pods; use at least %s", o.CertLifetime, pki.MinLeafLifetime)
	}
	if (len(o.RootCertPEM) == 0) != (len(o.RootKeyPEM) == 0) {
		return fmt.Errorf("--root-cert and --root-key go together: give both or neither")
	}
	if (len(o.IssuerCertPEM) == 0) != (len(o.IssuerKeyPEM) == 0) || (len(o.IssuerCertPEM) == 0) != (len(o.TrustAnchorsPEM) == 0) {
		return fmt.Errorf("--issuer-cert, --issuer-key and --trust-anchors go together: give all three or none")
	}
	if len(o.RootCertPEM) > 0 && len(o.IssuerCertPEM) > 0 {
		return fmt.Errorf("--root-cert and --issuer-cert exclude each other: give a root, or an issuer and its trust anchors")
	}
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	if len(o.RootCertPEM) > 0 {
		if o.TLS == "" {
			return fmt.Errorf("--root-cert and --root-key need --tls=optional: without TLS there is no CA to use them")
		}
		r, err := pki.LoadIssuer(o.RootCertPEM, o.RootKeyPEM, nil, pki.ProbeIdentity(o.ControlNamespace), now())
		if err != nil {
			return fmt.Errorf("supplied root: %w", err)
		}
		if err := r.CanIssue(o.CertLifetime, now()); err != nil {
			return fmt.Errorf("supplied root: %w", err)
		}
	}
	if len(o.IssuerCertPEM) > 0 {
		if o.TLS == "" {
			return fmt.Errorf("--issuer-cert needs --tls=optional: without TLS there is no CA to use it")
		}
		r, err := pki.LoadIssuer(o.IssuerCertPEM, o.IssuerKeyPEM, o.TrustAnchorsPEM, pki.ProbeIdentity(o.ControlNamespace), now())
		if err != nil {
			return fmt.Errorf("supplied issuer: %w", err)
		}
		if err := r.CanIssue(o.CertLifetime, now()); err != nil {
			return fmt.Errorf("supplied issuer: %w", err)
		}
	}
	return nil
}

// Render writes the control plane's YAML to w.
func Render(w io.Writer, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	objs := Objects(o)
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "# linkerd install (meshtls %s)", o.Version)
	if o.TLS != "" {
		fmt.Fprintf(&buf, " --tls=%s", o.TLS)
	}
	buf.WriteString("\n")
	for _, obj := range objs {
		doc, err := marshal(obj)
		if err != nil {
			return err
		}
		buf.WriteString("---\n")
		buf.Write(doc)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// marshal prints obj as YAML without the empty status and null timestamps
// typed objects carry, which would only be noise to a reader.
func marshal(obj any) ([]byte, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	prune(m)
	return yaml.Marshal(m)
}

func prune(m map[string]any) {
	delete(m, "status")
	for k, v := range m {
		if k == "creationTimestamp" && v == nil {
			delete(m, k)
			continue
		}
		switch v := v.(type) {
		case map[string]any:
			prune(v)
			if len(v) == 0 && (k == "resources" || k == "strategy" || k == "metadata" || k == "spec") {
				delete(m, k)
			}
		case []any:
			for _, e := range v {
				if em, ok := e.(map[string]any); ok {
					prune(em)
				}
			}
		}
	}
}

func typeMeta(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

// Component is one part of the control plane.
type Component struct {
	Name string
	// Enabled says whether the options ask for it; nil means always.
	Enabled func(Options) bool
	Objects func(Options) []any
}

// Components are rendered in this order, after the Namespace, which is
// the order kubectl applies them in. A new component (the destination
// controller) adds itself to this list from its own file.
var Components = []Component{
	{Name: "ca", Enabled: func(o Options) bool { return o.TLS != "" }, Objects: caObjects},
	{Name: "prometheus", Objects: prometheusObjects},
}

// Objects is the control plane, in the order kubectl should apply it.
func Objects(o Options) []any {
	ns := o.ControlNamespace
	objs := []any{
		// Every control-plane pod passes the restricted Pod Security
		// Standard; the namespace enforces it so nothing weaker joins them.
		&corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"), ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
			"pod-security.kubernetes.io/enforce": "restricted",
			"pod-security.kubernetes.io/warn":    "restricted",
			"pod-security.kubernetes.io/audit":   "restricted",
		}}},
	}
	for _, c := range Components {
		if c.Enabled == nil || c.Enabled(o) {
			objs = append(objs, c.Objects(o)...)
		}
	}
	return objs
}

// restrictedPod and restrictedContainer are what the restricted Pod
// Security Standard requires of every control-plane pod: a namespace
// labelled pod-security.kubernetes.io/enforce=restricted admits them.
func restrictedPod(uid int64) *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   ptr(true),
		RunAsUser:      ptr(uid),
		RunAsGroup:     ptr(uid),
		FSGroup:        ptr(uid),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func restrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: ptr(false),
		ReadOnlyRootFilesystem:   ptr(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

func requests(cpu, memory, memoryLimit string) corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(memory)},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse(memoryLimit)},
	}
}

func meta(name, ns, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{contract.ComponentLabel: component, contract.ControlPlaneNSLabel: ns}}
}

// clusterMeta labels a cluster-scoped object with the control plane it
// belongs to, so two control planes' RBAC never collide.
func clusterMeta(name, controlNS, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: map[string]string{contract.ComponentLabel: component, contract.ControlPlaneNSLabel: controlNS}}
}

// CAUser is the CA's uid.
const CAUser = 2103

func caObjects(o Options) []any {
	ns := o.ControlNamespace
	const name = "linkerd-ca"
	var objs []any
	objs = append(objs, &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(name, ns, "ca")})

	// Cluster-wide, the CA lists and watches pods, reads workload owners
	// to point Secrets at them, writes Secrets, its bundle ConfigMaps and
	// Events: nothing more. What remains broad, and why, is in
	// ca/README.md; the ValidatingAdmissionPolicy below narrows writes.
	objs = append(objs,
		&rbacv1.ClusterRole{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, "ca"),
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"replicationcontrollers"}, Verbs: []string{"get"}},
				{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets", "daemonsets", "replicasets"}, Verbs: []string{"get"}},
				{APIGroups: []string{"batch"}, Resources: []string{"jobs", "cronjobs"}, Verbs: []string{"get"}},
				// Its own Secrets carry a label, but RBAC cannot select
				// on labels: list and watch are cluster-wide.
				{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"list", "watch", "create", "patch"}},
				// Lists and watches by name and server-side apply both
				// carry the name, so the bundle alone is reachable.
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{contract.BundleConfigMap}, Verbs: []string{"list", "watch", "create", "patch"}},
				{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
			},
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, "ca"),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name + "-" + ns},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
		// In its own namespace it reads its root, keeps the record of the
		// roots the bundles hold (the only trust input besides the root),
		// and keeps the Lease that picks the issuing replica.
		&rbacv1.Role{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "Role"),
			ObjectMeta: meta(name, ns, "ca"),
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{contract.RootSecret}, Verbs: []string{"get"}},
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{contract.AnchorsConfigMap, contract.BundleConfigMap}, Verbs: []string{"get"}},
				{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{contract.AnchorsConfigMap}, Verbs: []string{"create", "patch"}},
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
				{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{name}, Verbs: []string{"get", "update"}},
			},
		},
		&rbacv1.RoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
			ObjectMeta: meta(name, ns, "ca"),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: name},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
	)
	objs = append(objs, caAdmissionPolicy(ns, name)...)
	switch {
	case len(o.RootCertPEM) > 0:
		objs = append(objs, &corev1.Secret{
			TypeMeta:   typeMeta("v1", "Secret"),
			ObjectMeta: meta(contract.RootSecret, ns, "ca"),
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: o.RootCertPEM, corev1.TLSPrivateKeyKey: o.RootKeyPEM},
		})
	case len(o.IssuerCertPEM) > 0:
		objs = append(objs, &corev1.Secret{
			TypeMeta:   typeMeta("v1", "Secret"),
			ObjectMeta: meta(contract.RootSecret, ns, "ca"),
			Type:       corev1.SecretTypeTLS,
			Data: map[string][]byte{corev1.TLSCertKey: o.IssuerCertPEM, corev1.TLSPrivateKeyKey: o.IssuerKeyPEM,
				contract.RootAnchorsKey: o.TrustAnchorsPEM},
		})
	}

	replicas := int32(o.ControllerReplicas)
	selector := map[string]string{contract.ComponentLabel: "ca"}
	podLabels := map[string]string{contract.ComponentLabel: "ca", contract.ControlPlaneNSLabel: ns}
	objs = append(objs, &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: meta(name, ns, "ca"),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      podLabels,
					Annotations: map[string]string{"linkerd.io/created-by": "linkerd/cli " + o.Version},
				},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					ImagePullSecrets:   o.pullSecrets(),
					SecurityContext:    restrictedPod(CAUser),
					Containers: []corev1.Container{{
						Name:            "ca",
						Image:           o.images().Ref("controller"),
						ImagePullPolicy: o.pullPolicy(),
						Args: append([]string{
							"ca",
							"--controller-namespace=" + ns,
							"--cert-lifetime=" + o.CertLifetime.String(),
							// The pod IP, not 0.0.0.0: probes reach it
							// there, and in a process kubelet pods share
							// the host's network.
							"--admin-addr=0.0.0.0:" + strconv.Itoa(CAAdminPort),
							"--log-format=json",
						}, o.clusterDomainArgs()...),
						Env: []corev1.EnvVar{
							{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						},
						Ports: []corev1.ContainerPort{{Name: "admin-http", ContainerPort: CAAdminPort}},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("admin-http")}},
							PeriodSeconds:    2,
							FailureThreshold: 3,
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromString("admin-http")}},
							InitialDelaySeconds: 10,
						},
						// Signing is cheap (see bench/ca-pki.txt); memory
						// follows the number of meshed pods and Secrets.
						Resources:       requests("10m", "32Mi", "256Mi"),
						SecurityContext: restrictedContainer(),
					}},
				},
			},
		},
	})
	if replicas > 1 {
		// A drain may take one replica at a time: the Lease moves to a
		// standby that already holds the root and warm caches.
		objs = append(objs, &policyv1.PodDisruptionBudget{
			TypeMeta:   typeMeta("policy/v1", "PodDisruptionBudget"),
			ObjectMeta: meta(name, ns, "ca"),
			Spec: policyv1.PodDisruptionBudgetSpec{
				MaxUnavailable: ptr(intstr.FromInt32(1)),
				Selector:       &metav1.LabelSelector{MatchLabels: selector},
			},
		})
	}
	objs = append(objs, &corev1.Service{
		TypeMeta:   typeMeta("v1", "Service"),
		ObjectMeta: meta(name, ns, "ca"),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports:    []corev1.ServicePort{{Name: "admin-http", Port: CAAdminPort, TargetPort: intstr.FromString("admin-http")}},
		},
	})
	return objs
}

// caAdmissionPolicy narrows what RBAC cannot: the CA's ServiceAccount may
// create and patch only kubernetes.io/tls Secrets labelled for this
// control plane (workload Secrets also carry their owner kind and the
// workload Secret suffix), may change only Secrets that already were
// such workload Secrets, and may write only bundle ConfigMaps labelled for
// it and its anchor record. So a stolen CA token cannot mint a
// ServiceAccount token Secret or overwrite another application's Secret,
// whatever labels it adds in the same request.
func caAdmissionPolicy(ns, sa string) []any {
	name := "linkerd-ca-writes-" + ns
	user := "system:serviceaccount:" + ns + ":" + sa
	lbl := func(key string) string { return "object.metadata.labels['" + key + "']" }
	hasLbl := func(key string) string {
		return "has(object.metadata.labels) && '" + key + "' in object.metadata.labels"
	}
	return []any{
		&admissionv1.ValidatingAdmissionPolicy{
			TypeMeta:   typeMeta("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"),
			ObjectMeta: clusterMeta(name, ns, "ca"),
			Spec: admissionv1.ValidatingAdmissionPolicySpec{
				FailurePolicy: ptr(admissionv1.Fail),
				MatchConstraints: &admissionv1.MatchResources{
					ResourceRules: []admissionv1.NamedRuleWithOperations{{
						RuleWithOperations: admissionv1.RuleWithOperations{
							Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
							Rule: admissionv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"secrets", "configmaps"},
								Scope: ptr(admissionv1.NamespacedScope)},
						},
					}},
				},
				MatchConditions: []admissionv1.MatchCondition{{Name: "is-the-ca", Expression: "request.userInfo.username == '" + user + "'"}},
				Validations: []admissionv1.Validation{
					{
						Expression: "request.resource.resource != 'secrets' || object.type == 'kubernetes.io/tls'",
						Message:    "the linkerd CA may only write Secrets of type kubernetes.io/tls",
					},
					{
						Expression: hasLbl(contract.ControlPlaneNSLabel) + " && " + lbl(contract.ControlPlaneNSLabel) + " == '" + ns + "'",
						Message:    "the linkerd CA may only write objects labelled " + contract.ControlPlaneNSLabel + "=" + ns,
					},
					{
						Expression: "request.resource.resource != 'secrets' || (object.metadata.namespace == '" + ns + "' && object.metadata.name == '" + contract.RootSecret + "') || (" + hasLbl(contract.OwnerKindLabel) + " && object.metadata.name.endsWith('" + contract.SecretSuffix + "'))",
						Message:    "the linkerd CA may only write its root and workload Secrets (named *" + contract.SecretSuffix + ", labelled " + contract.OwnerKindLabel + ")",
					},
					{
						// What the object was decides too: labels added in the
						// same request must not turn another application's
						// TLS Secret (an Ingress certificate, a webhook's or an
						// issuer's key) into one the CA may overwrite.
						Expression: "request.operation != 'UPDATE' || request.resource.resource != 'secrets' || (oldObject.type == 'kubernetes.io/tls' && " +
							"has(oldObject.metadata.labels) && '" + contract.ControlPlaneNSLabel + "' in oldObject.metadata.labels && oldObject.metadata.labels['" + contract.ControlPlaneNSLabel + "'] == '" + ns + "' && " +
							"'" + contract.OwnerKindLabel + "' in oldObject.metadata.labels)",
						Message: "the linkerd CA may only change Secrets that were already its workload Secrets (kubernetes.io/tls, labelled " + contract.ControlPlaneNSLabel + "=" + ns + " and " + contract.OwnerKindLabel + ")",
					},
					{
						Expression: "request.resource.resource != 'configmaps' || (object.metadata.name == '" + contract.BundleConfigMap + "' && " + hasLbl(contract.BundleLabel) + " && " + lbl(contract.BundleLabel) + " == '" + ns + "') || " +
							"(object.metadata.namespace == '" + ns + "' && object.metadata.name == '" + contract.AnchorsConfigMap + "')",
						Message: "the linkerd CA may only write its trust bundles and, in " + ns + ", its anchor record",
					},
				},
			},
		},
		&admissionv1.ValidatingAdmissionPolicyBinding{
			TypeMeta:   typeMeta("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"),
			ObjectMeta: clusterMeta(name, ns, "ca"),
			Spec: admissionv1.ValidatingAdmissionPolicyBindingSpec{
				PolicyName:        name,
				ValidationActions: []admissionv1.ValidationAction{admissionv1.Deny},
			},
		},
	}
}

func ptr[T any](v T) *T { return &v }
