package install

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"meshtls/contract"
)

// TapComponent labels the tap API's objects.
const TapComponent = "tap"

// The tap API needs the controller identity proxies accept on their tap
// port, which only the CA issues: it is installed with --tls=optional.
func init() {
	Components = append(Components, Component{Name: TapComponent, Enabled: func(o Options) bool { return o.TLS != "" }, Objects: tapObjects})
}

// tapServingLifetime is the serving certificate's lifetime; linkerd
// install renews it when re-run (Linkerd's install did the same).
const tapServingLifetime = 365 * 24 * time.Hour

// tapServingCert is a serving leaf (not a CA) for the tap Service's DNS
// names, signed by a CA made for it alone, whose key is dropped here: the
// API server checks the leaf against the APIService's caBundle, which is
// that CA's certificate. A leaked serving key can then sign nothing the
// caBundle would accept, and no CA key ever leaves this function.
func tapServingCert(ns, clusterDomain string, now time.Time) (certPEM, keyPEM, caPEM []byte, err error) {
	serial := func() (*big.Int, error) { return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)) }
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	caSerial, err := serial()
	if err != nil {
		return nil, nil, nil, err
	}
	leafSerial, err := serial()
	if err != nil {
		return nil, nil, nil, err
	}
	host := contract.TapComponent + "." + ns + ".svc"
	caTmpl := &x509.Certificate{
		SerialNumber:          caSerial,
		Subject:               pkix.Name{CommonName: host + " serving CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(tapServingLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
		PermittedDNSDomains:   []string{host, host + "." + clusterDomain},
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          leafSerial,
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host, host + "." + clusterDomain},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(tapServingLifetime),
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

const tapServingDir = "/var/run/linkerd/tap"

// tapObjects is the tap API: its Deployment, Service, APIService and the
// least RBAC it needs, plus the ClusterRole that lets users tap.
func tapObjects(o Options) []any {
	ns := o.ControlNamespace
	name := contract.TapComponent
	comp := TapComponent
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	certPEM, keyPEM, caPEM, err := tapServingCert(ns, o.ClusterDomain, now())
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(fmt.Sprintf("generating the tap API's serving certificate: %v", err))
	}
	var objs []any
	objs = append(objs, &corev1.ServiceAccount{TypeMeta: typeMeta("v1", "ServiceAccount"), ObjectMeta: meta(name, ns, comp)})
	objs = append(objs,
		// It resolves targets to pods and asks the API server whether the
		// user may tap them: reads, and SubjectAccessReviews.
		&rbacv1.ClusterRole{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, comp),
			Rules: []rbacv1.PolicyRule{
				// watch: the pod cache that names tap events' peer pods.
				{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "watch"}},
				{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get"}},
				{APIGroups: []string{"apps"}, Resources: []string{"deployments", "statefulsets", "daemonsets"}, Verbs: []string{"get"}},
				{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"subjectaccessreviews"}, Verbs: []string{"create"}},
			},
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
			ObjectMeta: clusterMeta(name+"-"+ns, ns, comp),
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: name + "-" + ns},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
		// The front proxy's client CA and headers, which every aggregated
		// API server reads through this built-in Role.
		&rbacv1.RoleBinding{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "RoleBinding"),
			ObjectMeta: metav1.ObjectMeta{Name: name + "-" + ns + "-auth-reader", Namespace: "kube-system", Labels: map[string]string{contract.ComponentLabel: comp, contract.ControlPlaneNSLabel: ns}},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "extension-apiserver-authentication-reader"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: name, Namespace: ns}},
		},
		// Users: bind this in a namespace (RoleBinding) or everywhere
		// (ClusterRoleBinding) to let someone tap there.
		&rbacv1.ClusterRole{
			TypeMeta:   typeMeta("rbac.authorization.k8s.io/v1", "ClusterRole"),
			ObjectMeta: clusterMeta(contract.TapViewClusterRole(ns), ns, comp),
			Rules: []rbacv1.PolicyRule{
				// RESOURCE/tap is what both the API server and the
				// tap API's SubjectAccessReview check; a namespace's
				// tap path (…/namespaces/NS/tap) reaches the API
				// server's check as the resource "tap".
				{APIGroups: []string{contract.TapAPIGroup}, Resources: []string{
					"namespaces/tap", "pods/tap", "deployments/tap", "statefulsets/tap", "daemonsets/tap", "tap",
				}, Verbs: []string{"watch"}},
			},
		},
		&corev1.Secret{
			TypeMeta:   typeMeta("v1", "Secret"),
			ObjectMeta: meta(contract.TapServingSecret, ns, comp),
			Type:       corev1.SecretTypeTLS,
			Data:       map[string][]byte{corev1.TLSCertKey: certPEM, corev1.TLSPrivateKeyKey: keyPEM},
		},
	)

	// The pods carry the controller's owner label, so the CA issues them
	// the controller identity (contract.ControllerIdentity), the only one
	// proxies accept on their tap port; both volumes are optional as the
	// CA writes them after this pod exists.
	podLabels := map[string]string{contract.ComponentLabel: comp, contract.ControlPlaneNSLabel: ns,
		contract.KindLabel(contract.KindDeployment): contract.ControllerComponent}
	annotations := map[string]string{contract.CreatedByAnnotation: "linkerd/cli " + o.Version, contract.TLSAnnotation: contract.TLSOptional}
	selector := map[string]string{contract.ComponentLabel: comp}
	replicas := int32(o.ControllerReplicas)
	idVolumes, idMounts := identityVolumes(contract.ControllerComponent)
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
						Name:            comp,
						Image:           o.images().Ref("controller"),
						ImagePullPolicy: o.pullPolicy(),
						Args: append([]string{
							"tap",
							"--controller-namespace=" + ns,
							"--addr=0.0.0.0:" + strconv.Itoa(contract.TapAPIPort),
							"--admin-addr=0.0.0.0:" + strconv.Itoa(contract.TapAdminPort),
							"--tls-cert=" + tapServingDir + "/" + corev1.TLSCertKey,
							"--tls-key=" + tapServingDir + "/" + corev1.TLSPrivateKeyKey,
							"--identity-cert=" + contract.IdentityDir + "/" + corev1.TLSCertKey,
							"--identity-key=" + contract.IdentityDir + "/" + corev1.TLSPrivateKeyKey,
							"--trust-anchors=" + contract.TrustAnchorsDir + "/" + contract.BundleKey,
							"--log-format=json",
						}, o.clusterDomainArgs()...),
						Ports: []corev1.ContainerPort{
							{Name: "apiserver", ContainerPort: contract.TapAPIPort},
							{Name: "admin-http", ContainerPort: contract.TapAdminPort},
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
						VolumeMounts: append([]corev1.VolumeMount{
							{Name: "tap-serving", MountPath: tapServingDir, ReadOnly: true},
						}, idMounts...),
						SecurityContext: restrictedContainer(),
						Resources:       requests("10m", "32Mi", "256Mi"),
					}},
					Volumes: append([]corev1.Volume{
						{Name: "tap-serving", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: contract.TapServingSecret}}},
					}, idVolumes...),
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
			Ports:    []corev1.ServicePort{{Name: "apiserver", Port: 443, TargetPort: intstr.FromString("apiserver")}},
		},
	})
	// apiregistration.k8s.io's Go types live in kube-aggregator, a module
	// this CLI does not need for one object.
	objs = append(objs, map[string]any{
		"apiVersion": "apiregistration.k8s.io/v1",
		"kind":       "APIService",
		"metadata": map[string]any{
			"name":   contract.TapAPIService,
			"labels": map[string]any{contract.ComponentLabel: comp, contract.ControlPlaneNSLabel: ns},
		},
		"spec": map[string]any{
			"group":                contract.TapAPIGroup,
			"version":              "v1alpha1",
			"groupPriorityMinimum": 1000,
			"versionPriority":      100,
			"service":              map[string]any{"name": name, "namespace": ns, "port": 443},
			"caBundle":             base64.StdEncoding.EncodeToString(caPEM),
		},
	})
	return objs
}
