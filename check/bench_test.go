//go:build integration

package check_test

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"meshtls/ca/pki"
	"meshtls/check"
	"meshtls/contract"
	"meshtls/testutil/localcluster"
)

const (
	benchPods       = 1000
	benchNamespaces = 10
	benchControlNS  = "bench-ctl"
)

var (
	benchOnce   sync.Once
	benchErr    error
	benchClient kubernetes.Interface
)

// setupThousandPods creates, once per test binary, what a mesh of 1,000
// TLS-enabled pods looks like to the API server: each pod its own owner
// (the worst case: one Secret per pod), a Secret issued under a root in a
// control namespace of its own (so the real CA of the other tests never
// touches it), and a bundle per namespace. Pods are never scheduled: the
// check reads objects, and 1,000 processes would measure the kubelet.
func setupThousandPods(tb testing.TB) kubernetes.Interface {
	tb.Helper()
	benchOnce.Do(func() {
		cfg := localcluster.Config(tb)
		cfg.QPS, cfg.Burst = 5000, 5000
		client, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			benchErr = err
			return
		}
		benchClient = client
		benchErr = createThousandPods(context.Background(), client)
	})
	if benchErr != nil {
		tb.Fatalf("setup: %v", benchErr)
	}
	return benchClient
}

func createThousandPods(ctx context.Context, client kubernetes.Interface) error {
	root, rootKey, err := pki.NewRoot(contract.RootCommonName(benchControlNS), 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	namespaces := []string{benchControlNS}
	for i := range benchNamespaces {
		namespaces = append(namespaces, fmt.Sprintf("bench-app-%d", i))
	}
	for _, ns := range namespaces {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	if _, err := client.CoreV1().Secrets(benchControlNS).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: contract.RootSecret}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: root.CertPEM, corev1.TLSPrivateKeyKey: rootKey},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for _, ns := range namespaces[1:] {
		if _, err := client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: contract.BundleConfigMap}, Data: map[string]string{contract.BundleKey: string(root.CertPEM)},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	jobs := make(chan int)
	errs := make(chan error, benchPods)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				errs <- createBenchPod(ctx, client, root, i)
			}
		}()
	}
	for i := range benchPods {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func createBenchPod(ctx context.Context, client kubernetes.Interface, root *pki.Root, i int) error {
	ns := fmt.Sprintf("bench-app-%d", i%benchNamespaces)
	name := fmt.Sprintf("app-%04d", i)
	secret := contract.SecretName(name, contract.KindPod)
	leaf, err := root.Issue(contract.Identity(name, contract.KindPod, ns, benchControlNS), 24*time.Hour, time.Now())
	if err != nil {
		return err
	}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secret, Labels: map[string]string{contract.OwnerKindLabel: contract.KindPod}}, Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: leaf.CertPEM, corev1.TLSPrivateKeyKey: leaf.KeyPEM},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err = client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels:      map[string]string{contract.ControlPlaneNSLabel: benchControlNS},
			Annotations: map[string]string{contract.TLSAnnotation: contract.TLSOptional}},
		Spec: corev1.PodSpec{
			SchedulerName: "meshtls-test-unscheduled",
			Containers: []corev1.Container{{Name: contract.ProxyContainerName, Image: "example.invalid/proxy:1",
				VolumeMounts: []corev1.VolumeMount{{Name: contract.IdentityVolume, MountPath: contract.IdentityDir}}}},
			Volumes: []corev1.Volume{{Name: contract.IdentityVolume, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: secret}}}},
		},
	}, metav1.CreateOptions{})
	return err
}

// benchCategories is the per-pod part of check --tls: the root checks and
// the whole data plane. The control-plane checks cost the same for 1 pod
// or 1,000, and this control namespace has no CA Deployment to find.
func benchCategories(client kubernetes.Interface) []check.Category {
	var out []check.Category
	for _, c := range check.Categories(check.Config{ControlNamespace: benchControlNS, TLS: true,
		NewClient: func() (kubernetes.Interface, error) { return client, nil }}) {
		if c.Name == check.CategoryTLSDataPlane {
			out = append(out, c)
		}
	}
	return out
}

func runBench(tb testing.TB, client kubernetes.Interface) check.Summary {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return check.Run(ctx, benchCategories(client), check.Options{}, nil)
}

// TestThousandPods checks that the 1,000-pod mesh passes, that the
// served-certificate check skips the unscheduled pods with a note rather
// than failing them, and that a run's API requests do not grow with the
// pods: a per-pod GET creeping back in would make 1,000 or more. How long
// a run takes is logged (the figure is BenchmarkCheckTLS1000Pods's), not
// bounded: on a shared machine under -race it says little.
func TestThousandPods(t *testing.T) {
	setupThousandPods(t)
	cfg := localcluster.Config(t)
	cfg.QPS, cfg.Burst = 5000, 5000
	var requests atomic.Int64
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			requests.Add(1)
			return rt.RoundTrip(r)
		})
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var times []time.Duration
	for range 3 {
		requests.Store(0)
		start := time.Now()
		sum := runBench(t, client)
		times = append(times, time.Since(start))
		for _, r := range sum.Results {
			if r.Status != check.StatusOK {
				t.Fatalf("1,000-pod mesh not healthy:%s", describe(sum))
			}
		}
		served := result(t, sum, "proxies serve their Secret's certificate")
		if len(served.Notes) == 0 {
			t.Errorf("no note on skipped pods")
		}
		if n := requests.Load(); n >= benchPods/2 {
			t.Errorf("check --tls over %d pods made %d API requests: some are per pod", benchPods, n)
		}
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	t.Logf("check --tls data plane over %d pods: median %s (runs %v), %d API requests in the last", benchPods, times[1], times, requests.Load())
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func BenchmarkCheckTLS1000Pods(b *testing.B) {
	client := setupThousandPods(b)
	b.ResetTimer()
	for b.Loop() {
		sum := runBench(b, client)
		if !sum.Success {
			b.Fatalf("not healthy:%s", describe(sum))
		}
	}
	b.ReportMetric(benchPods, "pods")
}
