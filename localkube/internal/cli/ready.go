package cli

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// waitSystemReady waits until a pod created right after up is accepted:
// the default ServiceAccount and the root CA ConfigMap exist in "default".
func waitSystemReady(ctx context.Context, client kubernetes.Interface) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, errSA := client.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		_, errCM := client.CoreV1().ConfigMaps("default").Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if errSA == nil && errCM == nil {
			return nil
		}
		if time.Now().After(deadline) {
			if errSA != nil && !apierrors.IsNotFound(errSA) {
				return errSA
			}
			return fmt.Errorf("kube-controller-manager did not create the default ServiceAccount within 60s; see its log")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}
