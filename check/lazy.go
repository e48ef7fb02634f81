package check

import (
	"context"
	"sync"
	"time"
)

// Lazy loads a value once for every checker that needs it (the root, a
// snapshot of Secrets) and hands each the same immutable result. A checker
// being retried gets a fresh load, so a retry sees the cluster as it is
// now; errors are never cached, so the next checker tries again.
type Lazy[T any] struct {
	load func(context.Context) (T, error)

	mu     sync.Mutex
	loaded bool
	at     time.Time
	value  T
}

// NewLazy wraps load.
func NewLazy[T any](load func(context.Context) (T, error)) *Lazy[T] {
	return &Lazy[T]{load: load}
}

// Get returns the loaded value, loading it if this is the first call, or
// if ctx is a retry attempt that began after the value was loaded.
func (l *Lazy[T]) Get(ctx context.Context) (T, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a, _ := ctx.Value(attemptKey{}).(attempt)
	if l.loaded && (a.n == 0 || !l.at.Before(a.start)) {
		return l.value, nil
	}
	start := time.Now()
	v, err := l.load(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	l.loaded, l.at, l.value = true, start, v
	return v, nil
}
