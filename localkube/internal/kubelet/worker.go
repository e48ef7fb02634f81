package kubelet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"meshtls/localkube/internal/procutil"
)

// Restart back-off: much shorter than kubelet's 10s..5m so that a crash
// loop shows up quickly in tests, but still doubling.
const (
	initialBackoff = time.Second
	maxBackoff     = 30 * time.Second
	// A container that ran this long before exiting starts its back-off over.
	backoffReset = time.Minute
)

// containerRun is the process side of one container of a pod.
type containerRun struct {
	spec   v1.Container
	init   bool
	gen    int // increments with each start
	binary string
	pid    int

	running   bool
	startedAt time.Time
	ready     bool // readiness verdict (true when there is no readiness probe)
	started   bool // startup verdict
	cancel    context.CancelFunc
	killTimer *time.Timer

	term         *v1.ContainerStateTerminated // state when stopped for good
	lastTerm     *v1.ContainerStateTerminated
	restartCount int32
	waitReason   string
	waitMessage  string
	backoff      time.Duration
	nextStart    time.Time
	done         bool // init container finished successfully
	warned       string
	// hookPending: the postStart hook of this run has not returned; the
	// containers after it wait, as on a kubelet.
	hookPending bool
}

// hookResult is a postStart hook's outcome.
type hookResult struct {
	container string
	gen       int
	err       error
}

type exitEvent struct {
	container string
	gen       int
	state     *v1.ContainerStateTerminated
}

// podWorker owns one pod bound to the node: its addresses, directory,
// volumes and processes. Only its own goroutine touches its state; process
// exits and probe verdicts arrive as events.
type podWorker struct {
	k   *Kubelet
	uid types.UID

	mu      sync.Mutex
	latest  *v1.Pod
	gone    bool
	sandbox string     // netns path while the pod's namespace exists, for exec and port-forward
	thread  *podThread // starts the pod's processes, while its namespace exists

	wake    chan struct{}
	exits   chan exitEvent
	probes  chan probeResult
	hooks   chan hookResult
	stopped chan struct{}

	pod       *v1.Pod // latest spec with our addresses filled in
	dir       string
	ipIndex   int
	podIP     net.IP
	netns     string // path of the pod's network namespace
	haveIP    bool
	startTime metav1.Time

	volumes        map[string]string
	volErr         error
	volumesWritten bool
	tokens         map[string]*token

	inits, containers []*containerRun
	conditions        map[v1.PodConditionType]v1.PodCondition
	lastSent          *v1.PodStatus
}

func newPodWorker(k *Kubelet, pod *v1.Pod) *podWorker {
	w := &podWorker{
		k: k, uid: pod.UID, latest: pod,
		wake: make(chan struct{}, 1), exits: make(chan exitEvent, 16), probes: make(chan probeResult, 16), hooks: make(chan hookResult, 4),
		stopped: make(chan struct{}), tokens: map[string]*token{}, volumes: map[string]string{},
		conditions: map[v1.PodConditionType]v1.PodCondition{},
		dir:        filepath.Join(k.cfg.Dir, "pods", pod.Namespace+"_"+pod.Name+"_"+string(pod.UID)),
	}
	for _, c := range pod.Spec.InitContainers {
		w.inits = append(w.inits, &containerRun{spec: c, init: true})
	}
	for _, c := range pod.Spec.Containers {
		w.containers = append(w.containers, &containerRun{spec: c})
	}
	return w
}

func (w *podWorker) update(pod *v1.Pod) {
	w.mu.Lock()
	w.latest = pod
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) markGone() {
	w.mu.Lock()
	w.gone = true
	w.mu.Unlock()
	w.poke()
}

func (w *podWorker) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *podWorker) run(ctx context.Context) {
	defer close(w.stopped)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if finished := w.sync(ctx); finished {
			return
		}
		select {
		case <-ctx.Done():
			// localkube is stopping: end the processes, leave the API alone.
			w.terminate(min(w.grace(), 5*time.Second))
			w.release()
			return
		case <-w.wake:
		case <-tick.C:
		case ev := <-w.exits:
			w.handleExit(ev)
		case r := <-w.probes:
			w.handleProbe(ctx, r)
		case r := <-w.hooks:
			w.handleHook(r)
		}
	}
}

func (w *podWorker) grace() time.Duration {
	if g := w.pod.DeletionGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
		return time.Duration(*g) * time.Second
	}
	return 30 * time.Second
}

// sync moves the pod one step towards its spec and reports status. It
// returns true once the pod is gone and the worker should end.
func (w *podWorker) sync(ctx context.Context) bool {
	w.mu.Lock()
	latest, gone := w.latest, w.gone
	w.mu.Unlock()
	w.pod = latest.DeepCopy()
	if w.haveIP {
		w.fillAddresses()
	}

	if gone || w.pod.DeletionTimestamp != nil {
		w.terminate(w.grace())
		// Clean up before the object goes, so that a pod that is gone from
		// the API has nothing left on the node.
		w.release()
		if !gone {
			w.finalDelete(ctx)
		}
		return true
	}
	if !w.haveIP {
		i, ip, err := w.k.ipam.allocate(latest.Status.PodIP)
		if err != nil {
			w.k.log.Printf("pod %s/%s: %v", w.pod.Namespace, w.pod.Name, err)
			return false
		}
		// The sandbox: the namespace exists before any container starts,
		// init containers included, and every container joins it.
		nsPath, err := w.k.cfg.Net.AddPod(i)
		if err != nil {
			w.k.ipam.release(i)
			w.k.log.Printf("pod %s/%s: %v", w.pod.Namespace, w.pod.Name, err)
			w.k.event(w.pod, v1.EventTypeWarning, "FailedCreatePodSandBox", err.Error())
			return false
		}
		w.ipIndex, w.podIP, w.netns, w.haveIP = i, ip, nsPath, true
		w.fillAddresses()
		for _, d := range []string{"volumes", "logs", "containers"} {
			_ = os.MkdirAll(filepath.Join(w.dir, d), 0o755)
		}
		thread, err := w.newSandboxThread()
		if err != nil {
			w.release()
			w.k.log.Printf("pod %s/%s: %v", w.pod.Namespace, w.pod.Name, err)
			w.k.event(w.pod, v1.EventTypeWarning, "FailedCreatePodSandBox", err.Error())
			return false
		}
		w.mu.Lock()
		w.sandbox, w.thread = nsPath, thread
		w.mu.Unlock()
		w.startTime = metav1.Now()
	}
	if isTerminal(w.lastSent) {
		return false
	}
	vols, err := w.syncVolumes(ctx)
	for k, v := range vols {
		w.volumes[k] = v
	}
	if err != nil && w.volErr == nil || err != nil && w.volErr.Error() != err.Error() {
		w.k.event(w.pod, v1.EventTypeWarning, "FailedMount", err.Error())
	}
	w.volErr = err
	if w.volumesWritten {
		w.syncContainers(ctx)
	}
	w.writeStatus(ctx)
	return false
}

func isTerminal(s *v1.PodStatus) bool {
	return s != nil && (s.Phase == v1.PodSucceeded || s.Phase == v1.PodFailed)
}

func (w *podWorker) fillAddresses() {
	w.pod.Status.PodIP = w.podIP.String()
	w.pod.Status.PodIPs = []v1.PodIP{{IP: w.podIP.String()}}
	w.pod.Status.HostIP = hostIP
	w.pod.Status.HostIPs = []v1.HostIP{{IP: hostIP}}
}

func (w *podWorker) syncContainers(ctx context.Context) {
	now := time.Now()
	policy := w.pod.Spec.RestartPolicy
	for _, c := range w.inits {
		if c.done {
			continue
		}
		if c.running || (c.term != nil && policy == v1.RestartPolicyNever) || now.Before(c.nextStart) {
			return
		}
		w.start(ctx, c)
		return
	}
	// Containers start in order, and one whose postStart hook has not
	// returned holds back the rest (the kubelet runs the hook before it
	// starts the next container).
	for _, c := range w.containers {
		if c.hookPending {
			return
		}
		if c.running || c.term != nil || now.Before(c.nextStart) {
			continue
		}
		w.start(ctx, c)
		if c.hookPending {
			return
		}
	}
}

func (w *podWorker) start(ctx context.Context, c *containerRun) {
	bin, err := w.k.images.resolve(c.spec.Image)
	if err != nil {
		c.waitReason, c.waitMessage = ReasonImageNotMapped, err.Error()
		if c.warned != err.Error() {
			c.warned = err.Error()
			w.k.event(w.pod, v1.EventTypeWarning, ReasonImageNotMapped, err.Error())
		}
		return
	}
	rw := newMountRewriter(&c.spec, w.volumes)
	env, envMap, err := w.containerEnv(&c.spec, rw)
	if err != nil {
		c.waitReason, c.waitMessage = "CreateContainerConfigError", err.Error()
		return
	}
	cmd := exec.Command(bin, argv(&c.spec, envMap, rw)...)
	cmd.Env = env
	cmd.Dir = w.dir
	if c.spec.WorkingDir != "" {
		if host, ok := rw.hostFor(c.spec.WorkingDir); ok {
			cmd.Dir = host
		}
	}
	logf, err := os.OpenFile(w.logPath(c.spec.Name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.waitReason, c.waitMessage = "RunContainerError", err.Error()
		return
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	procutil.Prepare(cmd, w.k.cfg.Dir)
	if err := runAs(cmd, w.pod, &c.spec); err != nil {
		c.waitReason, c.waitMessage = "CreateContainerConfigError", err.Error()
		return
	}
	// The process inherits the namespaces of the thread that starts it.
	err = w.thread.run(cmd.Start)
	closeExtra(cmd)
	if err != nil {
		c.waitReason, c.waitMessage = "RunContainerError", err.Error()
		w.scheduleRestart(c, time.Now())
		return
	}
	if c.gen > 0 {
		c.restartCount++
	}
	c.gen++
	c.binary, c.pid = bin, cmd.Process.Pid
	c.running, c.startedAt = true, time.Now()
	c.term, c.waitReason, c.waitMessage = nil, "", ""
	c.ready = c.spec.ReadinessProbe == nil
	c.started = c.spec.StartupProbe == nil
	_ = os.WriteFile(filepath.Join(w.dir, "containers", c.spec.Name+".pid"), []byte(strconv.Itoa(c.pid)+"\n"), 0o644)
	w.k.event(w.pod, v1.EventTypeNormal, "Started", fmt.Sprintf("Started container %s (pid %d, %s)", c.spec.Name, c.pid, bin))

	gen, name, startedAt := c.gen, c.spec.Name, c.startedAt
	go func() {
		err := cmd.Wait()
		st := &v1.ContainerStateTerminated{StartedAt: metav1.NewTime(startedAt), FinishedAt: metav1.Now(),
			ContainerID: containerID(cmd.Process.Pid)}
		if ps := cmd.ProcessState; ps != nil {
			ws := ps.Sys().(syscall.WaitStatus)
			switch {
			case ws.Signaled():
				st.Signal = int32(ws.Signal())
				st.ExitCode = 128 + int32(ws.Signal())
				st.Reason = "Error"
				st.Message = "killed by signal " + ws.Signal().String()
			default:
				st.ExitCode = int32(ws.ExitStatus())
				st.Reason = "Completed"
				if st.ExitCode != 0 {
					st.Reason = "Error"
				}
			}
		} else if err != nil {
			st.ExitCode, st.Reason, st.Message = 128, "Error", err.Error()
		}
		select {
		case w.exits <- exitEvent{container: name, gen: gen, state: st}:
		case <-w.stopped:
		}
	}()
	if c.init {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	c.cancel = cancel
	if ls := c.spec.Lifecycle; ls != nil && ls.PostStart != nil && ls.PostStart.Exec != nil {
		c.hookPending = true
		hook := ls.PostStart.Exec.Command
		go func() {
			err := w.runHook(pctx, c.spec, bin, hook, env)
			select {
			case w.hooks <- hookResult{container: name, gen: gen, err: err}:
			case <-w.stopped:
			}
		}()
	}
	podIP := w.podIP.String()
	if p := c.spec.StartupProbe; p != nil {
		go runProbe(pctx, startupProbe, p, &c.spec, podIP, gen, w.probes)
	} else {
		w.startProbes(pctx, c, podIP)
	}
}

func (w *podWorker) startProbes(ctx context.Context, c *containerRun, podIP string) {
	if p := c.spec.ReadinessProbe; p != nil {
		go runProbe(ctx, readinessProbe, p, &c.spec, podIP, c.gen, w.probes)
	}
	if p := c.spec.LivenessProbe; p != nil {
		go runProbe(ctx, livenessProbe, p, &c.spec, podIP, c.gen, w.probes)
	}
}

func containerID(pid int) string { return "localkube://" + strconv.Itoa(pid) }

func (w *podWorker) logPath(container string) string {
	return filepath.Join(w.dir, "logs", container+".log")
}

func (w *podWorker) find(name string) *containerRun {
	for _, c := range append(append([]*containerRun{}, w.inits...), w.containers...) {
		if c.spec.Name == name {
			return c
		}
	}
	return nil
}

func (w *podWorker) handleExit(ev exitEvent) {
	c := w.find(ev.container)
	if c == nil || c.gen != ev.gen {
		return
	}
	c.running, c.ready, c.pid, c.hookPending = false, false, 0, false
	if c.cancel != nil {
		c.cancel()
	}
	if c.killTimer != nil {
		c.killTimer.Stop()
	}
	_ = os.Remove(filepath.Join(w.dir, "containers", c.spec.Name+".pid"))
	c.term = ev.state
	if c.init && ev.state.ExitCode == 0 {
		c.done = true
		return
	}
	policy := w.pod.Spec.RestartPolicy
	restart := policy == v1.RestartPolicyAlways || (policy == v1.RestartPolicyOnFailure && ev.state.ExitCode != 0)
	if c.init {
		restart = policy != v1.RestartPolicyNever
	}
	if !restart {
		return
	}
	c.lastTerm, c.term = ev.state, nil
	w.scheduleRestart(c, ev.state.FinishedAt.Time)
	w.k.event(w.pod, v1.EventTypeWarning, "BackOff", c.waitMessage)
}

func (w *podWorker) scheduleRestart(c *containerRun, finished time.Time) {
	if !c.startedAt.IsZero() && finished.Sub(c.startedAt) > backoffReset {
		c.backoff = 0
	}
	if c.backoff == 0 {
		c.backoff = initialBackoff
	} else {
		c.backoff = min(c.backoff*2, maxBackoff)
	}
	c.nextStart = time.Now().Add(c.backoff)
	if c.waitReason == "" {
		c.waitReason = "CrashLoopBackOff"
		c.waitMessage = fmt.Sprintf("back-off %s restarting failed container=%s pod=%s", c.backoff, c.spec.Name, w.pod.Name)
	}
	time.AfterFunc(c.backoff, w.poke)
}

func (w *podWorker) handleProbe(ctx context.Context, r probeResult) {
	c := w.find(r.container)
	if c == nil || c.gen != r.gen || !c.running {
		return
	}
	switch r.kind {
	case readinessProbe:
		c.ready = r.ok
		if !r.ok {
			w.k.event(w.pod, v1.EventTypeWarning, "Unhealthy", "Readiness probe failed: "+r.message)
		}
	case startupProbe:
		if r.ok {
			c.started = true
			pctx, cancel := context.WithCancel(ctx)
			c.cancel()
			c.cancel = cancel
			w.startProbes(pctx, c, w.podIP.String())
			return
		}
		fallthrough
	case livenessProbe:
		w.k.event(w.pod, v1.EventTypeWarning, "Unhealthy", string(r.kind)+" probe failed: "+r.message)
		w.k.event(w.pod, v1.EventTypeNormal, "Killing", fmt.Sprintf("Container %s failed %s probe, will be restarted", c.spec.Name, r.kind))
		c.ready = false
		w.kill(c, w.grace())
	}
}

// handleHook ends a postStart hook's wait. A failed hook kills the
// container, which then restarts as its pod's policy says, as the kubelet
// does (event FailedPostStartHook).
func (w *podWorker) handleHook(r hookResult) {
	c := w.find(r.container)
	if c == nil || c.gen != r.gen || !c.running {
		return
	}
	c.hookPending = false
	if r.err == nil {
		w.poke()
		return
	}
	msg := fmt.Sprintf("PostStartHookError: %v", r.err)
	w.k.event(w.pod, v1.EventTypeWarning, "FailedPostStartHook", fmt.Sprintf("container %s: %s", c.spec.Name, msg))
	w.k.event(w.pod, v1.EventTypeNormal, "Killing", fmt.Sprintf("FailedPostStartHook: container %s will be restarted", c.spec.Name))
	c.ready = false
	w.kill(c, w.grace())
}

// runHook runs an exec lifecycle hook as the kubelet would in the
// container: its user, environment and the pod's namespaces. The pod has
// no image filesystem: "/NAME" of the container's own image (the proxy's
// "/proxy await") is the binary the image maps to; any other command is
// a host path or a name in localkube's PATH, as for kubectl exec. It ends
// when the container does.
func (w *podWorker) runHook(ctx context.Context, spec v1.Container, bin string, command, env []string) error {
	if len(command) == 0 {
		return fmt.Errorf("exec hook has no command")
	}
	path := command[0]
	if path == "/"+ImageName(spec.Image) {
		path = bin
	} else if p, err := exec.LookPath(path); err != nil {
		return fmt.Errorf("%s: %w", command[0], err)
	} else {
		path = p
	}
	cmd := exec.CommandContext(ctx, path, command[1:]...)
	cmd.Args[0] = command[0]
	cmd.Env = env
	cmd.Dir = w.dir
	out := &boundedBuffer{max: 4 << 10}
	cmd.Stdout, cmd.Stderr = out, out
	procutil.Prepare(cmd, w.k.cfg.Dir)
	if err := runAs(cmd, w.pod, &spec); err != nil {
		return err
	}
	err := w.thread.run(cmd.Start)
	closeExtra(cmd)
	if err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		if s := strings.TrimSpace(out.String()); s != "" {
			return fmt.Errorf("%s: %w: %s", strings.Join(command, " "), err, s)
		}
		return fmt.Errorf("%s: %w", strings.Join(command, " "), err)
	}
	return nil
}

// boundedBuffer keeps the first max bytes written to it.
type boundedBuffer struct {
	mu  sync.Mutex
	b   []byte
	max int
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - len(b.b); room > 0 {
		b.b = append(b.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

func (b *boundedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}

// kill sends SIGTERM to the container's process group and SIGKILL after grace.
func (w *podWorker) kill(c *containerRun, grace time.Duration) {
	if !c.running {
		return
	}
	if c.cancel != nil {
		c.cancel()
	}
	pid := c.pid
	procutil.SignalGroup(pid, syscall.SIGTERM)
	if c.killTimer != nil {
		c.killTimer.Stop()
	}
	c.killTimer = time.AfterFunc(grace, func() { procutil.SignalGroup(pid, syscall.SIGKILL) })
}

// terminate stops every running process: SIGTERM, then SIGKILL after
// grace, and waits for them to be reaped.
func (w *podWorker) terminate(grace time.Duration) {
	all := append(append([]*containerRun{}, w.inits...), w.containers...)
	running := func() int {
		n := 0
		for _, c := range all {
			if c.running {
				n++
			}
		}
		return n
	}
	if running() == 0 {
		return
	}
	for _, c := range all {
		if c.running {
			if c.cancel != nil {
				c.cancel()
			}
			if c.killTimer != nil {
				c.killTimer.Stop()
			}
			procutil.SignalGroup(c.pid, syscall.SIGTERM)
		}
	}
	killAt := time.After(grace)
	giveUp := time.After(grace + 10*time.Second)
	for running() > 0 {
		select {
		case ev := <-w.exits:
			if c := w.find(ev.container); c != nil && c.gen == ev.gen {
				c.running, c.term = false, ev.state
				_ = os.Remove(filepath.Join(w.dir, "containers", c.spec.Name+".pid"))
			}
		case <-killAt:
			for _, c := range all {
				if c.running {
					procutil.SignalGroup(c.pid, syscall.SIGKILL)
				}
			}
		case <-giveUp:
			w.k.log.Printf("pod %s/%s: processes did not exit after SIGKILL", w.pod.Namespace, w.pod.Name)
			return
		}
	}
}

// finalDelete removes the pod object once its processes are gone, as
// kubelet does after graceful termination.
func (w *podWorker) finalDelete(ctx context.Context) {
	zero := int64(0)
	uid := w.uid
	for attempt := 0; attempt < 5; attempt++ {
		err := w.k.client.CoreV1().Pods(w.pod.Namespace).Delete(ctx, w.pod.Name,
			metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
		if err == nil || apierrors.IsNotFound(err) || apierrors.IsConflict(err) || ctx.Err() != nil {
			return
		}
		w.k.log.Printf("pod %s/%s: final delete: %v", w.pod.Namespace, w.pod.Name, err)
		time.Sleep(time.Second)
	}
}

// newSandboxThread writes the pod's /etc files and starts the thread its
// processes are started from.
func (w *podWorker) newSandboxThread() (*podThread, error) {
	if err := w.writePodEtc(); err != nil {
		return nil, err
	}
	return newPodThread(w.netns, w.podMounts())
}

func (w *podWorker) release() {
	if w.haveIP {
		w.mu.Lock()
		if w.thread != nil {
			w.thread.close()
		}
		w.sandbox, w.thread = "", nil
		w.mu.Unlock()
		w.k.cfg.Net.RemovePod(w.ipIndex)
		w.k.ipam.release(w.ipIndex)
		w.haveIP = false
	}
	_ = os.RemoveAll(w.dir)
}
