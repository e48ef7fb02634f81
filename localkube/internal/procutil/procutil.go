// Package procutil starts and finds the processes of one local cluster.
//
// Every process localkube starts carries MarkerEnv=<cluster dir> in its
// environment. That lets `down` and a recovering `up` find what a killed
// run left behind by reading /proc, without trusting pid files that may
// point at reused pids.
package procutil

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// MarkerEnv names the environment variable that ties a process to a cluster dir.
const MarkerEnv = "LOCALKUBE_CLUSTER_DIR"

// Prepare makes cmd a marked process in its own process group that dies with
// its parent, so no child outlives a killed localkube.
func Prepare(cmd *exec.Cmd, clusterDir string) {
	cmd.Env = append(cmd.Env, MarkerEnv+"="+clusterDir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// Marked returns the pids of live processes marked with clusterDir, except
// the caller itself.
func Marked(clusterDir string) []int {
	want := []byte(MarkerEnv + "=" + clusterDir + "\x00")
	entries, _ := os.ReadDir("/proc")
	var pids []int
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		env, err := os.ReadFile(filepath.Join("/proc", e.Name(), "environ"))
		if err != nil {
			continue
		}
		if bytes.Contains(append(env, 0), want) && !IsZombie(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// IsZombie reports whether pid has exited but not been reaped.
func IsZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the parenthesised command name, which may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// Alive reports whether pid is a live (non-zombie) process.
func Alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	if err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	return !IsZombie(pid)
}

// KillMarked sends SIGTERM to every process of the cluster, waits up to
// grace for them to go, then SIGKILLs the rest. It returns how many it found.
func KillMarked(clusterDir string, grace time.Duration) int {
	pids := Marked(clusterDir)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) && len(Marked(clusterDir)) > 0 {
		time.Sleep(100 * time.Millisecond)
	}
	for _, pid := range Marked(clusterDir) {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	return len(pids)
}

// SignalGroup signals the process group led by pid, falling back to the
// process alone if the group is gone.
func SignalGroup(pid int, sig syscall.Signal) {
	if pid <= 0 {
		return
	}
	if err := syscall.Kill(-pid, sig); err != nil {
		_ = syscall.Kill(pid, sig)
	}
}
