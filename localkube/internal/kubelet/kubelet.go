// Package kubelet is the process kubelet of localkube: it registers a Node,
// binds pending pods to it, and runs each pod's containers as local
// processes inside a network namespace per pod.
package kubelet

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"meshtls/localkube/internal/podnet"
)

// Config configures the kubelet.
type Config struct {
	NodeName string
	Dir      string          // cluster dir; pods live in Dir/pods
	BinDirs  []string        // where images map to binaries, searched in order
	Net      *podnet.Network // the cluster's pod network (bridge set up)
	Server   string          // API server URL as pods reach it (the node address)
	CACert   string          // cluster CA file, for pods' kubeconfigs
	Port     int             // kubelet API port (logs); 0 for none
	Cert     string          // serving certificate for the kubelet API
	Key      string
	Log      *log.Logger
	// ClusterDNS is kubelet's --cluster-dns: the nameserver of pods with
	// dnsPolicy ClusterFirst (the kube-dns Service's ClusterIP).
	ClusterDNS []net.IP
}

// Kubelet runs the pods bound to its node.
type Kubelet struct {
	cfg        Config
	client     kubernetes.Interface
	log        *log.Logger
	images     imageMapper
	ipam       *ipam
	recorder   record.EventRecorder
	pods       corelisters.PodLister
	secrets    corelisters.SecretLister
	configMaps corelisters.ConfigMapLister
	schedule   workqueue.TypedRateLimitingInterface[string]

	mu      sync.Mutex
	workers map[types.UID]*podWorker
	wg      sync.WaitGroup
	ready   chan struct{}
}

// New returns a kubelet that talks to the API through client.
func New(client kubernetes.Interface, cfg Config) *Kubelet {
	if cfg.NodeName == "" {
		cfg.NodeName = "localkube"
	}
	if cfg.Log == nil {
		cfg.Log = log.New(os.Stderr, "kubelet: ", log.LstdFlags)
	}
	return &Kubelet{
		cfg: cfg, client: client, log: cfg.Log,
		images:  imageMapper{dirs: cfg.BinDirs},
		ipam:    newIPAM(cfg.Net),
		workers: map[types.UID]*podWorker{},
		ready:   make(chan struct{}),
		schedule: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "localkube-scheduler"}),
	}
}

// Ready is closed once the Node is registered and the caches are synced.
func (k *Kubelet) Ready() <-chan struct{} { return k.ready }

// Run registers the node and runs pods until ctx ends. Then it stops every
// pod process (leaving the pods in the API, as a rebooting node would) and
// returns.
func (k *Kubelet) Run(ctx context.Context) error {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: k.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	k.recorder = broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: "kubelet", Host: k.cfg.NodeName})

	if err := k.registerNode(ctx); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(k.client, 0)
	podInf := factory.Core().V1().Pods()
	secretInf := factory.Core().V1().Secrets()
	cmInf := factory.Core().V1().ConfigMaps()
	k.pods, k.secrets, k.configMaps = podInf.Lister(), secretInf.Lister(), cmInf.Lister()

	_, _ = podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.onPod(ctx, o) },
		UpdateFunc: func(_, o any) { k.onPod(ctx, o) },
		DeleteFunc: func(o any) { k.onPodDeleted(o) },
	})
	wakeNamespace := func(o any) {
		if m, err := metaOf(o); err == nil {
			k.wakeNamespace(m.GetNamespace())
		}
	}
	for _, inf := range []cache.SharedIndexInformer{secretInf.Informer(), cmInf.Informer()} {
		_, _ = inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: wakeNamespace, UpdateFunc: func(_, o any) { wakeNamespace(o) }, DeleteFunc: wakeNamespace,
		})
	}
	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache for %v did not sync", typ)
		}
	}

	go k.heartbeat(ctx)
	for i := 0; i < 2; i++ {
		go k.runScheduler(ctx)
	}
	if k.cfg.Port != 0 {
		if err := k.serveAPI(ctx); err != nil {
			return err
		}
	}
	close(k.ready)
	<-ctx.Done()
	k.schedule.ShutDown()
	factory.Shutdown()
	k.wg.Wait()
	return nil
}

func metaOf(o any) (metav1.Object, error) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	m, ok := o.(metav1.Object)
	if !ok {
		return nil, fmt.Errorf("unexpected %T", o)
	}
	return m, nil
}

func (k *Kubelet) onPod(ctx context.Context, o any) {
	pod, ok := o.(*v1.Pod)
	if !ok {
		return
	}
	if pod.Spec.NodeName == "" {
		if pod.DeletionTimestamp == nil {
			key, _ := cache.MetaNamespaceKeyFunc(pod)
			k.schedule.Add(key)
		}
		return
	}
	if pod.Spec.NodeName != k.cfg.NodeName {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if w, ok := k.workers[pod.UID]; ok {
		w.update(pod)
		return
	}
	if ctx.Err() != nil {
		return
	}
	terminal := pod.Status.Phase == v1.PodSucceeded || pod.Status.Phase == v1.PodFailed
	if terminal && pod.DeletionTimestamp == nil {
		return
	}
	w := newPodWorker(k, pod)
	k.workers[pod.UID] = w
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		w.run(ctx)
		k.mu.Lock()
		if k.workers[pod.UID] == w {
			delete(k.workers, pod.UID)
		}
		k.mu.Unlock()
	}()
}

func (k *Kubelet) onPodDeleted(o any) {
	m, err := metaOf(o)
	if err != nil {
		return
	}
	k.mu.Lock()
	w := k.workers[m.GetUID()]
	k.mu.Unlock()
	if w != nil {
		w.markGone()
	}
}

func (k *Kubelet) wakeNamespace(ns string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, w := range k.workers {
		w.mu.Lock()
		match := w.latest.Namespace == ns
		w.mu.Unlock()
		if match {
			w.poke()
		}
	}
}

func (k *Kubelet) event(pod *v1.Pod, typ, reason, msg string) {
	if k.recorder != nil {
		k.recorder.Event(pod, typ, reason, msg)
	}
}

// runScheduler binds pending pods to the node. Every pod fits: the node
// has room for thousands and no taints.
func (k *Kubelet) runScheduler(ctx context.Context) {
	for {
		key, quit := k.schedule.Get()
		if quit {
			return
		}
		err := k.bind(ctx, key)
		if err != nil && ctx.Err() == nil {
			k.log.Printf("schedule %s: %v", key, err)
			k.schedule.AddRateLimited(key)
		} else {
			k.schedule.Forget(key)
		}
		k.schedule.Done(key)
	}
}

func (k *Kubelet) bind(ctx context.Context, key string) error {
	ns, name, _ := cache.SplitMetaNamespaceKey(key)
	pod, err := k.pods.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil {
		return nil
	}
	if s := pod.Spec.SchedulerName; s != "" && s != v1.DefaultSchedulerName {
		return nil
	}
	err = k.client.CoreV1().Pods(ns).Bind(ctx, &v1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: pod.UID},
		Target:     v1.ObjectReference{Kind: "Node", Name: k.cfg.NodeName},
	}, metav1.CreateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		k.event(pod, v1.EventTypeNormal, "Scheduled", fmt.Sprintf("Successfully assigned %s/%s to %s", ns, name, k.cfg.NodeName))
	}
	return err
}

func (k *Kubelet) nodeStatus(now metav1.Time) v1.NodeStatus {
	capacity := v1.ResourceList{
		v1.ResourceCPU:    *resource.NewQuantity(int64(runtime.NumCPU()), resource.DecimalSI),
		v1.ResourceMemory: resource.MustParse("64Gi"),
		v1.ResourcePods:   resource.MustParse("5000"),
	}
	cond := func(t v1.NodeConditionType, s v1.ConditionStatus, reason, msg string) v1.NodeCondition {
		return v1.NodeCondition{Type: t, Status: s, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
	}
	return v1.NodeStatus{
		Capacity: capacity, Allocatable: capacity,
		Phase: v1.NodeRunning,
		Conditions: []v1.NodeCondition{
			cond(v1.NodeMemoryPressure, v1.ConditionFalse, "KubeletHasSufficientMemory", "localkube does not track memory"),
			cond(v1.NodeDiskPressure, v1.ConditionFalse, "KubeletHasNoDiskPressure", "localkube does not track disk"),
			cond(v1.NodePIDPressure, v1.ConditionFalse, "KubeletHasSufficientPID", "localkube does not track pids"),
			cond(v1.NodeReady, v1.ConditionTrue, "KubeletReady", "localkube process kubelet is posting ready status"),
		},
		Addresses: []v1.NodeAddress{
			{Type: v1.NodeInternalIP, Address: hostIP},
			{Type: v1.NodeHostName, Address: k.cfg.NodeName},
		},
		DaemonEndpoints: v1.NodeDaemonEndpoints{KubeletEndpoint: v1.DaemonEndpoint{Port: int32(k.cfg.Port)}},
		NodeInfo: v1.NodeSystemInfo{
			OperatingSystem: runtime.GOOS, Architecture: runtime.GOARCH,
			KubeletVersion: "v1.36.3-localkube", ContainerRuntimeVersion: "localkube://processes",
			OSImage: "localkube process kubelet", KernelVersion: kernelVersion(),
		},
	}
}

func kernelVersion() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return string(trimNL(b))
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	nodes := k.client.CoreV1().Nodes()
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Labels: map[string]string{
		"kubernetes.io/hostname": k.cfg.NodeName, "kubernetes.io/os": runtime.GOOS, "kubernetes.io/arch": runtime.GOARCH,
		"node-role.kubernetes.io/control-plane": "",
	}}}
	existing, err := nodes.Create(ctx, node, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		existing, err = nodes.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("register node %s: %w", k.cfg.NodeName, err)
	}
	// A stale run may have left node.kubernetes.io taints behind.
	if len(existing.Spec.Taints) > 0 {
		existing.Spec.Taints = nil
		if existing, err = nodes.Update(ctx, existing, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("register node %s: %w", k.cfg.NodeName, err)
		}
	}
	existing.Status = k.nodeStatus(metav1.Now())
	if _, err := nodes.UpdateStatus(ctx, existing, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("register node %s: %w", k.cfg.NodeName, err)
	}
	return nil
}

// heartbeat renews the node Lease every 10s and the Ready condition every
// minute, so the node lifecycle controller never marks the node NotReady.
func (k *Kubelet) heartbeat(ctx context.Context) {
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	n := 0
	for {
		k.renewLease(ctx)
		if n%6 == 5 {
			if node, err := k.client.CoreV1().Nodes().Get(ctx, k.cfg.NodeName, metav1.GetOptions{}); err == nil {
				now := metav1.Now()
				for i := range node.Status.Conditions {
					node.Status.Conditions[i].LastHeartbeatTime = now
				}
				_, _ = k.client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
			}
		}
		n++
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (k *Kubelet) renewLease(ctx context.Context) {
	leases := k.client.CoordinationV1().Leases(v1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	lease, err := leases.Get(ctx, k.cfg.NodeName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: k.cfg.NodeName, Namespace: v1.NamespaceNodeLease},
			Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To(k.cfg.NodeName), LeaseDurationSeconds: ptr.To[int32](40),
				RenewTime: &now},
		}, metav1.CreateOptions{})
	} else if err == nil {
		lease.Spec.RenewTime = &now
		_, err = leases.Update(ctx, lease, metav1.UpdateOptions{})
	}
	if err != nil && ctx.Err() == nil && !apierrors.IsNotFound(err) {
		k.log.Printf("node lease: %v", err)
	}
}

// writePodKubeconfig writes a kubeconfig that authenticates as the pod's
// ServiceAccount, reading the token and CA from the pod's token volume so
// that token refreshes take effect. Binaries that load KUBECONFIG when
// rest.InClusterConfig fails then work unchanged.
func (k *Kubelet) writePodKubeconfig(podDir, saDir, ns string) (string, error) {
	cfg := clientcmdapi.NewConfig()
	// Pods reach the API server at the node address, which the serving
	// certificate does not name; it names "kubernetes", as in a cluster.
	cfg.Clusters["localkube"] = &clientcmdapi.Cluster{Server: k.cfg.Server, CertificateAuthority: filepath.Join(saDir, "ca.crt"),
		TLSServerName: "kubernetes"}
	cfg.AuthInfos["serviceaccount"] = &clientcmdapi.AuthInfo{TokenFile: filepath.Join(saDir, "token")}
	cfg.Contexts["localkube"] = &clientcmdapi.Context{Cluster: "localkube", AuthInfo: "serviceaccount", Namespace: ns}
	cfg.CurrentContext = "localkube"
	path := filepath.Join(podDir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", err
	}
	// It holds paths, not secrets; containers with a runAsUser read it too.
	return path, os.Chmod(path, 0o644)
}

// Pods reports the pods with running workers, for status output.
func (k *Kubelet) Pods() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.workers)
}
