// Package controlplane runs etcd, kube-apiserver and kube-controller-manager
// as child processes bound to loopback, with a PKI of their own.
package controlplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"meshtls/localkube/internal/procutil"
)

// Binaries are the control-plane programs localkube needs in its bin dir.
var Binaries = []string{"etcd", "kube-apiserver", "kube-controller-manager"}

// Ports are the loopback ports the control plane listens on.
type Ports struct {
	APIServer int `json:"apiserver"`
	Etcd      int `json:"etcd"`
	EtcdPeer  int `json:"etcdPeer"`
	Kubelet   int `json:"kubelet"`
}

// Options configure Start.
type Options struct {
	Dir    string // absolute cluster dir
	BinDir string // where etcd, kube-apiserver and kube-controller-manager are
	// Wanted ports: a non-zero port must be free or Start fails; zero picks
	// the previous run's port if free, else any free port.
	Want     Ports
	Previous Ports
	// ServiceCIDR is the cluster's ClusterIP range (per cluster, from
	// podnet.ServiceCIDR), given to kube-apiserver and kube-proxy.
	ServiceCIDR string
}

// ControlPlane is a running control plane.
type ControlPlane struct {
	opts       Options
	PKI        PKI
	Ports      Ports
	Kubeconfig string
	procs      []*child
	// Exited receives the name of a component that stopped on its own.
	Exited chan string
	// enter, when set, starts the next spawned process inside a network
	// namespace (kube-proxy's).
	enter func(fn func() error) error
}

type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
}

// Pid is the process id of a running component.
func (c *ControlPlane) Pid(name string) int {
	for _, p := range c.procs {
		if p.name == name {
			return p.cmd.Process.Pid
		}
	}
	return 0
}

// LogPath is where a component writes its output.
func LogPath(dir, name string) string { return filepath.Join(dir, "logs", name+".log") }

// CheckBinaries names the first missing control-plane binary.
func CheckBinaries(binDir string) error {
	for _, b := range Binaries {
		p := filepath.Join(binDir, b)
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("missing binary %s: run `make localkube` in the repository root", p)
		}
	}
	return nil
}

// Start brings the control plane up and returns once kube-apiserver's
// /readyz answers ok and the controller manager runs. On error everything
// it started is stopped again.
func Start(ctx context.Context, opts Options) (_ *ControlPlane, err error) {
	if err := CheckBinaries(opts.BinDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(opts.Dir, "logs"), 0o755); err != nil {
		return nil, err
	}
	pki, err := ensurePKI(filepath.Join(opts.Dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("generate certificates: %w", err)
	}
	fp, err := ensureFrontProxy(filepath.Join(opts.Dir, "pki"))
	if err != nil {
		return nil, fmt.Errorf("generate front-proxy certificates: %w", err)
	}
	cp := &ControlPlane{opts: opts, PKI: pki, Exited: make(chan string, 4),
		Kubeconfig: filepath.Join(opts.Dir, "kubeconfig")}
	defer func() {
		if err != nil {
			cp.Stop(5 * time.Second)
		}
	}()
	if cp.Ports, err = choosePorts(opts.Want, opts.Previous); err != nil {
		return nil, err
	}
	if err := cp.writeKubeconfigs(); err != nil {
		return nil, err
	}

	etcdURL := "http://127.0.0.1:" + strconv.Itoa(cp.Ports.Etcd)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(cp.Ports.EtcdPeer)
	if err := cp.spawn("etcd",
		"--name=localkube",
		"--data-dir="+filepath.Join(opts.Dir, "etcd"),
		"--listen-client-urls="+etcdURL, "--advertise-client-urls="+etcdURL,
		"--listen-peer-urls="+peerURL, "--initial-advertise-peer-urls="+peerURL,
		"--initial-cluster=localkube="+peerURL,
		// A throwaway dev cluster: fsync per write would dominate pod churn.
		"--unsafe-no-fsync",
		"--log-level=warn",
	); err != nil {
		return nil, err
	}
	if err := cp.waitTCP(ctx, "etcd", cp.Ports.Etcd, 20*time.Second); err != nil {
		return nil, err
	}

	if err := cp.spawn("kube-apiserver",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(cp.Ports.APIServer),
		"--cert-dir="+filepath.Join(opts.Dir, "pki"),
		"--tls-cert-file="+pki.ServingCert, "--tls-private-key-file="+pki.ServingKey,
		"--client-ca-file="+pki.CACert,
		"--kubelet-client-certificate="+pki.ServingCert, "--kubelet-client-key="+pki.ServingKey,
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+pki.SAPub,
		"--service-account-signing-key-file="+pki.SAKey,
		"--authorization-mode=Node,RBAC",
		"--enable-admission-plugins=NodeRestriction",
		"--service-cluster-ip-range="+opts.ServiceCIDR,
		// The "kubernetes" Service cannot have loopback endpoints.
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		// API aggregation: the API server proxies to an APIService's pods
		// with the front-proxy client certificate and request headers, and
		// dials the Service's endpoints directly: kube-proxy's rules live
		// in the node namespace, not where the API server runs.
		"--requestheader-client-ca-file="+fp.CACert,
		"--requestheader-allowed-names="+FrontProxyClientName,
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+fp.ClientCert, "--proxy-client-key-file="+fp.ClientKey,
		"--enable-aggregator-routing=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
	); err != nil {
		return nil, err
	}
	if err := cp.waitReady(ctx, 90*time.Second); err != nil {
		return nil, err
	}

	if err := cp.spawn("kube-controller-manager",
		"--kubeconfig="+filepath.Join(opts.Dir, "pki", "controller-manager.kubeconfig"),
		"--secure-port=0",
		"--leader-elect=false",
		"--controllers=*",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file="+pki.SAKey,
		"--root-ca-file="+pki.CACert,
		"--cluster-signing-cert-file="+pki.CACert, "--cluster-signing-key-file="+pki.CAKey,
		"--kube-api-qps=200", "--kube-api-burst=400",
		"--concurrent-deployment-syncs=10", "--concurrent-replicaset-syncs=10",
		"--profiling=false",
	); err != nil {
		return nil, err
	}
	return cp, nil
}

func choosePorts(want, prev Ports) (Ports, error) {
	var got Ports
	type slot struct {
		flag       string
		want, prev int
		out        *int
	}
	for _, s := range []slot{
		{"--apiserver-port", want.APIServer, prev.APIServer, &got.APIServer},
		{"--etcd-port", want.Etcd, prev.Etcd, &got.Etcd},
		{"", 0, prev.EtcdPeer, &got.EtcdPeer},
		{"--kubelet-port", want.Kubelet, prev.Kubelet, &got.Kubelet},
	} {
		if s.want != 0 {
			if err := portFree(s.want); err != nil {
				return got, fmt.Errorf("port 127.0.0.1:%d (%s) is busy: %v", s.want, s.flag, errors.Unwrap(err))
			}
			*s.out = s.want
			continue
		}
		if s.prev != 0 && portFree(s.prev) == nil {
			*s.out = s.prev
			continue
		}
		p, err := FreePort()
		if err != nil {
			return got, err
		}
		*s.out = p
	}
	return got, nil
}

func portFree(port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return l.Close()
}

// FreePort picks an unused loopback port outside the kernel's ephemeral
// range. A port is chosen here and bound later by another process (etcd,
// the API server, the kubelet): one from the ephemeral range, as port 0
// gives, can be taken meanwhile by any outgoing connection on the machine,
// and several clusters starting at once (the tests) make that likely.
func FreePort() (int, error) {
	lo, hi := ephemeralRange()
	// Below the ephemeral range if there is room, else above it.
	from, to := 10000, lo-1
	if to-from < 1000 {
		from, to = hi+1, 65535
	}
	if to-from < 100 {
		return anyPort()
	}
	for range 200 {
		p := from + rand.IntN(to-from+1)
		if portFree(p) == nil {
			return p, nil
		}
	}
	return anyPort()
}

// ephemeralRange is the kernel's range for outgoing connections' ports.
func ephemeralRange() (lo, hi int) {
	lo, hi = 32768, 60999 // Linux's default
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return lo, hi
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return lo, hi
	}
	l, err1 := strconv.Atoi(f[0])
	h, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || l > h {
		return lo, hi
	}
	return l, h
}

// anyPort asks the kernel for an unused loopback port.
func anyPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (c *ControlPlane) spawn(name string, args ...string) error {
	logf, err := os.OpenFile(LogPath(c.opts.Dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "==== localkube starting %s at %s\n", name, time.Now().Format(time.RFC3339))
	cmd := exec.Command(filepath.Join(c.opts.BinDir, name), args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + c.opts.Dir}
	procutil.Prepare(cmd, c.opts.Dir)
	start := cmd.Start
	if c.enter != nil {
		start = func() error { return c.enter(cmd.Start) }
	}
	if err := start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	ch := &child{name: name, cmd: cmd, done: make(chan struct{})}
	c.procs = append(c.procs, ch)
	go func() {
		_ = cmd.Wait()
		close(ch.done)
		select {
		case c.Exited <- name:
		default:
		}
	}()
	return nil
}

// exitError describes a component that stopped during start-up, quoting the
// last meaningful line of its log so the cause is on the user's screen.
func (c *ControlPlane) exitError(name string) error {
	return fmt.Errorf("%s exited during start-up: %s (log: %s)", name, lastLogLine(LogPath(c.opts.Dir, name)), LogPath(c.opts.Dir, name))
}

func lastLogLine(path string) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "====") || strings.HasPrefix(l, "goroutine ") {
			continue
		}
		if strings.Contains(l, "rror") || strings.Contains(l, "fatal") || strings.Contains(l, "failed") || i == len(lines)-1 {
			if len(l) > 300 {
				l = l[:300] + "…"
			}
			return l
		}
	}
	return "(no output)"
}

func (c *ControlPlane) done(name string) bool {
	for _, p := range c.procs {
		if p.name == name {
			select {
			case <-p.done:
				return true
			default:
			}
		}
	}
	return false
}

func (c *ControlPlane) waitTCP(ctx context.Context, name string, port int, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			return conn.Close()
		}
		if c.done(name) {
			return c.exitError(name)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not listen on 127.0.0.1:%d within %s (log: %s)", name, port, limit, LogPath(c.opts.Dir, name))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *ControlPlane) waitReady(ctx context.Context, limit time.Duration) error {
	hc, err := c.httpClient()
	if err != nil {
		return err
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/readyz", c.Ports.APIServer)
	deadline := time.Now().Add(limit)
	var last string
	for {
		resp, err := hc.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d", resp.StatusCode)
			if i := bytes.Index(body, []byte("failed")); i >= 0 {
				last += ": " + strings.TrimSpace(string(body[max(0, bytes.LastIndexByte(body[:i], '\n')):i]))
			}
		} else {
			last = err.Error()
		}
		if c.done("kube-apiserver") {
			return c.exitError("kube-apiserver")
		}
		if c.done("etcd") {
			return c.exitError("etcd")
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-apiserver not ready within %s (last: %s; log: %s)", limit, last, LogPath(c.opts.Dir, "kube-apiserver"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (c *ControlPlane) httpClient() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(c.PKI.AdminCert, c.PKI.AdminKey)
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(c.PKI.CACert)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	return &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}},
	}}, nil
}

// Server is the API server's URL.
func (c *ControlPlane) Server() string {
	return "https://127.0.0.1:" + strconv.Itoa(c.Ports.APIServer)
}

// RestConfig is a config with the given client certificate.
func (c *ControlPlane) RestConfig(certFile, keyFile string) *rest.Config {
	return &rest.Config{
		Host: c.Server(),
		TLSClientConfig: rest.TLSClientConfig{
			CAFile: c.PKI.CACert, CertFile: certFile, KeyFile: keyFile,
		},
	}
}

func (c *ControlPlane) writeKubeconfigs() error {
	write := func(path, user, certFile, keyFile string) error {
		ca, err := os.ReadFile(c.PKI.CACert)
		if err != nil {
			return err
		}
		cert, err := os.ReadFile(certFile)
		if err != nil {
			return err
		}
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return err
		}
		cfg := clientcmdapi.NewConfig()
		cfg.Clusters["localkube"] = &clientcmdapi.Cluster{Server: c.Server(), CertificateAuthorityData: ca}
		cfg.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
		cfg.Contexts["localkube"] = &clientcmdapi.Context{Cluster: "localkube", AuthInfo: user, Namespace: "default"}
		cfg.CurrentContext = "localkube"
		return clientcmd.WriteToFile(*cfg, path)
	}
	if err := write(c.Kubeconfig, "localkube-admin", c.PKI.AdminCert, c.PKI.AdminKey); err != nil {
		return err
	}
	return write(filepath.Join(c.opts.Dir, "pki", "controller-manager.kubeconfig"), "kube-controller-manager",
		c.PKI.ControllerCert, c.PKI.ControllerKey)
}

// Stop terminates the components in reverse start order, each with grace
// before SIGKILL.
func (c *ControlPlane) Stop(grace time.Duration) {
	for i := len(c.procs) - 1; i >= 0; i-- {
		p := c.procs[i]
		procutil.SignalGroup(p.cmd.Process.Pid, sigterm)
		select {
		case <-p.done:
		case <-time.After(grace):
			procutil.SignalGroup(p.cmd.Process.Pid, sigkill)
			<-p.done
		}
	}
}
