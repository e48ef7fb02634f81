// Command ca-burst measures the CA under a burst: it creates N TLS-enabled
// owners at once on a real API server and times how long until every one
// has its Secret, overall and per owner (p50/p99), and reports the CA
// process's memory.
//
// By default each owner is a bare pod (a pod is its own owner), so the
// figure is the CA's and the API server's, not kube-controller-manager's
// rate limits; -kind deployment measures the whole path instead. The pods
// name a scheduler that does not exist, so the process kubelet never runs
// them.
//
//	go run ./bench/ca-burst                      # starts its own localkube from bin/
//	go run ./bench/ca-burst -kubeconfig ~/.kube/config -owners 1000
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"meshtls/contract"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ca-burst: "+err.Error())
		os.Exit(1)
	}
}

type options struct {
	kubeconfig string
	localkube  string
	owners     int
	creators   int
	timeout    time.Duration
	workers    int
	caLog      string
	kind       string
}

func run() error {
	var o options
	flag.StringVar(&o.kubeconfig, "kubeconfig", "", "cluster to use (default: start a localkube from -localkube)")
	flag.StringVar(&o.localkube, "localkube", "bin/localkube", "localkube binary used when -kubeconfig is empty")
	flag.IntVar(&o.owners, "owners", 1000, "owners created at once")
	flag.IntVar(&o.creators, "creators", 32, "parallel create requests")
	flag.IntVar(&o.workers, "workers", 16, "CA workers")
	flag.DurationVar(&o.timeout, "timeout", 2*time.Minute, "give up after this long")
	flag.StringVar(&o.caLog, "ca-log", "", "append the CA's log to this file")
	flag.StringVar(&o.kind, "kind", "pod", "owner kind: pod (the CA's own speed) or deployment (adds kube-controller-manager making ReplicaSets and pods)")
	flag.Parse()
	if o.kind != contract.KindPod && o.kind != contract.KindDeployment {
		return fmt.Errorf("-kind must be pod or deployment, not %q", o.kind)
	}

	work, err := os.MkdirTemp("", "ca-burst-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	if o.kubeconfig == "" {
		dir := filepath.Join(work, "cluster")
		up := exec.Command(o.localkube, "up", "--dir", dir, "--owner-pid", strconv.Itoa(os.Getpid()))
		up.Stdout, up.Stderr = io.Discard, os.Stderr
		if err := up.Run(); err != nil {
			return fmt.Errorf("localkube up (build it with make localkube): %w", err)
		}
		defer func() { _ = exec.Command(o.localkube, "down", "--dir", dir).Run() }()
		o.kubeconfig = filepath.Join(dir, "kubeconfig")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", o.kubeconfig)
	if err != nil {
		return err
	}
	cfg.QPS, cfg.Burst = 1000, 2000
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.timeout)
	defer cancel()

	suffix := strconv.FormatInt(time.Now().Unix()%100000, 36)
	controlNS, appNS := "burst-ctl-"+suffix, "burst-app-"+suffix
	for _, ns := range []string{controlNS, appNS} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		defer func() { _ = client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) }()
	}

	bin := filepath.Join(work, "controller")
	if out, err := exec.Command("go", "build", "-o", bin, "meshtls/cmd/controller").CombinedOutput(); err != nil {
		return fmt.Errorf("go build controller: %v\n%s", err, out)
	}
	proc, admin, err := startCA(bin, o, controlNS)
	if err != nil {
		return err
	}
	defer func() {
		_ = proc.Process.Signal(syscall.SIGTERM)
		_ = proc.Wait()
	}()
	if err := waitReady(ctx, "http://"+admin+"/ready"); err != nil {
		return err
	}
	rssIdle, _ := rss(proc.Process.Pid)

	// An informer, started before the creates, sees every Secret arrive; it
	// re-lists by itself if the server ever drops its watch.
	var mu sync.Mutex
	seen := map[string]time.Time{}
	allSeen := make(chan struct{})
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(appNS),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = contract.OwnerKindLabel }))
	inf := factory.Core().V1().Secrets().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		s, ok := obj.(*corev1.Secret)
		if !ok {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if _, dup := seen[s.Name]; dup {
			return
		}
		seen[s.Name] = time.Now()
		if len(seen) == o.owners {
			close(allSeen)
		}
	}}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return errors.New("the Secret informer did not sync")
	}

	created := make([]time.Time, o.owners)
	names := make([]string, o.owners)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, o.owners)
	next := make(chan int)
	for range o.creators {
		wg.Go(func() {
			for i := range next {
				names[i] = fmt.Sprintf("owner-%04d", i)
				created[i] = time.Now()
				var err error
				if o.kind == contract.KindPod {
					_, err = client.CoreV1().Pods(appNS).Create(ctx, burstPod(names[i], controlNS), metav1.CreateOptions{})
				} else {
					_, err = client.AppsV1().Deployments(appNS).Create(ctx, burstDeployment(names[i], controlNS), metav1.CreateOptions{})
				}
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range o.owners {
		next <- i
	}
	close(next)
	wg.Wait()
	createdAll := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return fmt.Errorf("create pods: %w", err)
	}

	select {
	case <-allSeen:
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		return fmt.Errorf("only %d of %d Secrets after %s", len(seen), o.owners, o.timeout)
	}
	mu.Lock()
	defer mu.Unlock()
	whole := time.Since(start)
	latencies := make([]time.Duration, o.owners)
	var last time.Time
	for i, n := range names {
		t := seen[contract.SecretName(n, o.kind)]
		if t.IsZero() {
			return fmt.Errorf("no Secret seen for %s", n)
		}
		latencies[i] = t.Sub(created[i])
		if t.After(last) {
			last = t
		}
	}
	slices.Sort(latencies)
	rssAfter, _ := rss(proc.Process.Pid)
	peak, _ := hwm(proc.Process.Pid)
	metrics := scrape("http://" + admin + "/metrics")

	fmt.Printf("owners:            %d %ss, created by %d parallel clients in %s\n", o.owners, o.kind, o.creators, createdAll.Round(time.Millisecond))
	fmt.Printf("whole burst:       %s (first create to last Secret)\n", last.Sub(start).Round(time.Millisecond))
	fmt.Printf("per owner:         p50 %s  p99 %s  max %s (owner created to Secret seen)\n",
		pct(latencies, 50), pct(latencies, 99), latencies[len(latencies)-1].Round(time.Millisecond))
	fmt.Printf("throughput:        %.0f Secrets/s\n", float64(o.owners)/whole.Seconds())
	fmt.Printf("CA memory:         RSS %.1f MiB idle, %.1f MiB after, peak %.1f MiB\n", mib(rssIdle), mib(rssAfter), mib(peak))
	fmt.Printf("CA metrics:        %s\n", metrics)
	return nil
}

func burstPod(name, controlNS string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Labels:      map[string]string{contract.ControlPlaneNSLabel: controlNS},
			Annotations: map[string]string{contract.TLSAnnotation: "optional"},
		},
		Spec: corev1.PodSpec{
			SchedulerName: "ca-burst-unscheduled",
			Containers:    []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
		},
	}
}

func burstDeployment(name, controlNS string) *appsv1.Deployment {
	one := int32(1)
	pod := burstPod(name, controlNS)
	pod.Labels["app"] = name
	pod.Labels[contract.KindLabel(contract.KindDeployment)] = name
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: pod.Labels, Annotations: pod.Annotations}, Spec: pod.Spec},
		},
	}
}

var adminRE = regexp.MustCompile(`msg="serving admin endpoints".* addr=(\S+)`)

func startCA(bin string, o options, controlNS string) (*exec.Cmd, string, error) {
	cmd := exec.Command(bin, "ca", "--kubeconfig", o.kubeconfig, "--controller-namespace", controlNS,
		"--admin-addr", "127.0.0.1:0", "--workers", strconv.Itoa(o.workers), "--kube-api-qps", "500", "--kube-api-burst", "1000")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	logTo := io.Writer(io.Discard)
	if o.caLog != "" {
		f, err := os.OpenFile(o.caLog, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, "", err
		}
		logTo = f
	}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			fmt.Fprintln(logTo, sc.Text())
			if m := adminRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addr <- m[1]
				sent = true
			}
		}
	}()
	select {
	case a := <-addr:
		return cmd, a, nil
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return nil, "", errors.New("CA logged no admin address")
	}
}

func waitReady(ctx context.Context, url string) error {
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return errors.New("CA never became ready")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func procStatus(pid int, field string) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			return strconv.Atoi(f[1])
		}
	}
	return 0, fmt.Errorf("no %s", field)
}

func rss(pid int) (int, error) { return procStatus(pid, "VmRSS") }
func hwm(pid int) (int, error) { return procStatus(pid, "VmHWM") }
func mib(kib int) float64      { return float64(kib) / 1024 }

func pct(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	if i > 0 {
		i--
	}
	return sorted[i].Round(time.Millisecond)
}

func scrape(url string) string {
	resp, err := http.Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		for _, p := range []string{"linkerd_ca_certificates_issued_total ", "linkerd_ca_errors_total", "linkerd_ca_issuance_duration_seconds_sum", "linkerd_ca_issuance_duration_seconds_count"} {
			if strings.HasPrefix(l, p) {
				keep = append(keep, l)
			}
		}
	}
	return strings.Join(keep, "; ")
}
