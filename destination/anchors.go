package destination

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// AnchorsFile is the trust bundle the verifier checks served certificates
// against, re-read when it changes: the CA rotates its root by rewriting
// the bundle (old and new anchors, then new only), and a verifier that kept
// the anchors it started with would never again vouch for a pod issued
// under the new root, so those pods would be advertised without identity.
type AnchorsFile struct {
	Path   string
	Logger *slog.Logger
	// Changed is called after a reload that changed the anchors.
	Changed func()

	pool atomic.Pointer[x509.CertPool]
	sum  [sha256.Size]byte
}

// Load reads the file now. An unreadable or empty file keeps the anchors
// already loaded, if any.
func (a *AnchorsFile) Load() error {
	b, err := os.ReadFile(a.Path)
	if err != nil {
		return fmt.Errorf("trust anchors %s: %w", a.Path, err)
	}
	sum := sha256.Sum256(b)
	if sum == a.sum && a.pool.Load() != nil {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return fmt.Errorf("trust anchors %s: no PEM certificate in it", a.Path)
	}
	first := a.pool.Load() == nil
	a.sum = sum
	a.pool.Store(pool)
	if !first {
		a.log().Info("trust anchors reloaded", "file", a.Path)
		if a.Changed != nil {
			a.Changed()
		}
	}
	return nil
}

// Pool is the anchors of the moment; nil before any loaded.
func (a *AnchorsFile) Pool() *x509.CertPool { return a.pool.Load() }

func (a *AnchorsFile) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

// Watch reloads on any change in the file's directory (the kubelet swaps
// a ConfigMap volume's ..data symlink) and every poll as a backstop,
// until ctx ends.
func (a *AnchorsFile) Watch(ctx context.Context, poll time.Duration) {
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err == nil {
		defer func() { _ = w.Close() }()
		if err := w.Add(filepath.Dir(a.Path)); err == nil {
			events = w.Events
		}
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	var debounce <-chan time.Time
	reload := func() {
		if err := a.Load(); err != nil {
			a.log().Warn("trust anchors not reloaded; keeping the previous ones", "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-events:
			debounce = time.After(50 * time.Millisecond)
		case <-debounce:
			debounce = nil
			reload()
		case <-tick.C:
			reload()
		}
	}
}
