//go:build integration

package ca

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

// A real API server cannot be made to fail on cue, so this one unit test
// uses a fake clientset whose Secret writes fail a few times: the CA must
// count each failure, back off, and still get the Secret written.
func TestAPIErrorsRetryWithBackoff(t *testing.T) {
	const ns, ctl = "app", "linkerd"
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns, UID: "dep-uid"}}
	yes := true
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
		Name: "web-1", Namespace: ns, UID: "pod-uid",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: "dep-uid", Controller: &yes}},
		Labels:          map[string]string{contract.ControlPlaneNSLabel: ctl, contract.KindLabel(contract.KindDeployment): "web"},
		Annotations:     map[string]string{contract.TLSAnnotation: "optional"},
	}}
	client := fake.NewClientset(dep, pod)
	const failures = 3
	var calls atomic.Int32
	var mu sync.Mutex
	var times []time.Time
	client.PrependReactor("patch", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() != ns {
			return false, nil, nil
		}
		mu.Lock()
		times = append(times, time.Now())
		mu.Unlock()
		if calls.Add(1) <= failures {
			return true, nil, apierrors.NewServiceUnavailable("etcd is having a bad day")
		}
		return false, nil, nil
	})
	ctrl, err := New(client, Config{ControlNamespace: ctl, Identity: "unit", Logger: testLogger(t, "unit")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ctrl.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("CA stopped with %v", err)
		}
	}()
	localcluster.Eventually(t, 30*time.Second, func() error {
		s, err := client.CoreV1().Secrets(ns).Get(context.Background(), contract.SecretName("web", contract.KindDeployment), metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Data[corev1.TLSCertKey]) == 0 {
			return errors.New("Secret has no certificate")
		}
		return nil
	})
	if got := testutil.ToFloat64(ctrl.metrics.errors.WithLabelValues("secret")); got != failures {
		t.Errorf("errors metric %v, want %d", got, failures)
	}
	localcluster.Eventually(t, 10*time.Second, func() error { // counted just after the write
		if got := testutil.ToFloat64(ctrl.metrics.issued); got != 1 {
			return fmt.Errorf("issued %v, want 1", got)
		}
		return nil
	})
	// Exponential backoff from client-go's controller rate limiter: the
	// retries wait at least 5ms, 10ms and 20ms (timers never fire early,
	// so these lower bounds hold on a loaded machine too).
	mu.Lock()
	defer mu.Unlock()
	if len(times) != failures+1 {
		t.Fatalf("%d apply attempts, want %d", len(times), failures+1)
	}
	for i, min := range []time.Duration{5 * time.Millisecond, 10 * time.Millisecond, 20 * time.Millisecond} {
		if gap := times[i+1].Sub(times[i]); gap < min {
			t.Errorf("retry %d came after %s, want at least %s", i+1, gap, min)
		}
	}
}
