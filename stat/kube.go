package stat

import (
	"context"
	"fmt"
	"strings"

	"meshtls/contract"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
)

// KubePods lists pods from the Kubernetes API.
type KubePods struct {
	Client kubernetes.Interface
}

// Pods lists running pods and works out their owners and whether they
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
		if p.Status.Phase != corev1.PodRunning && p.Status.Phase != corev1.PodPending {
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
