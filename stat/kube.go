package stat

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"meshtls/contract"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// KubePods lists pods from the Kubernetes API.
type KubePods struct {
	Client kubernetes.Interface
}

// Pods lists running pods (not pending ones) and works out their owners and whether they
// carry a proxy.
func (k KubePods) Pods(ctx context.Context, namespace string, sel labels.Selector) ([]Pod, error) {
	opts := metav1.ListOptions{}
	if sel != nil && !sel.Empty() {
		opts.LabelSelector = sel.String()
	}
	list, err := k.Client.CoreV1().Pods(namespace).List(ctx, opts)
	if err != nil {
		where := "namespace " + namespace
		if namespace == "" {
			where = "all namespaces"
		}
		return nil, fmt.Errorf("cannot list pods in %s: %v", where, err)
	}
	var out []Pod
	for i := range list.Items {
		p := &list.Items[i]
		// Pending pods have no proxy to scrape yet, and Linkerd does not
		// count them in MESHED either.
		if p.Status.Phase != corev1.PodRunning {
			continue
		}
		out = append(out, podFromKube(p))
	}
	return out, nil
}

func podFromKube(p *corev1.Pod) Pod {
	pod := Pod{
		Namespace: p.Namespace,
		Name:      p.Name,
		IP:        p.Status.PodIP,
		Labels:    p.Labels,
		Meshed:    p.Labels[contract.ControlPlaneNSLabel] != "",
		Owners:    map[string]string{},
	}
	// A meshed pod names its owners in linkerd.io/proxy-<kind> labels;
	// Prometheus turns those into the <kind> labels the queries use.
	for k, v := range p.Labels {
		if kind, ok := strings.CutPrefix(k, contract.ProxyKindLabelPrefix); ok {
			pod.Owners[kind] = v
		}
	}
	if len(pod.Owners) > 0 {
		return pod
	}
	// Unmeshed pods count towards their workload's MESHED total too.
	for _, ref := range p.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller {
			continue
		}
		kind := strings.ToLower(ref.Kind)
		pod.Owners[kind] = ref.Name
		if kind == "replicaset" {
			if hash := p.Labels["pod-template-hash"]; hash != "" {
				if dep, ok := strings.CutSuffix(ref.Name, "-"+hash); ok {
					pod.Owners["deployment"] = dep
				}
			}
		}
	}
	return pod
}

// ResourceNames lists the names of a kind's objects in namespace ("" for
// all), for shell completion. Authorities are not objects: it lists none.
func ResourceNames(ctx context.Context, client kubernetes.Interface, kind Kind, namespace string) ([]string, error) {
	opts := metav1.ListOptions{}
	var names []string
	add := func(m metav1.Object) { names = append(names, m.GetName()) }
	var err error
	switch kind {
	case KindNamespace:
		var l *corev1.NamespaceList
		if l, err = client.CoreV1().Namespaces().List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindPod:
		var l *corev1.PodList
		if l, err = client.CoreV1().Pods(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindService:
		var l *corev1.ServiceList
		if l, err = client.CoreV1().Services(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindReplicationController:
		var l *corev1.ReplicationControllerList
		if l, err = client.CoreV1().ReplicationControllers(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindDeployment:
		var l *appsv1.DeploymentList
		if l, err = client.AppsV1().Deployments(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindStatefulSet:
		var l *appsv1.StatefulSetList
		if l, err = client.AppsV1().StatefulSets(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindDaemonSet:
		var l *appsv1.DaemonSetList
		if l, err = client.AppsV1().DaemonSets(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindReplicaSet:
		var l *appsv1.ReplicaSetList
		if l, err = client.AppsV1().ReplicaSets(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindJob:
		var l *batchv1.JobList
		if l, err = client.BatchV1().Jobs(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	case KindCronJob:
		var l *batchv1.CronJobList
		if l, err = client.BatchV1().CronJobs(namespace).List(ctx, opts); err == nil {
			for i := range l.Items {
				add(&l.Items[i])
			}
		}
	}
	sort.Strings(names)
	return names, err
}
