package ca

import (
	"testing"
	"time"

	"meshtls/ca/pki"
	"meshtls/contract"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPodOwner(t *testing.T) {
	yes := true
	cases := []struct {
		name string
		pod  corev1.Pod
		want ownerKey
	}{
		{"deployment label wins over the ReplicaSet reference", corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Name: "web-abc-xyz", Namespace: "ns",
			Labels:          map[string]string{"linkerd.io/proxy-deployment": "web", "linkerd.io/proxy-replicaset": "web-abc"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-abc", Controller: &yes}},
		}}, ownerKey{"deployment", "ns", "web"}},
		{"statefulset label", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "ns",
			Labels: map[string]string{"linkerd.io/proxy-statefulset": "db"}}}, ownerKey{"statefulset", "ns", "db"}},
		{"no label: the controller reference", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "agent-x", Namespace: "ns",
			OwnerReferences: []metav1.OwnerReference{{Kind: "DaemonSet", Name: "agent", Controller: &yes}}}}, ownerKey{"daemonset", "ns", "agent"}},
		{"a non-controller reference is not an owner", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns",
			OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "d"}}}}, ownerKey{"pod", "ns", "p"}},
		{"an unknown controller kind leaves the pod its own owner", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job-x", Namespace: "ns",
			OwnerReferences: []metav1.OwnerReference{{Kind: "SparkApplication", Name: "job", Controller: &yes}}}}, ownerKey{"pod", "ns", "job-x"}},
		{"a Job controller reference", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "migrate-x", Namespace: "ns",
			OwnerReferences: []metav1.OwnerReference{{Kind: "Job", Name: "migrate", Controller: &yes}}}}, ownerKey{"job", "ns", "migrate"}},
		{"a CronJob label wins over its Job", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "nightly-1-x", Namespace: "ns",
			Labels:          map[string]string{"linkerd.io/proxy-cronjob": "nightly"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "Job", Name: "nightly-1", Controller: &yes}}}}, ownerKey{"cronjob", "ns", "nightly"}},
		{"bare pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "solo", Namespace: "ns"}}, ownerKey{"pod", "ns", "solo"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := podOwner(&tc.pod); got != tc.want {
				t.Errorf("podOwner = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestWantsTLS(t *testing.T) {
	pod := func(ann, ns string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{
			Annotations: map[string]string{contract.TLSAnnotation: ann}, Labels: map[string]string{contract.ControlPlaneNSLabel: ns}}}
	}
	if !wantsTLS(pod("optional", "linkerd"), "linkerd") {
		t.Error("TLS pod of this control plane not wanted")
	}
	if wantsTLS(pod("optional", "other"), "linkerd") {
		t.Error("another control plane's pod wanted")
	}
	if wantsTLS(pod("", "linkerd"), "linkerd") {
		t.Error("pod without the TLS annotation wanted")
	}
}

func TestSecretOwner(t *testing.T) {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "my-app-deployment-tls-linkerd-io", Namespace: "ns",
		Labels: map[string]string{contract.OwnerKindLabel: "deployment"}}}
	if got, ok := secretOwner(s); !ok || got != (ownerKey{"deployment", "ns", "my-app"}) {
		t.Errorf("secretOwner = %v %v", got, ok)
	}
	s.Labels[contract.OwnerKindLabel] = "statefulset"
	if _, ok := secretOwner(s); ok {
		t.Error("name and kind label disagree, yet an owner was found")
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{LeafLifetime: 2e9},
		{LeafLifetime: 48 * 3600e9, RootLifetime: 24 * 3600e9},
	} {
		if _, err := New(nil, cfg); err == nil {
			t.Errorf("New(%+v) accepted a bad config", cfg)
		}
	}
}

// Informers may transform an object more than once; the second pass must
// not turn "the key matched" into "no key, so no match".
func TestStripKeyIsIdempotent(t *testing.T) {
	r, _, err := pki.NewRoot("t", time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := r.Issue("a.pod.ns.linkerd-managed.linkerd.svc.cluster.local", 20*time.Minute, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{Data: map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM}}
	once, _ := stripKey(s)
	twice, _ := stripKey(once)
	for i, obj := range []any{once, twice} {
		got := obj.(*corev1.Secret)
		if len(got.Data[corev1.TLSPrivateKeyKey]) != 0 {
			t.Errorf("pass %d kept the private key", i+1)
		}
		if string(got.Data[keyMatchesKey]) != "true" {
			t.Errorf("pass %d: key-matches marker %q, want true", i+1, got.Data[keyMatchesKey])
		}
	}
	if len(s.Data[corev1.TLSPrivateKeyKey]) == 0 {
		t.Error("stripKey modified its input")
	}
}
