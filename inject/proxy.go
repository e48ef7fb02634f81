package inject

import (
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"meshtls/ca/pki"
)

// Proxy environment: the names the proxy reads (documented in README.md).
const (
	EnvLog                = "LINKERD2_PROXY_LOG"
	EnvControllerNS       = "LINKERD2_PROXY_CONTROLLER_NAMESPACE"
	EnvDestinationAddr    = "LINKERD2_PROXY_DESTINATION_ADDR"
	EnvInboundListenAddr  = "LINKERD2_PROXY_INBOUND_LISTEN_ADDR"
	EnvOutboundListenAddr = "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDR"
	EnvAdminListenAddr    = "LINKERD2_PROXY_ADMIN_LISTEN_ADDR"
	EnvTapListenAddr      = "LINKERD2_PROXY_TAP_LISTEN_ADDR"
	EnvPodNamespace       = "LINKERD2_PROXY_POD_NAMESPACE"
	EnvPodName            = "LINKERD2_PROXY_POD_NAME"
	EnvPodIP              = "LINKERD2_PROXY_POD_IP"
	EnvTLSTrustAnchors    = "LINKERD2_PROXY_TLS_TRUST_ANCHORS"
	EnvTLSCert            = "LINKERD2_PROXY_TLS_CERT"
	EnvTLSPrivateKey      = "LINKERD2_PROXY_TLS_PRIVATE_KEY"
	EnvTLSPodIdentity     = "LINKERD2_PROXY_TLS_POD_IDENTITY"
	EnvTLSControllerID    = "LINKERD2_PROXY_TLS_CONTROLLER_IDENTITY"
)

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func proxyContainer(ownerKind, owner string, o Options, tls bool) corev1.Container {
	uid := int64(ProxyUID)
	env := []corev1.EnvVar{
		{Name: EnvLog, Value: o.ProxyLogLevel},
		{Name: EnvControllerNS, Value: o.ControlNamespace},
		{Name: EnvDestinationAddr, Value: ControllerComponent + "." + o.ControlNamespace + ".svc.cluster.local:" + strconv.Itoa(DestinationPort)},
		{Name: EnvInboundListenAddr, Value: "0.0.0.0:" + strconv.Itoa(InboundPort)},
		{Name: EnvOutboundListenAddr, Value: "127.0.0.1:" + strconv.Itoa(OutboundPort)},
		{Name: EnvAdminListenAddr, Value: "0.0.0.0:" + strconv.Itoa(AdminPort)},
		{Name: EnvTapListenAddr, Value: "0.0.0.0:" + strconv.Itoa(TapPort)},
		fieldEnv(EnvPodNamespace, "metadata.namespace"),
		fieldEnv(EnvPodName, "metadata.name"),
		fieldEnv(EnvPodIP, "status.podIP"),
	}
	var mounts []corev1.VolumeMount
	if tls {
		env = append(env,
			corev1.EnvVar{Name: EnvTLSTrustAnchors, Value: TrustAnchorsDir + "/" + pki.BundleKey},
			corev1.EnvVar{Name: EnvTLSCert, Value: IdentityDir + "/" + corev1.TLSCertKey},
			corev1.EnvVar{Name: EnvTLSPrivateKey, Value: IdentityDir + "/" + corev1.TLSPrivateKeyKey},
			// The namespace is often unknown when a manifest is injected,
			// so the kubelet fills it in from the env var above.
			corev1.EnvVar{Name: EnvTLSPodIdentity, Value: pki.Identity(owner, ownerKind, "$("+EnvPodNamespace+")", o.ControlNamespace)},
			corev1.EnvVar{Name: EnvTLSControllerID, Value: pki.ControllerIdentity(ControllerComponent, o.ControlNamespace)},
		)
		mounts = []corev1.VolumeMount{
			{Name: TrustAnchorsVolume, MountPath: TrustAnchorsDir, ReadOnly: true},
			{Name: IdentityVolume, MountPath: IdentityDir, ReadOnly: true},
		}
	}
	return corev1.Container{
		Name:            ProxyContainerName,
		Image:           o.Registry + "/proxy:" + o.Version,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Env:             env,
		Ports: []corev1.ContainerPort{
			{Name: InboundPortName, ContainerPort: InboundPort},
			{Name: AdminPortName, ContainerPort: AdminPort},
			{Name: TapPortName, ContainerPort: TapPort},
		},
		VolumeMounts: mounts,
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(AdminPort)}},
			InitialDelaySeconds: 2,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromInt32(AdminPort)}},
			InitialDelaySeconds: 10,
		},
		SecurityContext: &corev1.SecurityContext{RunAsUser: &uid},
	}
}

func initContainer(o Options) corev1.Container {
	f := false
	root := int64(0)
	return corev1.Container{
		Name:            InitContainerName,
		Image:           o.Registry + "/proxy-init:" + o.Version,
		ImagePullPolicy: corev1.PullIfNotPresent,
		Args: []string{
			"--incoming-proxy-port", strconv.Itoa(InboundPort),
			"--outgoing-proxy-port", strconv.Itoa(OutboundPort),
			"--proxy-uid", strconv.Itoa(ProxyUID),
			// The proxy's own tap and admin ports must stay reachable.
			"--inbound-ports-to-ignore", strconv.Itoa(TapPort) + "," + strconv.Itoa(AdminPort),
		},
		SecurityContext: &corev1.SecurityContext{
			Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN"}},
			Privileged:   &f,
			RunAsNonRoot: &f,
			RunAsUser:    &root,
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

// tlsVolumes are optional: the pod starts before the CA has written its
// Secret (or with no CA at all), and the proxy then runs without TLS
// until the files appear, which is what "fail open" means here.
func tlsVolumes(ownerKind, owner string) []any {
	t := true
	return []any{
		toMap(corev1.Volume{Name: TrustAnchorsVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: pki.BundleConfigMap},
			Optional:             &t,
		}}}),
		toMap(corev1.Volume{Name: IdentityVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: pki.SecretName(owner, ownerKind),
			Optional:   &t,
		}}}),
	}
}
