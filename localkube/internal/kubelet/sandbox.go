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

// podThread is an OS thread that lives as long as its pod, inside the
// pod's network namespace and a mount namespace of its own where each
// bindMount's source covers its target. Every process of the pod (its
// containers, and what kubectl exec runs) is started from it and inherits
// both, the way `ip netns exec` gives a process its namespace's
// /etc/netns files: a Go program reads /etc/resolv.conf and nothing else,
// so the pod's resolver configuration has to be at that path in its view.
//
// The mount namespace is a slave of the host's: mounts made on the host
// still reach the pod, and the binds never reach the host, whose /etc is
// not touched. A target the host lacks is skipped (the pod then sees the
// host's view there), since creating it would write to the host's /etc.
//
// One thread per pod rather than one per start: a process's
// PR_SET_PDEATHSIG (which kills the pods of a killed localkube) fires when
// the thread that started it ends, and this thread can never rejoin the
// rest of the program (its filesystem attributes and mount namespace are
// no longer the process's), so it ends only with the pod.
type podThread struct {
	mu     sync.Mutex
	reqs   chan podThreadReq
	closed bool
}

type podThreadReq struct {
	fn   func() error
	done chan error
}

func newPodThread(netnsPath string, mounts []bindMount) (*podThread, error) {
	target, err := netns.GetFromPath(netnsPath)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", netnsPath, err)
	}
	t := &podThread{reqs: make(chan podThreadReq)}
	ready := make(chan error, 1)
	go func() {
		// Locked for good: the runtime ends the thread with this goroutine.
		runtime.LockOSThread()
		err := enterPod(target, netnsPath, mounts)
		_ = target.Close()
		ready <- err
		if err != nil {
			return
		}
		for r := range t.reqs {
			r.done <- r.fn()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return t, nil
}

func enterPod(target netns.NsHandle, netnsPath string, mounts []bindMount) error {
	// CLONE_FS with it: a thread that shares its filesystem attributes
	// with the others may not get a mount namespace of its own.
	if err := unix.Unshare(unix.CLONE_FS | unix.CLONE_NEWNS); err != nil {
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

// run calls fn (which starts a process) on the pod's thread.
func (t *podThread) run(fn func() error) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return errors.New("the pod's sandbox is gone")
	}
	done := make(chan error, 1)
	t.reqs <- podThreadReq{fn: fn, done: done}
	t.mu.Unlock()
	return <-done
}

// close ends the thread. Processes it started that still run get their
// parent-death signal, so call it once the pod's processes are gone.
func (t *podThread) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.closed {
		t.closed = true
		close(t.reqs)
	}
}
