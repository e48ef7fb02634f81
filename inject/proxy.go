package inject

import (
	"strconv"

	"meshtls/contract"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}}
}

func proxyContainer(ownerKind, owner string, o Options, tls bool, pc podConfig) corev1.Container {
	uid := int64(contract.ProxyUID)
	env := []corev1.EnvVar{
		{Name: contract.EnvLog, Value: o.ProxyLogLevel},
		{Name: contract.EnvControllerNS, Value: o.ControlNamespace},
		{Name: contract.EnvDestinationAddr, Value: contract.ControllerComponent + "." + contract.ServiceDomain(o.ControlNamespace, o.ClusterDomain) + ":" + strconv.Itoa(contract.DestinationPort)},
		{Name: contract.EnvInboundListenAddr, Value: "0.0.0.0:" + strconv.Itoa(contract.InboundPort)},
		{Name: contract.EnvOutboundListenAddr, Value: "127.0.0.1:" + strconv.Itoa(contract.OutboundPort)},
		{Name: contract.EnvAdminListenAddr, Value: "0.0.0.0:" + strconv.Itoa(contract.AdminPort)},
		{Name: contract.EnvTapListenAddr, Value: "0.0.0.0:" + strconv.Itoa(contract.TapPort)},
		fieldEnv(contract.EnvPodNamespace, "metadata.namespace"),
		fieldEnv(contract.EnvPodName, "metadata.name"),
		fieldEnv(contract.EnvPodIP, "status.podIP"),
		{Name: contract.EnvOpaquePorts, Value: pc.opaquePorts},
	}
	// Only when configured: without it the proxy asks discovery about
	// every non-loopback address, which can never send plain text to a
	// meshed peer whose range a list left out.
	networks := o.ClusterNetworks
	if pc.networks != "" {
		networks = pc.networks
	}
	if networks != "" {
		env = append(env, corev1.EnvVar{Name: contract.EnvClusterNetworks, Value: networks})
	}
	if pc.cores > 0 {
		env = append(env, corev1.EnvVar{Name: contract.EnvCores, Value: strconv.Itoa(pc.cores)})
	}
	var mounts []corev1.VolumeMount
	if tls {
		env = append(env,
			corev1.EnvVar{Name: contract.EnvTLSTrustAnchors, Value: contract.TrustAnchorsDir + "/" + contract.BundleKey},
			corev1.EnvVar{Name: contract.EnvTLSCert, Value: contract.IdentityDir + "/" + corev1.TLSCertKey},
			corev1.EnvVar{Name: contract.EnvTLSPrivateKey, Value: contract.IdentityDir + "/" + corev1.TLSPrivateKeyKey},
			// The namespace is often unknown when a manifest is injected,
			// so the kubelet fills it in from the env var above.
			corev1.EnvVar{Name: contract.EnvTLSPodIdentity, Value: contract.IdentityIn(owner, ownerKind, "$("+contract.EnvPodNamespace+")", o.ControlNamespace, o.ClusterDomain)},
			corev1.EnvVar{Name: contract.EnvTLSControllerID, Value: contract.ControllerIdentityIn(contract.ControllerComponent, o.ControlNamespace, o.ClusterDomain)},
		)
		// Written only when required (unset is optional), so optional
		// pods' manifests stay as they were.
		if o.TLS == contract.TLSRequired {
			env = append(env, corev1.EnvVar{Name: contract.EnvInboundTLS, Value: o.TLS})
			if pc.probes != "" {
				env = append(env, corev1.EnvVar{Name: contract.EnvInboundProbes, Value: pc.probes})
			}
			if pc.tlsExempt != "" {
				env = append(env, corev1.EnvVar{Name: contract.EnvInboundTLSExemptPorts, Value: pc.tlsExempt})
			}
		}
		mounts = []corev1.VolumeMount{
			{Name: contract.TrustAnchorsVolume, MountPath: contract.TrustAnchorsDir, ReadOnly: true},
			{Name: contract.IdentityVolume, MountPath: contract.IdentityDir, ReadOnly: true},
		}
	}
	return corev1.Container{
		Name:            contract.ProxyContainerName,
		Image:           o.images().Ref("proxy"),
		ImagePullPolicy: o.pullPolicy,
		Env:             env,
		Ports: []corev1.ContainerPort{
			{Name: contract.InboundPortName, ContainerPort: contract.InboundPort},
			{Name: contract.AdminPortName, ContainerPort: contract.AdminPort},
			{Name: contract.TapPortName, ContainerPort: contract.TapPort},
		},
		VolumeMounts: mounts,
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(contract.AdminPort)}},
			InitialDelaySeconds: 2,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/live", Port: intstr.FromInt32(contract.AdminPort)}},
			InitialDelaySeconds: 10,
		},
		SecurityContext: proxySecurityContext(uid),
		Resources:       pc.resources,
		// The proxy is the pod's first container: the kubelet starts the
		// next one only once this hook returns, so the application never
		// starts before the proxy listens.
		Lifecycle: &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: contract.ProxyAwaitCommand}}},
	}
}

// proxySecurityContext is Linkerd's hardening of the proxy: no privilege
// escalation, a read-only root, no capabilities, the runtime's seccomp
// profile. Group 0 reads the identity files, which are 0440 (root's user
// and group, or the pod's fsGroup, which every container also holds), so
// no other user of the node or the pod can read the key.
func proxySecurityContext(uid int64) *corev1.SecurityContext {
	f, t := false, true
	gid := int64(0)
	return &corev1.SecurityContext{
		RunAsUser:                &uid,
		RunAsGroup:               &gid,
		RunAsNonRoot:             &t,
		AllowPrivilegeEscalation: &f,
		ReadOnlyRootFilesystem:   &t,
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func initContainer(o Options, pc podConfig) corev1.Container {
	f := false
	root := int64(0)
	// The proxy's own tap and admin ports must stay reachable.
	skipIn := strconv.Itoa(contract.TapPort) + "," + strconv.Itoa(contract.AdminPort)
	if pc.skipIn != "" {
		skipIn += "," + pc.skipIn
	}
	args := []string{
		"--incoming-proxy-port", strconv.Itoa(contract.InboundPort),
		"--outgoing-proxy-port", strconv.Itoa(contract.OutboundPort),
		"--proxy-uid", strconv.Itoa(contract.ProxyUID),
		"--inbound-ports-to-ignore", skipIn,
		// The proxy's own connections to its pod IP (a Service routing
		// back to this pod) go to its inbound side, over mTLS.
		"--redirect-local-traffic",
	}
	if pc.skipOut != "" {
		args = append(args, "--outbound-ports-to-ignore", pc.skipOut)
	}
	return corev1.Container{
		Name:            contract.InitContainerName,
		Image:           o.images().Ref("proxy-init"),
		ImagePullPolicy: o.pullPolicy,
		Args:            args,
		// Root with NET_ADMIN (nf_tables) and NET_RAW (the iptables
		// modes) only, and nothing else: no escalation, a read-only
		// root, seccomp.
		SecurityContext: &corev1.SecurityContext{
			Capabilities:             &corev1.Capabilities{Add: []corev1.Capability{"NET_ADMIN", "NET_RAW"}, Drop: []corev1.Capability{"ALL"}},
			Privileged:               &f,
			AllowPrivilegeEscalation: &f,
			ReadOnlyRootFilesystem:   ptrTo(true),
			RunAsNonRoot:             &f,
			RunAsUser:                &root,
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
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
		toMap(corev1.Volume{Name: contract.TrustAnchorsVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: contract.BundleConfigMap},
			Optional:             &t,
		}}}),
		toMap(corev1.Volume{Name: contract.IdentityVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
			SecretName: contract.SecretName(owner, ownerKind),
			Optional:   &t,
			// The key is for the proxy (group 0, see proxySecurityContext)
			// alone, not for every user in the pod.
			DefaultMode: ptrTo(int32(0o440)),
		}}}),
	}
}

func ptrTo[T any](v T) *T { return &v }

// Images are the images inject references.
var Images = []string{"proxy", "proxy-init"}
