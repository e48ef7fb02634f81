// Package clusterdns installs the cluster DNS of localkube as a real
// cluster has it: CoreDNS as the Deployment kube-system/coredns behind the
// Service kube-system/kube-dns at the service CIDR's .10, with its own
// ServiceAccount and RBAC. The kubelet maps the image to bin/coredns
// (localkube/cmd/coredns), so the pods are ordinary pods: `kubectl get pods
// -n kube-system` shows them, probes make them Ready, a crash restarts them.
package clusterdns

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// Names, as kubeadm installs CoreDNS, so that tools and people looking for
// the cluster DNS find it where it always is.
const (
	Namespace   = "kube-system"
	Deployment  = "coredns"
	Service     = "kube-dns"
	ConfigMap   = "coredns"
	Account     = "coredns"
	ClusterRole = "system:coredns"
	AppLabel    = "kube-dns" // k8s-app=kube-dns
)

// Version is the CoreDNS release localkube/cmd/coredns pins; the image tag
// says it (a unit test keeps the two equal).
const Version = "v1.14.7"

// Image is the upstream image; its last path element maps to bin/coredns.
const Image = "registry.k8s.io/coredns/coredns:" + Version

// fieldManager owns what localkube applies; a user's own changes to other
// fields survive an up.
const fieldManager = "localkube"

// Corefile is the cluster DNS configuration. It answers the cluster zone
// and the reverse zones from the API (Services, headless Services' pods,
// pod A records) and nothing else: there is no forward plugin, so a name
// outside cluster.local gets NXDOMAIN from the template plugin and no query
// ever leaves the machine. CoreDNS reaches the API server with the pod's
// kubeconfig (localkube's pods have no in-cluster API address), whose path
// the kubelet sets in KUBECONFIG. Denials in the cluster zone are not
// cached, so a Service resolves as soon as CoreDNS's watch has it (a lookup
// just before would otherwise hide it for the cache's 30 s, which tests and
// `kubectl apply` followed by a request meet all the time); they cost an
// in-memory lookup.
const Corefile = `.:53 {
    errors
    health
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig {$KUBECONFIG} localkube
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 30
    }
    prometheus :9153
    template ANY ANY {
        rcode NXDOMAIN
    }
    cache 30 {
        disable denial cluster.local
    }
    loadbalance
    reload
}
`

// Objects are what Ensure applies, in order.
func Objects(serviceIP net.IP) []runtime.Object {
	labels := map[string]string{"k8s-app": AppLabel}
	return []runtime.Object{
		&v1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: metav1.ObjectMeta{Name: Account, Namespace: Namespace},
		},
		&rbacv1.ClusterRole{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRole"},
			ObjectMeta: metav1.ObjectMeta{Name: ClusterRole},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"endpoints", "services", "pods", "namespaces"}, Verbs: []string{"list", "watch"}},
				{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"list", "watch"}},
			},
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: ClusterRole},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: ClusterRole},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: Account, Namespace: Namespace}},
		},
		&v1.ConfigMap{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
			ObjectMeta: metav1.ObjectMeta{Name: ConfigMap, Namespace: Namespace},
			Data:       map[string]string{"Corefile": Corefile},
		},
		&appsv1.Deployment{
			TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
			ObjectMeta: metav1.ObjectMeta{Name: Deployment, Namespace: Namespace, Labels: labels},
			Spec: appsv1.DeploymentSpec{
				// One replica: there is one node, and a crash restarts it
				// within a second.
				Replicas: ptr.To[int32](1),
				Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: v1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels},
					Spec: v1.PodSpec{
						ServiceAccountName: Account,
						PriorityClassName:  "system-cluster-critical",
						// CoreDNS must not ask itself: it gets the node's resolver.
						DNSPolicy: v1.DNSDefault,
						Containers: []v1.Container{{
							Name:  "coredns",
							Image: Image,
							Args:  []string{"-conf", "/etc/coredns/Corefile"},
							Ports: []v1.ContainerPort{
								{Name: "dns", ContainerPort: 53, Protocol: v1.ProtocolUDP},
								{Name: "dns-tcp", ContainerPort: 53, Protocol: v1.ProtocolTCP},
								{Name: "metrics", ContainerPort: 9153, Protocol: v1.ProtocolTCP},
							},
							VolumeMounts: []v1.VolumeMount{{Name: "config-volume", MountPath: "/etc/coredns", ReadOnly: true}},
							LivenessProbe: &v1.Probe{
								ProbeHandler:     v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(8080)}},
								PeriodSeconds:    10,
								FailureThreshold: 5,
								TimeoutSeconds:   5,
							},
							ReadinessProbe: &v1.Probe{
								ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(8181)}},
								PeriodSeconds: 1,
							},
						}},
						Volumes: []v1.Volume{{Name: "config-volume", VolumeSource: v1.VolumeSource{ConfigMap: &v1.ConfigMapVolumeSource{
							LocalObjectReference: v1.LocalObjectReference{Name: ConfigMap},
							Items:                []v1.KeyToPath{{Key: "Corefile", Path: "Corefile"}},
						}}}},
					},
				},
			},
		},
		&v1.Service{
			TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
			ObjectMeta: metav1.ObjectMeta{Name: Service, Namespace: Namespace, Labels: map[string]string{
				"k8s-app": AppLabel, "kubernetes.io/name": "CoreDNS",
			}},
			Spec: v1.ServiceSpec{
				Selector:  labels,
				ClusterIP: serviceIP.String(),
				Ports: []v1.ServicePort{
					{Name: "dns", Port: 53, Protocol: v1.ProtocolUDP, TargetPort: intstr.FromInt32(53)},
					{Name: "dns-tcp", Port: 53, Protocol: v1.ProtocolTCP, TargetPort: intstr.FromInt32(53)},
					{Name: "metrics", Port: 9153, Protocol: v1.ProtocolTCP, TargetPort: intstr.FromInt32(9153)},
				},
			},
		},
	}
}

// Ensure applies the cluster DNS objects (server-side apply, so an up on an
// existing cluster brings them to this localkube's version).
func Ensure(ctx context.Context, client kubernetes.Interface, serviceIP net.IP) error {
	opts := metav1.PatchOptions{FieldManager: fieldManager, Force: ptr.To(true)}
	for _, o := range Objects(serviceIP) {
		body, err := json.Marshal(o)
		if err != nil {
			return err
		}
		var err2 error
		switch o := o.(type) {
		case *v1.ServiceAccount:
			_, err2 = client.CoreV1().ServiceAccounts(Namespace).Patch(ctx, o.Name, types.ApplyPatchType, body, opts)
		case *rbacv1.ClusterRole:
			_, err2 = client.RbacV1().ClusterRoles().Patch(ctx, o.Name, types.ApplyPatchType, body, opts)
		case *rbacv1.ClusterRoleBinding:
			_, err2 = client.RbacV1().ClusterRoleBindings().Patch(ctx, o.Name, types.ApplyPatchType, body, opts)
		case *v1.ConfigMap:
			_, err2 = client.CoreV1().ConfigMaps(Namespace).Patch(ctx, o.Name, types.ApplyPatchType, body, opts)
		case *appsv1.Deployment:
			_, err2 = client.AppsV1().Deployments(Namespace).Patch(ctx, o.Name, types.ApplyPatchType, body, opts)
		case *v1.Service:
			_, err2 = client.CoreV1().Services(Namespace).Patch(ctx, o.Name, types.ApplyPatchType, body, opts)
		default:
			return fmt.Errorf("clusterdns: no apply for %T", o)
		}
		if err2 != nil {
			kind := o.GetObjectKind().GroupVersionKind().Kind
			return fmt.Errorf("cluster DNS: apply %s: %w", kind, err2)
		}
	}
	return nil
}

// WaitReady waits until the coredns Deployment has a Ready, up-to-date
// pod: from then on a pod's lookups are answered. It returns what it last
// saw when the deadline passes.
func WaitReady(ctx context.Context, client kubernetes.Interface, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "no Deployment yet"
	for {
		d, err := client.AppsV1().Deployments(Namespace).Get(ctx, Deployment, metav1.GetOptions{})
		if err == nil {
			s := d.Status
			if s.ObservedGeneration >= d.Generation && s.UpdatedReplicas >= 1 && s.AvailableReplicas >= 1 && s.UnavailableReplicas == 0 {
				return nil
			}
			last = fmt.Sprintf("%d updated, %d available", s.UpdatedReplicas, s.AvailableReplicas)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster DNS (%s/%s) not ready within %s (%s); see `kubectl -n %s describe pods -l k8s-app=%s` and `localkube logs -n %s POD`",
				Namespace, Deployment, timeout, last, Namespace, AppLabel, Namespace)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// CheckBinary says, in one line, that bin/coredns is missing from the dirs
// images map to binaries from.
func CheckBinary(binDirs []string) error {
	for _, d := range binDirs {
		if st, err := os.Stat(filepath.Join(d, "coredns")); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return nil
		}
	}
	return fmt.Errorf("missing binary coredns (the cluster DNS) in %s: run `make localkube` in the repository root", strings.Join(binDirs, ", "))
}
