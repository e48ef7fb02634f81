package ca

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"meshtls/contract"
)

// TestWantsTLSRequired: a required pod gets its certificate as an
// optional one does (required implies optional); other values do not.
func TestWantsTLSRequired(t *testing.T) {
	for v, want := range map[string]bool{"optional": true, "required": true, "": false, "strict": false, "Required": false} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Annotations: map[string]string{contract.TLSAnnotation: v},
			Labels:      map[string]string{contract.ControlPlaneNSLabel: "linkerd"},
		}}
		if got := wantsTLS(pod, "linkerd"); got != want {
			t.Errorf("linkerd.io/tls=%q: wantsTLS %v, want %v", v, got, want)
		}
	}
}
