package cli

import (
	"fmt"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"meshtls/localkube/internal/podnet"
	"meshtls/localkube/internal/procutil"
)

func newDown(stdout io.Writer) *cobra.Command {
	o := &common{}
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "down",
		Short: "Stop the cluster in --dir and everything it started",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			dir, err := o.absDir()
			if err != nil {
				return err
			}
			return runDown(dir, timeout, stdout)
		},
	}
	o.addDir(cmd)
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long to wait for a graceful stop before killing")
	return cmd
}

func runDown(dir string, timeout time.Duration, stdout io.Writer) error {
	st, _ := readState(dir)
	if running(dir) && st != nil && procutil.Alive(st.Pid) {
		_ = syscall.Kill(st.Pid, syscall.SIGTERM)
		deadline := time.Now().Add(timeout)
		for running(dir) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if running(dir) {
			_ = syscall.Kill(st.Pid, syscall.SIGKILL)
		}
	}
	n := procutil.KillMarked(dir, 2*time.Second)
	// A killed localkube leaves its pod network behind. Clean it only if
	// the block is still free: a newer cluster may own it now (and has
	// cleaned it already).
	if st != nil && st.Block != 0 {
		if lock, err := lockBlockOfDyingCluster(st.Block, 10*time.Second); err == nil {
			if err := podnet.ForBlock(st.Block).Teardown(); err != nil {
				fmt.Fprintf(stdout, "localkube: pod network clean-up: %v\n", err)
			}
			lock.Close()
		}
	}
	if st != nil && st.Phase != "stopped" {
		st.Phase = "stopped"
		_ = writeState(dir, st)
	}
	switch {
	case st == nil && n == 0:
		fmt.Fprintf(stdout, "localkube: nothing runs in %s\n", dir)
	case n > 0:
		fmt.Fprintf(stdout, "localkube stopped in %s (killed %d leftover processes)\n", dir, n)
	default:
		fmt.Fprintf(stdout, "localkube stopped in %s\n", dir)
	}
	return nil
}

// lockBlockOfDyingCluster takes block b's lock for clean-up, waiting up to
// limit: right after a kill -9 the crashed localkube and its children can
// take seconds to exit on a loaded machine, and until the last of them is
// gone the lock still looks held. A block still held after that belongs to
// a newer cluster, which has cleaned it itself.
func lockBlockOfDyingCluster(b int, limit time.Duration) (*os.File, error) {
	deadline := time.Now().Add(limit)
	for {
		lock, err := podnet.TryLockBlock(b)
		if err == nil || time.Now().After(deadline) {
			return lock, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
