package install

import (
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"meshtls/contract"
)

// DestinationAdminPort serves the destination service's /ready, /live and
// /metrics.
const DestinationAdminPort = 9996

// The destination service is rendered after the CA, whose Secrets it
// serves with, and before Prometheus.
func init() {
	for i, c := range Components {
		if c.Name == "prometheus" {
			Components = append(Components[:i], append([]Component{{Name: DestinationComponent, Objects: destinationObjects}}, Components[i:]...)...)
			return
		}
	}
	Components = append(Components, Component{Name: DestinationComponent, Objects: destinationObjects})
}

// DestinationComponent labels the destination service's objects; check
// and the Prometheus config find it by this label.
const DestinationComponent = "destination"

// destinationObjects is the destination service: the linkerd-controller
// Deployment running `controller destination`, its Service on the port
// proxies are given, and read-only RBAC on what it resolves from.
func destinationObjects(o Options) []any {
	ns := o.ControlNamespace
	name := contract.ControllerComponent
	comp := DestinationComponent
	var objs []any
	objs = append(objs, &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(name, ns, comp)})
	// It reads Services, EndpointSlices and Pods, and nothing else: no
	// Secrets (whether a pod holds its certificate is learnt from the pod
	// itself), no writes.
	objs = append(objs,
		&rbacv1.ClusterRole{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, comp),
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"pods", "services"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
			},
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, comp),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name + "-" + ns},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
	)

	args := []string{
		"destination",
		"--controller-namespace=" + ns,
		// The pod IP, not 0.0.0.0: probes reach it there, and in a
		// process kubelet pods share the host's network.
		"--addr=0.0.0.0:" + strconv.Itoa(contract.DestinationPort),
		"--admin-addr=0.0.0.0:" + strconv.Itoa(DestinationAdminPort),
		"--log-format=json",
	}
	args = append(args, o.clusterDomainArgs()...)
	podLabels := map[string]string{contract.ComponentLabel: comp, contract.ControlPlaneNSLabel: ns}
	annotations := map[string]string{contract.CreatedByAnnotation: "linkerd/cli " + o.Version}
	var volumes []corev1.Volume
	var mounts []corev1.VolumeMount
	if o.TLS != "" {
		// The controller is one of the CA's TLS workloads: it gets the
		// identity proxies expect of it (contract.ControllerIdentity) and
		// serves the API over TLS with it. Both volumes are optional, as
		// the CA writes them after this pod exists; the server picks the
		// files up when they appear.
		podLabels[contract.KindLabel(contract.KindDeployment)] = name
		annotations[contract.TLSAnnotation] = contract.TLSOptional
		args = append(args,
			"--tls-cert="+contract.IdentityDir+"/"+corev1.TLSCertKey,
			"--tls-key="+contract.IdentityDir+"/"+corev1.TLSPrivateKeyKey,
			"--tls-trust-anchors="+contract.TrustAnchorsDir+"/"+contract.BundleKey,
		)
		volumes, mounts = identityVolumes(name)
	}

	replicas := int32(o.ControllerReplicas)
	selector := map[string]string{contract.ComponentLabel: comp}
	objs = append(objs, &appsv1.Deployment{
		TypeMeta:   typeMeta("apps/v1", "Deployment"),
		ObjectMeta: meta(name, ns, comp),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: selector},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: annotations},
				Spec: corev1.PodSpec{
					ServiceAccountName: name,
					ImagePullSecrets:   o.pullSecrets(),
					SecurityContext:    restrictedPod(CAUser),
					Containers: []corev1.Container{{
						Name:            DestinationComponent,
						Image:           o.images().Ref("controller"),
						ImagePullPolicy: o.pullPolicy(),
						Args:            args,
						Ports: []corev1.ContainerPort{
							{Name: "grpc", ContainerPort: contract.DestinationPort},
							{Name: "admin-http", ContainerPort: DestinationAdminPort},
						},
						ReadinessProbe: &corev1.Probe{
							ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("admin-http")}},
							PeriodSeconds:    2,
							FailureThreshold: 3,
						},
						LivenessProbe: &corev1.Probe{
							ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromString("admin-http")}},
							InitialDelaySeconds: 10,
						},
						VolumeMounts:    mounts,
						SecurityContext: restrictedContainer(),
						Resources:       requests("10m", "32Mi", "256Mi"),
					}},
					Volumes: volumes,
				},
			},
		},
	})
	objs = append(objs, &corev1.Service{
		TypeMeta:   typeMeta("v1", "Service"),
		ObjectMeta: meta(name, ns, comp),
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: selector,
			Ports: []corev1.ServicePort{
				{Name: "grpc", Port: contract.DestinationPort, TargetPort: intstr.FromString("grpc")},
				{Name: "admin-http", Port: DestinationAdminPort, TargetPort: intstr.FromString("admin-http")},
			},
		},
	})
	return objs
}

// identityVolumes mounts the mesh identity the CA issues to deployment
// owner (its Secret) and the trust bundle, where the proxy finds them.
// Both are optional: the CA writes them after the pod exists, and the
// controllers pick the files up when they appear.
func identityVolumes(owner string) ([]corev1.Volume, []corev1.VolumeMount) {
	return []corev1.Volume{
			{Name: contract.IdentityVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
				SecretName: contract.SecretName(owner, contract.KindDeployment), Optional: ptr(true),
			}}},
			{Name: contract.TrustAnchorsVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
				LocalObjectReference: corev1.LocalObjectReference{Name: contract.BundleConfigMap}, Optional: ptr(true),
			}}},
		}, []corev1.VolumeMount{
			{Name: contract.IdentityVolume, MountPath: contract.IdentityDir, ReadOnly: true},
			{Name: contract.TrustAnchorsVolume, MountPath: contract.TrustAnchorsDir, ReadOnly: true},
		}
}
