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

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"

	"meshtls/ca/pki"
	"meshtls/contract"
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
	// Now validates a supplied root's dates; nil means time.Now.
	Now func() time.Time
}

// Defaults for the flags.
const (
	DefaultRegistry        = "ghcr.io/meshtls"
	DefaultPrometheusImage = "prom/prometheus:v2.42.0"
)

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
	if o.Version == "" {
		return fmt.Errorf("empty version: set --version")
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
	if o.CertLifetime < 3*time.Second {
		return fmt.Errorf("certificate lifetime %s is too short: use at least 3s", o.CertLifetime)
	}
	if (len(o.RootCertPEM) == 0) != (len(o.RootKeyPEM) == 0) {
		return fmt.Errorf("--root-cert and --root-key go together: give both or neither")
	}
	if len(o.RootCertPEM) > 0 {
		if o.TLS == "" {
			return fmt.Errorf("--root-cert and --root-key need --tls=optional: without TLS there is no CA to use them")
		}
		now := time.Now
		if o.Now != nil {
			now = o.Now
		}
		if _, err := pki.LoadRoot(o.RootCertPEM, o.RootKeyPEM, now()); err != nil {
			return fmt.Errorf("supplied root: %w", err)
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

// Objects is the control plane, in the order kubectl should apply it.
func Objects(o Options) []any {
	ns := o.ControlNamespace
	objs := []any{
		&corev1.Namespace{TypeMeta: typeMeta("v1", "Namespace"), ObjectMeta: metav1.ObjectMeta{Name: ns}},
	}
	if o.TLS != "" {
		objs = append(objs, caObjects(o)...)
	}
	objs = append(objs, destinationObjects(o)...)
	objs = append(objs, prometheusObjects(o)...)
	return objs
}

func meta(name, ns, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{contract.ComponentLabel: component, contract.ControlPlaneNSLabel: ns}}
}

// clusterMeta labels a cluster-scoped object with the control plane it
// belongs to, so two control planes' RBAC never collide.
func clusterMeta(name, controlNS, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: map[string]string{contract.ComponentLabel: component, contract.ControlPlaneNSLabel: controlNS}}
}

func caObjects(o Options) []any {
	ns := o.ControlNamespace
	const name = "linkerd-ca"
	var objs []any
	objs = append(objs, &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(name, ns, "ca")})

	// Cluster-wide, the CA watches pods, reads workload owners to point
	// Secrets at them, and writes Secrets and ConfigMaps: nothing more.
	// Listing Secrets everywhere is what lets it see its own labelled ones.
	objs = append(objs,
		&rbacv1.ClusterRole{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, "ca"),
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"replicationcontrollers"}, Verbs: []string{"get"}},
				{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets", "daemonsets", "replicasets"}, Verbs: []string{"get"}},
				{APIGroups: []string{""}, Resources: []string{"secrets", "configmaps"}, Verbs: []string{"get", "list", "watch", "create", "patch"}},
			},
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, "ca"),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name + "-" + ns},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
		// In its own namespace it also keeps the Lease that picks the
		// issuing replica; the root is read through the rule above.
		&rbacv1.Role{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "Role"),
			ObjectMeta: meta(name, ns, "ca"),
			Rules: []rbacv1.PolicyRule{
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
	if len(o.RootCertPEM) > 0 {
		objs = append(objs, &corev1.Secret{
			TypeMeta:   typeMeta("v1", "Secret"),
			ObjectMeta: meta(contract.RootSecret, ns, "ca"),
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: o.RootCertPEM, corev1.TLSPrivateKeyKey: o.RootKeyPEM},
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
					Containers: []corev1.Container{{
						Name:            "ca",
						Image:           o.Registry + "/controller:" + o.Version,
						ImagePullPolicy: corev1.PullIfNotPresent,
						Args: []string{
							"ca",
							"--controller-namespace=" + ns,
							"--cert-lifetime=" + o.CertLifetime.String(),
							// The pod IP, not 0.0.0.0: probes reach it
							// there, and in a process kubelet pods share
							// the host's network.
							"--admin-addr=$(POD_IP):" + strconv.Itoa(CAAdminPort),
							"--log-format=json",
						},
						Env: []corev1.EnvVar{
							{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
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
						SecurityContext: &corev1.SecurityContext{
							RunAsNonRoot:             ptr(true),
							RunAsUser:                ptr(int64(2103)),
							AllowPrivilegeEscalation: ptr(false),
							ReadOnlyRootFilesystem:   ptr(true),
						},
					}},
				},
			},
		},
	})
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

func ptr[T any](v T) *T { return &v }
