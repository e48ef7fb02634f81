package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"meshtls/localkube/internal/clusterdns"
	"meshtls/localkube/internal/controlplane"
	"meshtls/localkube/internal/kubelet"
	"meshtls/localkube/internal/podnet"
	"meshtls/localkube/internal/procutil"
)

type upOptions struct {
	common
	binDirs []string
	ports   controlplane.Ports
	timeout time.Duration
	owner   int
}

func (o *upOptions) addFlags(cmd *cobra.Command) {
	o.addDir(cmd)
	cmd.Flags().StringSliceVar(&o.binDirs, "bin-dir", nil, "extra dir to map images to binaries, searched before localkube's own dir (repeatable); env LOCALKUBE_BIN_DIR")
	cmd.Flags().IntVar(&o.ports.APIServer, "apiserver-port", 0, "kube-apiserver port on 127.0.0.1 (0: pick a free one)")
	cmd.Flags().IntVar(&o.ports.Etcd, "etcd-port", 0, "etcd client port on 127.0.0.1 (0: pick a free one)")
	cmd.Flags().IntVar(&o.ports.Kubelet, "kubelet-port", 0, "kubelet API port on 127.0.0.1, serving kubectl logs (0: pick a free one)")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 3*time.Minute, "how long up waits for the cluster to be ready")
	cmd.Flags().IntVar(&o.owner, "owner-pid", 0, "stop the cluster when this process ends (for test harnesses)")
}

func (o *upOptions) serveArgs(dir string) []string {
	args := []string{"serve", "--dir", dir, "--timeout", o.timeout.String()}
	if o.owner != 0 {
		args = append(args, "--owner-pid", strconv.Itoa(o.owner))
	}
	for _, d := range o.binDirs {
		args = append(args, "--bin-dir", d)
	}
	for flag, v := range map[string]int{"--apiserver-port": o.ports.APIServer, "--etcd-port": o.ports.Etcd, "--kubelet-port": o.ports.Kubelet} {
		if v != 0 {
			args = append(args, flag, strconv.Itoa(v))
		}
	}
	return args
}

func newUp(stdout, stderr io.Writer) *cobra.Command {
	o := &upOptions{}
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Start a cluster in --dir and return once it is ready",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return runUp(cmd.Context(), o, stdout, stderr) },
	}
	o.addFlags(cmd)
	return cmd
}

func runUp(ctx context.Context, o *upOptions, stdout, stderr io.Writer) error {
	dir, err := o.absDir()
	if err != nil {
		return err
	}
	binDir := selfDir()
	if err := controlplane.CheckBinaries(binDir); err != nil {
		return err
	}
	if err := controlplane.CheckKubeProxyBinary(binDir); err != nil {
		return err
	}
	if err := clusterdns.CheckBinary(defaultBinDirs(o.binDirs)); err != nil {
		return err
	}
	// Refuse at once rather than from the server: no loopback fallback.
	if err := podnet.Check(); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "logs"), 0o755); err != nil {
		return err
	}
	if st, _ := readState(dir); st != nil && !procutil.Alive(st.Pid) {
		// A killed localkube holds its lock until its last thread is gone.
		for deadline := time.Now().Add(10 * time.Second); running(dir) && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
	}
	if running(dir) {
		st, _ := readState(dir)
		if st != nil && st.Phase == "running" {
			fmt.Fprintf(stdout, "localkube already running in %s (pid %d)\nexport KUBECONFIG=%s\n", dir, st.Pid, filepath.Join(dir, "kubeconfig"))
			return nil
		}
		return fmt.Errorf("another localkube is starting or stopping in %s; try again or run `localkube down --dir %s`", dir, dir)
	}
	start := time.Now()
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "logs", "localkube.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, o.serveArgs(dir)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.ExtraFiles = []*os.File{w}
	// Its own session: the cluster outlives this command and its terminal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start localkube serve: %w", err)
	}
	w.Close()
	logf.Close()
	go func() { _ = cmd.Wait() }()

	// The server reports progress lines, then "ready" or "error: ...".
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	deadline := time.After(o.timeout + 10*time.Second)
	for {
		select {
		case line, ok := <-lines:
			switch {
			case !ok:
				return fmt.Errorf("localkube exited during start-up; see %s", filepath.Join(dir, "logs", "localkube.log"))
			case line == "ready":
				fmt.Fprintf(stdout, "localkube is up in %s (%.1fs)\nexport KUBECONFIG=%s\n", dir, time.Since(start).Seconds(), filepath.Join(dir, "kubeconfig"))
				return nil
			case strings.HasPrefix(line, "error: "):
				return exitError{code: 1, msg: strings.TrimPrefix(line, "error: ")}
			default:
				fmt.Fprintln(stderr, line)
			}
		case <-deadline:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return fmt.Errorf("cluster not ready within %s; see %s", o.timeout, filepath.Join(dir, "logs"))
		}
	}
}

func newServe() *cobra.Command {
	o := &upOptions{}
	cmd := &cobra.Command{
		Use:    "serve",
		Short:  "Run the cluster in the foreground (what up starts)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE:   func(cmd *cobra.Command, _ []string) error { return runServe(o) },
	}
	o.addFlags(cmd)
	return cmd
}

// nodeName is the cluster's one Node, which the kubelet registers and
// kube-proxy serves.
const nodeName = "localkube"

// runServe is the running cluster. It writes progress to fd 3 when up
// started it, and runs until SIGTERM or SIGINT.
func runServe(o *upOptions) error {
	report := io.Discard
	if f := os.NewFile(3, "report"); f != nil {
		if _, err := f.Stat(); err == nil {
			report = f
			defer f.Close()
		}
	}
	fail := func(err error) error {
		fmt.Fprintf(report, "error: %v\n", err)
		return err
	}
	dir, err := o.absDir()
	if err != nil {
		return fail(err)
	}
	logger := log.New(os.Stderr, "", log.LstdFlags)
	lock, err := tryLock(lockPath(dir))
	if err != nil {
		return fail(fmt.Errorf("another localkube runs in %s", dir))
	}
	defer lock.Close()

	if err := podnet.Check(); err != nil {
		return fail(err)
	}
	prev, _ := readState(dir)
	if prev == nil {
		prev = &State{}
	}
	if prev.Phase == "running" || prev.Phase == "starting" {
		n := procutil.KillMarked(dir, 3*time.Second)
		msg := fmt.Sprintf("recovering %s: the localkube of a previous run (pid %d) was killed; stopped %d leftover processes", dir, prev.Pid, n)
		logger.Print(msg)
		fmt.Fprintln(report, msg)
	}
	_ = os.RemoveAll(filepath.Join(dir, "pods"))

	block, blockLock, err := podnet.LockBlock(dir, prev.Block)
	if err != nil {
		return fail(err)
	}
	defer blockLock.Close()
	// Holding the block, whatever exists under its names is ours: Setup
	// first removes what a killed run of this block left.
	pnet := podnet.ForBlock(block)
	if err := pnet.Setup(); err != nil {
		_ = pnet.Teardown()
		return fail(fmt.Errorf("pod network %s: %w", pnet.CIDR, err))
	}
	defer func() {
		if err := pnet.Teardown(); err != nil {
			logger.Printf("pod network clean-up: %v", err)
		}
	}()

	binDirs := defaultBinDirs(o.binDirs)
	st := &State{Pid: os.Getpid(), Phase: "starting", Started: time.Now(), BinDirs: binDirs, Block: block}
	if err := writeState(dir, st); err != nil {
		return fail(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	cp, err := controlplane.Start(ctx, controlplane.Options{Dir: dir, BinDir: selfDir(), Want: o.ports, Previous: prev.Ports, ServiceCIDR: pnet.ServiceCIDR.String()})
	if err != nil {
		st.Phase, st.Error = "stopped", err.Error()
		_ = writeState(dir, st)
		return fail(err)
	}
	st.Ports, st.Server = cp.Ports, cp.Server()
	st.Pids = map[string]int{}
	for _, name := range controlplane.Binaries {
		st.Pids[name] = cp.Pid(name)
	}
	_ = writeState(dir, st)

	cfg := cp.RestConfig(cp.PKI.KubeletCert, cp.PKI.KubeletKey)
	cfg.QPS, cfg.Burst = 200, 400
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		cp.Stop(5 * time.Second)
		return fail(err)
	}
	// Pods reach the API server at the node address: a relay there, as
	// kube-apiserver binds one address and host clients use 127.0.0.1.
	enterNode := func(fn func() error) error { return podnet.Enter(pnet.NodeNetnsPath(), fn) }
	podServer, stopRelay, err := relay(enterNode, pnet.NodeIP, cp.Ports.APIServer, logger)
	if err != nil {
		cp.Stop(5 * time.Second)
		return fail(err)
	}
	defer stopRelay()
	// kube-proxy runs in the node namespace, where its rules serve the
	// pods and the host, and reaches the API server through the relay.
	kp := controlplane.KubeProxy{
		Server: podServer, TLSServerName: "kubernetes", NodeName: nodeName,
		NodeIP: pnet.NodeIP, ClusterCIDR: pnet.CIDR.String(), HealthzIP: pnet.NodeLinkIP, Enter: enterNode,
	}
	if err := cp.StartKubeProxy(kp); err != nil {
		cp.Stop(5 * time.Second)
		return fail(err)
	}
	st.Pids[controlplane.KubeProxyName] = cp.Pid(controlplane.KubeProxyName)
	_ = writeState(dir, st)
	kl := kubelet.New(client, kubelet.Config{
		NodeName: nodeName, Dir: dir, BinDirs: binDirs, Net: pnet,
		Server: podServer, CACert: cp.PKI.CACert,
		Port: cp.Ports.Kubelet, Cert: cp.PKI.ServingCert, Key: cp.PKI.ServingKey,
		Log: log.New(os.Stderr, "kubelet: ", log.LstdFlags),
		// Pods ask the kube-dns Service (kube-proxy routes it to CoreDNS).
		ClusterDNS: []net.IP{pnet.DNSServiceIP()},
	})
	kctx, kstop := context.WithCancel(context.Background())
	kdone := make(chan error, 1)
	go func() { kdone <- kl.Run(kctx) }()

	shutdown := func(reason string) {
		logger.Printf("stopping: %s", reason)
		kstop()
		select {
		case err := <-kdone:
			if err != nil && kctx.Err() == nil {
				logger.Printf("kubelet: %v", err)
			}
		case <-time.After(30 * time.Second):
			logger.Print("kubelet did not stop within 30s")
		}
		cp.Stop(10 * time.Second)
		procutil.KillMarked(dir, time.Second)
		st.Phase = "stopped"
		_ = writeState(dir, st)
	}

	select {
	case <-kl.Ready():
	case err := <-kdone:
		shutdown("kubelet failed")
		return fail(fmt.Errorf("kubelet: %v", err))
	case name := <-cp.Exited:
		shutdown(name + " exited")
		return fail(fmt.Errorf("%s exited during start-up; see %s", name, controlplane.LogPath(dir, name)))
	case <-ctx.Done():
		shutdown("signalled during start-up")
		return fail(fmt.Errorf("interrupted"))
	}
	if err := waitSystemReady(ctx, client); err != nil {
		shutdown("not ready")
		return fail(err)
	}
	// Ready means pods resolve Service names: CoreDNS answers. It starts
	// while kube-proxy syncs.
	if err := clusterdns.Ensure(ctx, client, pnet.DNSServiceIP()); err != nil {
		shutdown("cluster DNS")
		return fail(err)
	}
	if err := cp.WaitKubeProxy(ctx, kp, o.timeout); err != nil {
		shutdown("kube-proxy not ready")
		return fail(err)
	}
	if err := clusterdns.WaitReady(ctx, client, 60*time.Second); err != nil {
		shutdown("cluster DNS not ready")
		return fail(err)
	}
	st.Phase, st.Ready = "running", time.Since(st.Started)
	_ = writeState(dir, st)
	logger.Printf("ready after %s: kube-apiserver %s, pod network %s and services %s in %s", st.Ready.Round(time.Millisecond), cp.Server(), pnet.CIDR, pnet.ServiceCIDR, pnet.NodeNetns)
	fmt.Fprintln(report, "ready")
	if f, ok := report.(*os.File); ok {
		f.Close()
	}

	select {
	case <-ctx.Done():
		shutdown("signalled")
		return nil
	case <-ownerGone(o.owner):
		shutdown(fmt.Sprintf("owner process %d ended", o.owner))
		return nil
	case name := <-cp.Exited:
		shutdown(name + " exited unexpectedly; see " + controlplane.LogPath(dir, name))
		return fmt.Errorf("%s exited", name)
	case err := <-kdone:
		shutdown(fmt.Sprintf("kubelet stopped: %v", err))
		return err
	}
}

// ownerGone is closed when pid ends; never for pid 0.
func ownerGone(pid int) <-chan struct{} {
	ch := make(chan struct{})
	if pid == 0 {
		return ch
	}
	go func() {
		for procutil.Alive(pid) {
			time.Sleep(time.Second)
		}
		close(ch)
	}()
	return ch
}
