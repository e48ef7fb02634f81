package tui

import (
	"context"
	"errors"
	"sync"

	"meshtls/tap"
)

// Feed runs produce in its own goroutine and hands what it emits to the
// TUI through a channel, for Options.Events and Options.Err. A full
// channel holds produce back (a live source's server then drops and counts
// what it cannot send); cancelling ctx stops it. wait returns once produce
// has returned.
func Feed(ctx context.Context, produce func(ctx context.Context, emit func(*tap.Event) error) error) (events <-chan tap.Event, errFn func() error, wait func()) {
	ch := make(chan tap.Event, DefaultBatch)
	var (
		mu  sync.Mutex
		err error
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e := produce(ctx, func(ev *tap.Event) error {
			select {
			case ch <- *ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if errors.Is(e, context.Canceled) {
			e = nil
		}
		mu.Lock()
		err = e
		mu.Unlock()
		close(ch)
	}()
	return ch, func() error {
			mu.Lock()
			defer mu.Unlock()
			return err
		}, func() {
			<-done
		}
}
