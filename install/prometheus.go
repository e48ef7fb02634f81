package install

import (
	"fmt"
	"strconv"
	"strings"

	"meshtls/contract"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PrometheusConfigKey is the config file's key in its ConfigMap.
const PrometheusConfigKey = "prometheus.yml"

// PrometheusConfig scrapes every proxy of this control plane on :4191 and
// gives each series the target labels Linkerd's install did: namespace,
// pod, and one label per linkerd.io/proxy-<kind> pod label (deployment,
// statefulset, …). `linkerd stat` and Linkerd's dashboards query by them.
func PrometheusConfig(controlNS string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global:
  scrape_interval: 10s
  scrape_timeout: 10s
  evaluation_interval: 10s

scrape_configs:
- job_name: prometheus
  static_configs:
  - targets: ['localhost:%[1]d']

# The control plane's own admin endpoints (the CA's /metrics).
- job_name: linkerd-controller
  kubernetes_sd_configs:
  - role: pod
    namespaces:
      names: ['%[2]s']
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_label_linkerd_io_control_plane_component, __meta_kubernetes_pod_container_port_name]
    action: keep
    regex: (.+);admin-http
  - source_labels: [__meta_kubernetes_pod_label_linkerd_io_control_plane_component]
    action: replace
    target_label: component
  - source_labels: [__meta_kubernetes_pod_name]
    action: replace
    target_label: pod

# Every meshed pod's proxy. Kubernetes service discovery yields one target
# per container port; keep the proxy's admin port, named or by number.
- job_name: linkerd-proxy
  kubernetes_sd_configs:
  - role: pod
  relabel_configs:
  - source_labels: [__meta_kubernetes_pod_label_linkerd_io_control_plane_ns]
    action: keep
    regex: %[2]s
  - source_labels: [__meta_kubernetes_pod_container_port_name, __meta_kubernetes_pod_container_port_number]
    action: keep
    regex: %[3]s;.*|.*;%[4]d
  - source_labels: [__meta_kubernetes_namespace]
    action: replace
    target_label: namespace
  - source_labels: [__meta_kubernetes_pod_name]
    action: replace
    target_label: pod
  # A Kubernetes Job would map to "job" and clobber Prometheus's own job
  # label, so it becomes k8s_job, as in Linkerd.
  - source_labels: [__meta_kubernetes_pod_label_linkerd_io_proxy_job]
    action: replace
    target_label: k8s_job
  - action: labeldrop
    regex: __meta_kubernetes_pod_label_linkerd_io_proxy_job
  # linkerd.io/proxy-deployment=web becomes deployment="web", and so on.
  - action: labelmap
    regex: __meta_kubernetes_pod_label_linkerd_io_proxy_(.+)
    replacement: $1
`, PrometheusPort, controlNS, contract.AdminPortName, contract.AdminPort)
	return b.String()
}

func prometheusObjects(o Options) []any {
	ns := o.ControlNamespace
	const name = "linkerd-prometheus"
	selector := map[string]string{contract.ComponentLabel: "prometheus"}
	replicas := int32(1)
	return []any{
		&corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(name, ns, "prometheus")},
		// Service discovery needs to see pods in every namespace.
		&rbacv1.ClusterRole{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, "prometheus"),
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}}},
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, "prometheus"),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name + "-" + ns},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
		&corev1.ConfigMap{
			TypeMeta:   typeMeta("v1", "ConfigMap"),
			ObjectMeta: meta(name+"-config", ns, "prometheus"),
			Data:       map[string]string{PrometheusConfigKey: PrometheusConfig(ns)},
		},
		&appsv1.Deployment{
			TypeMeta:   typeMeta("apps/v1", "Deployment"),
			ObjectMeta: meta(name, ns, "prometheus"),
			Spec: appsv1.DeploymentSpec{
				Replicas: &replicas,
				Selector: &metav1.LabelSelector{MatchLabels: selector},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{
						Labels:      map[string]string{contract.ComponentLabel: "prometheus", contract.ControlPlaneNSLabel: ns},
						Annotations: map[string]string{"linkerd.io/created-by": "linkerd/cli " + o.Version},
					},
					Spec: corev1.PodSpec{
						ServiceAccountName: name,
						ImagePullSecrets:   o.pullSecrets(),
						// nobody, as the Prometheus image runs.
						SecurityContext: restrictedPod(65534),
						Volumes: []corev1.Volume{
							{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
								LocalObjectReference: corev1.LocalObjectReference{Name: name + "-config"}}}},
							{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
						},
						Containers: []corev1.Container{{
							Name:            "prometheus",
							Image:           o.PrometheusImage,
							ImagePullPolicy: o.pullPolicy(),
							Args: []string{
								"--config.file=/etc/prometheus/" + PrometheusConfigKey,
								"--storage.tsdb.path=/data",
								"--storage.tsdb.retention.time=6h",
								"--web.listen-address=0.0.0.0:" + strconv.Itoa(PrometheusPort),
							},
							Ports: []corev1.ContainerPort{{Name: "admin-http", ContainerPort: PrometheusPort}},
							VolumeMounts: []corev1.VolumeMount{
								{Name: "config", MountPath: "/etc/prometheus", ReadOnly: true},
								{Name: "data", MountPath: "/data"},
							},
							ReadinessProbe: &corev1.Probe{
								ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/-/ready", Port: intstr.FromString("admin-http")}},
								PeriodSeconds: 2,
							},
							LivenessProbe: &corev1.Probe{
								ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/-/healthy", Port: intstr.FromString("admin-http")}},
								InitialDelaySeconds: 30,
							},
							Resources:       requests("50m", "128Mi", "1Gi"),
							SecurityContext: restrictedContainer(),
						}},
					},
				},
			},
		},
		&corev1.Service{
			TypeMeta:   typeMeta("v1", "Service"),
			ObjectMeta: meta(name, ns, "prometheus"),
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeClusterIP,
				Selector: selector,
				Ports:    []corev1.ServicePort{{Name: "admin-http", Port: PrometheusPort, TargetPort: intstr.FromString("admin-http")}},
			},
		},
	}
}
