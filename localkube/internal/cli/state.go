package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"meshtls/localkube/internal/controlplane"
)

// State is what a running localkube records in DIR/state.json.
type State struct {
	Pid     int                `json:"pid"`
	Phase   string             `json:"phase"` // starting, running, stopped
	Started time.Time          `json:"started"`
	Ready   time.Duration      `json:"readyAfter,omitempty"`
	BinDirs []string           `json:"binDirs"`
	Ports   controlplane.Ports `json:"ports"`
	Block   int                `json:"podAddressBlock"`
	Pids    map[string]int     `json:"pids,omitempty"`
	Server  string             `json:"server,omitempty"`
	Error   string             `json:"error,omitempty"`
}

func statePath(dir string) string { return filepath.Join(dir, "state.json") }

func readState(dir string) (*State, error) {
	b, err := os.ReadFile(statePath(dir))
	if err != nil {
		return nil, err
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", statePath(dir), err)
	}
	return &s, nil
}

func writeState(dir string, s *State) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp := statePath(dir) + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, statePath(dir))
}

// lockFile is held (flock) by the running localkube for its whole life, so
// "is it running" never depends on a pid that may have been reused.
func lockPath(dir string) string { return filepath.Join(dir, "localkube.lock") }

// tryLock takes path's exclusive lock without blocking. The returned file
// keeps it until closed or until the process ends.
func tryLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, errLocked
		}
		return nil, err
	}
	return f, nil
}

var errLocked = errors.New("locked")

// running reports whether a localkube holds dir's lock.
func running(dir string) bool {
	f, err := tryLock(lockPath(dir))
	if err != nil {
		return errors.Is(err, errLocked)
	}
	f.Close()
	return false
}
