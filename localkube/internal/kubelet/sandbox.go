package kubelet

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// bindMount puts the file source over target in a process's view.
type bindMount struct{ source, target string }

// podThread is the OS thread a pod's processes are started from, for as
// long as the pod lives. The thread is inside the pod's network namespace
// and in a mount namespace of the pod's own where each bindMount's source
// covers its target; every process of the pod (its containers, and what
// kubectl exec runs) inherits both, the way `ip netns exec` gives a
// process its namespace's /etc/netns files: a Go program reads
// /etc/resolv.conf and nothing else, so the pod's resolver configuration
// has to be at that path in its view.
//
// The mount namespace is a slave of the host's: mounts made on the host
// still reach the pod, and the binds never reach the host, whose /etc is
// not touched. A target the host lacks is skipped (the pod then sees the
// host's view there), since creating it would write to the host's /etc.
//
// Threads are never let die, and come from a pool: a process's
// PR_SET_PDEATHSIG (which kills the pods of a killed localkube) fires when
// the thread that started it ends, and the thread we lock may be one that
// started etcd, kube-proxy or another pod's container earlier. So a pod's
// thread goes back to the host's namespaces and to the pool when the pod
// is released.
type podThread struct {
	mu     sync.Mutex
	t      *osThread
	closed bool
}

// osThread runs functions on one locked OS thread that has its own
// filesystem attributes (a thread that shares them with the others may
// not change mount namespace).
type osThread struct{ reqs chan func() }

var threadPool struct {
	mu   sync.Mutex
	idle []*osThread
}

// hostNS are the host's mount and network namespaces, for threads going
// back to the pool. They are opened from an unlocked goroutine, which
// never runs on a thread that left them.
var hostNS struct {
	once     sync.Once
	mnt, net netns.NsHandle
	err      error
}

func hostNamespaces() (mnt, net netns.NsHandle, err error) {
	hostNS.once.Do(func() {
		fd, err := unix.Open("/proc/thread-self/ns/mnt", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			hostNS.err = fmt.Errorf("open the host's mount namespace: %w", err)
			return
		}
		hostNS.mnt = netns.NsHandle(fd)
		fd, err = unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			hostNS.err = fmt.Errorf("open the host's network namespace: %w", err)
			return
		}
		hostNS.net = netns.NsHandle(fd)
	})
	return hostNS.mnt, hostNS.net, hostNS.err
}

func getOSThread() (*osThread, error) {
	threadPool.mu.Lock()
	if n := len(threadPool.idle); n > 0 {
		t := threadPool.idle[n-1]
		threadPool.idle = threadPool.idle[:n-1]
		threadPool.mu.Unlock()
		return t, nil
	}
	threadPool.mu.Unlock()
	t := &osThread{reqs: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		// Locked for good: the goroutine never returns, so the thread never
		// ends (see podThread).
		runtime.LockOSThread()
		ready <- unix.Unshare(unix.CLONE_FS)
		for fn := range t.reqs {
			fn()
		}
		select {} // unreachable: reqs is never closed
	}()
	if err := <-ready; err != nil {
		go t.do(func() error { select {} }) // park it: it may not die
		return nil, fmt.Errorf("unshare filesystem attributes: %w", err)
	}
	return t, nil
}

func (t *osThread) do(fn func() error) error {
	done := make(chan error, 1)
	t.reqs <- func() { done <- fn() }
	return <-done
}

func newPodThread(netnsPath string, mounts []bindMount) (*podThread, error) {
	hostMnt, hostNet, err := hostNamespaces()
	if err != nil {
		return nil, err
	}
	target, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	defer func() { _ = target.Close() }()
	t, err := getOSThread()
	if err != nil {
		return nil, err
	}
	err = t.do(func() error { return enterPod(target, netnsPath, mounts) })
	if err != nil {
		leave(t, hostMnt, hostNet)
		return nil, err
	}
	return &podThread{t: t}, nil
}

func enterPod(target netns.NsHandle, netnsPath string, mounts []bindMount) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("new mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return fmt.Errorf("make / a slave mount: %w", err)
	}
	for _, m := range mounts {
		if _, err := os.Stat(m.target); errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err := unix.Mount(m.source, m.target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", m.source, m.target, err)
		}
	}
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %s: %w", netnsPath, err)
	}
	return nil
}

// leave puts t back in the host's namespaces and in the pool; a thread
// that cannot go back is parked for good instead.
func leave(t *osThread, hostMnt, hostNet netns.NsHandle) {
	err := t.do(func() error {
		if err := unix.Setns(int(hostMnt), unix.CLONE_NEWNS); err != nil {
			return err
		}
		return netns.Set(hostNet)
	})
	if err != nil {
		go t.do(func() error { select {} })
		return
	}
	threadPool.mu.Lock()
	threadPool.idle = append(threadPool.idle, t)
	threadPool.mu.Unlock()
}

// run calls fn (which starts a process) on the pod's thread.
func (p *podThread) run(fn func() error) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("the pod's sandbox is gone")
	}
	return p.t.do(fn)
}

// close gives the thread back; call it once the pod's processes are gone.
func (p *podThread) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.closed = true
	hostMnt, hostNet, err := hostNamespaces()
	if err != nil { // cannot happen: newPodThread opened them
		go p.t.do(func() error { select {} })
		return
	}
	leave(p.t, hostMnt, hostNet)
}
