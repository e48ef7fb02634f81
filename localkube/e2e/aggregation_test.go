package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	apiregv1 "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	aggregator "k8s.io/kube-aggregator/pkg/client/clientset_generated/clientset"
)

// TestAnAPIServiceBackedByAPodAnswersThroughTheAPIServer registers an
// APIService for a Service whose pod serves discovery over HTTPS, then
// asks kube-apiserver: it proxies to the pod IP with its front-proxy
// certificate and says who the caller is in X-Remote-User.
func TestAnAPIServiceBackedByAPodAnswersThroughTheAPIServer(t *testing.T) {
	t.Parallel()
	ns := namespace(t)
	ctx := context.Background()
	pod := appPod("aggregated", "--tls", "--listen=:8443")
	pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Port = intOrStr(8443)
	pod.Spec.Containers[0].ReadinessProbe.HTTPGet.Scheme = v1.URISchemeHTTPS
	if _, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().Services(ns).Create(ctx, &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "aggregated"},
		Spec: v1.ServiceSpec{Selector: map[string]string{"app": "aggregated"},
			Ports: []v1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(8443)}}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A group unique to this test's namespace: APIServices are cluster-wide.
	group := ns + ".localkube.test"
	gv := group + "/v1alpha1"
	agg := aggregator.NewForConfigOrDie(restConfig)
	svc := &apiregv1.APIService{
		ObjectMeta: metav1.ObjectMeta{Name: "v1alpha1." + group},
		Spec: apiregv1.APIServiceSpec{
			Service: &apiregv1.ServiceReference{Namespace: ns, Name: "aggregated", Port: ptr(int32(443))},
			Group:   group, Version: "v1alpha1",
			InsecureSkipTLSVerify: true,
			GroupPriorityMinimum:  1000, VersionPriority: 15,
		},
	}
	if _, err := agg.ApiregistrationV1().APIServices().Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = agg.ApiregistrationV1().APIServices().Delete(context.Background(), svc.Name, metav1.DeleteOptions{})
	})
	waitPod(t, ns, "aggregated", 30*time.Second, "Ready", isReady)

	var body, who string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		b, err := client.Discovery().RESTClient().Get().AbsPath("/apis/" + gv).DoRaw(ctx)
		if err != nil {
			body = err.Error()
			return false, nil
		}
		body = string(b)
		w, err := client.Discovery().RESTClient().Get().AbsPath("/apis/" + gv + "/whoami").DoRaw(ctx)
		if err != nil {
			return false, nil
		}
		who = string(w)
		return true, nil
	})
	if err != nil {
		a, _ := agg.ApiregistrationV1().APIServices().Get(ctx, svc.Name, metav1.GetOptions{})
		t.Fatalf("GET /apis/%s through kube-apiserver never answered: %s; APIService status %+v", gv, body, a.Status)
	}
	if !strings.Contains(body, `"groupVersion":"`+gv+`"`) {
		t.Errorf("GET /apis/%s through kube-apiserver: %s", gv, body)
	}
	if who != "localkube-admin" {
		t.Errorf("the aggregated server saw X-Remote-User %q, want the caller localkube-admin", who)
	}
}
