package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	remotecommandconsts "k8s.io/apimachinery/pkg/util/remotecommand"
	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"

	"meshtls/localkube/internal/podnet"
	"meshtls/localkube/internal/procutil"
)

// The kubelet's streaming endpoints, which kube-apiserver proxies
// `kubectl port-forward` and `kubectl exec` to. The protocols (SPDY and
// WebSocket framing, stream set-up, exit status) are the Kubernetes
// module's own; localkube supplies the pod side: a dial from inside the
// pod's network namespace, or a process started there.

const streamIdleTimeout = 4 * time.Hour

// sandbox is what the streaming endpoints need of a running pod.
type sandbox struct {
	uid        types.UID
	netns      string
	thread     *podThread
	dir        string
	clusterDir string
	pod        *v1.Pod
}

func (k *Kubelet) sandboxOf(ns, name string) (*sandbox, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, w := range k.workers {
		w.mu.Lock()
		p, netns, thread := w.latest, w.sandbox, w.thread
		w.mu.Unlock()
		if p.Namespace == ns && p.Name == name && netns != "" {
			return &sandbox{uid: p.UID, netns: netns, thread: thread, dir: w.dir, clusterDir: k.cfg.Dir, pod: p}, true
		}
	}
	return nil, false
}

// streamer implements the module's PortForwarder and Executor for one pod.
type streamer struct{ sb *sandbox }

// PortForward connects the stream to localhost:port in the pod, as a
// container runtime does: the socket is made inside the pod's namespace.
func (s streamer) PortForward(ctx context.Context, _ string, _ string, port int32, stream io.ReadWriteCloser) error {
	defer func() { _ = stream.Close() }()
	var conn net.Conn
	err := podnet.Enter(s.sb.netns, func() error {
		// The socket belongs to the namespace of the thread that creates it.
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))))
		conn = c
		return err
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s: port %d: %w", s.sb.pod.Namespace, s.sb.pod.Name, port, err)
	}
	defer func() { _ = conn.Close() }()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(conn, stream); _ = conn.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(stream, conn); done <- struct{}{} }()
	select {
	case <-done:
	case <-ctx.Done():
	}
	return nil
}

// ExecInContainer runs cmd in the pod's namespace with the container's
// user, from the pod dir. cmd[0] is a path on the host or a name looked
// up in localkube's PATH (the pod has no image filesystem). No TTY.
func (s streamer) ExecInContainer(ctx context.Context, _ string, _ string, container string, cmd []string, in io.Reader, out, errw io.WriteCloser, tty bool, _ <-chan remotecommand.TerminalSize, _ time.Duration) error {
	if tty {
		return errors.New("localkube: exec with a TTY is not supported (drop -t)")
	}
	var spec *v1.Container
	for i := range s.sb.pod.Spec.Containers {
		if s.sb.pod.Spec.Containers[i].Name == container {
			spec = &s.sb.pod.Spec.Containers[i]
		}
	}
	if spec == nil {
		return fmt.Errorf("container %q not found in pod %s/%s", container, s.sb.pod.Namespace, s.sb.pod.Name)
	}
	if len(cmd) == 0 {
		return errors.New("no command")
	}
	bin, err := exec.LookPath(cmd[0])
	if err != nil {
		return fmt.Errorf("%s: %w", cmd[0], err)
	}
	c := exec.CommandContext(ctx, bin, cmd[1:]...)
	c.Args[0] = cmd[0]
	c.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + s.sb.dir, "HOSTNAME=" + s.sb.pod.Name,
		EnvPodIP + "=" + s.sb.pod.Status.PodIP, EnvPodDir + "=" + s.sb.dir}
	c.Dir = s.sb.dir
	c.Stdin, c.Stdout, c.Stderr = in, out, errw
	if out == nil {
		c.Stdout = io.Discard
	}
	if errw == nil {
		c.Stderr = io.Discard
	}
	procutil.Prepare(c, s.sb.clusterDir)
	if err := runAs(c, s.sb.pod, spec); err != nil {
		return err
	}
	// In the pod's namespaces, so that it resolves names as the pod does.
	err = s.sb.thread.run(c.Start)
	closeExtra(c)
	if err != nil {
		return err
	}
	err = c.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return utilexec.CodeExitError{Err: err, Code: ee.ExitCode()}
	}
	return err
}

// streamPath splits /PREFIX/NS/POD[/UID][/CONTAINER] as kube-apiserver
// sends it.
func streamPath(path, prefix string) []string {
	return strings.Split(strings.Trim(strings.TrimPrefix(path, prefix), "/"), "/")
}

func (k *Kubelet) portForward(w http.ResponseWriter, r *http.Request) {
	parts := streamPath(r.URL.Path, "/portForward/")
	if len(parts) < 2 || len(parts) > 3 {
		http.Error(w, "want /portForward/NAMESPACE/POD[/UID]", http.StatusBadRequest)
		return
	}
	sb, ok := k.sandboxOf(parts[0], parts[1])
	if !ok || len(parts) == 3 && types.UID(parts[2]) != sb.uid {
		http.Error(w, fmt.Sprintf("pod %s/%s is not running on node %s", parts[0], parts[1], k.cfg.NodeName), http.StatusNotFound)
		return
	}
	opts, err := portforward.NewV4Options(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	portforward.ServePortForward(w, r, streamer{sb}, sb.pod.Name, string(sb.uid), opts, streamIdleTimeout,
		remotecommandconsts.DefaultStreamCreationTimeout, portforward.SupportedProtocols)
}

func (k *Kubelet) exec(w http.ResponseWriter, r *http.Request) {
	parts := streamPath(r.URL.Path, "/exec/")
	if len(parts) < 3 || len(parts) > 4 {
		http.Error(w, "want /exec/NAMESPACE/POD[/UID]/CONTAINER", http.StatusBadRequest)
		return
	}
	sb, ok := k.sandboxOf(parts[0], parts[1])
	if !ok || len(parts) == 4 && types.UID(parts[2]) != sb.uid {
		http.Error(w, fmt.Sprintf("pod %s/%s is not running on node %s", parts[0], parts[1], k.cfg.NodeName), http.StatusNotFound)
		return
	}
	opts, err := remotecommand.NewOptions(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	remotecommand.ServeExec(w, r, streamer{sb}, sb.pod.Name, string(sb.uid), parts[len(parts)-1], r.URL.Query()["command"], opts,
		streamIdleTimeout, remotecommandconsts.DefaultStreamCreationTimeout, remotecommandconsts.SupportedStreamingProtocols)
}
