package tapapi

import (
	"sync/atomic"

	"golang.org/x/time/rate"

	tappb "meshtls/proto/tap"
)

// Merger merges the streams of many proxies into one bounded queue under
// one max-rps budget. Nothing in it blocks: a request over the budget, or
// an event that does not fit in the queue, is dropped and counted, so a
// slow client never holds back the proxies (whose own queues would then
// drop, but whose traffic never waits on tap either way).
type Merger struct {
	limiter *rate.Limiter
	out     chan *tappb.TapEvent
	dropped atomic.Uint64
	// OnDrop, when set, is told of every drop (for metrics).
	OnDrop func(n uint64)
}

// NewMerger caps requests at maxRPS across all feeders (0: no cap) and
// queues at most buffer events for the writer.
func NewMerger(maxRPS float64, buffer int) *Merger {
	m := &Merger{out: make(chan *tappb.TapEvent, max(1, buffer))}
	if maxRPS > 0 {
		// A burst of one second's budget: a tap opened on a busy
		// workload shows its first second at once.
		m.limiter = rate.NewLimiter(rate.Limit(maxRPS), max(1, int(maxRPS)))
	}
	return m
}

// Events is the merged queue.
func (m *Merger) Events() <-chan *tappb.TapEvent { return m.out }

// TakeDropped returns the events dropped since the last call.
func (m *Merger) TakeDropped() uint64 { return m.dropped.Swap(0) }

// Dropped is what TakeDropped would return, without resetting it.
func (m *Merger) Dropped() uint64 { return m.dropped.Load() }

type streamKey struct {
	base   uint32
	stream uint64
}

// maxSkipped bounds the requests a feeder remembers having dropped; a
// proxy that never reports their ends must not grow it forever.
const maxSkipped = 1 << 16

// Feeder takes one proxy's events. Each proxy stream has its own: stream
// ids are unique per proxy, and a feeder is used by one goroutine.
type Feeder struct {
	m       *Merger
	skipped map[streamKey]struct{}
}

// Feeder returns a feeder for one proxy stream.
func (m *Merger) Feeder() *Feeder {
	return &Feeder{m: m, skipped: map[streamKey]struct{}{}}
}

func keyOf(id *tappb.TapEvent_Http_StreamId) streamKey {
	return streamKey{base: id.GetBase(), stream: id.GetStream()}
}

// Push offers one event. A request that passes the budget and fits the
// queue is shown with its response and end; one that does not is counted
// once, and its response and end are dropped silently with it.
func (f *Feeder) Push(ev *tappb.TapEvent) {
	m := f.m
	if d := ev.GetDroppedBefore(); d > 0 {
		m.drop(d)
		ev.DroppedBefore = 0
	}
	h := ev.GetHttp()
	if init := h.GetRequestInit(); init != nil {
		k := keyOf(init.GetId())
		if (m.limiter != nil && !m.limiter.Allow()) || !m.offer(ev) {
			m.drop(1)
			if len(f.skipped) >= maxSkipped {
				clear(f.skipped)
			}
			f.skipped[k] = struct{}{}
		}
		return
	}
	var id *tappb.TapEvent_Http_StreamId
	end := false
	switch {
	case h.GetResponseInit() != nil:
		id = h.GetResponseInit().GetId()
	case h.GetResponseEnd() != nil:
		id, end = h.GetResponseEnd().GetId(), true
	}
	if id != nil {
		k := keyOf(id)
		if _, ok := f.skipped[k]; ok {
			if end {
				delete(f.skipped, k)
			}
			return
		}
	}
	if !m.offer(ev) {
		m.drop(1)
	}
}

func (m *Merger) drop(n uint64) {
	m.dropped.Add(n)
	if m.OnDrop != nil {
		m.OnDrop(n)
	}
}

func (m *Merger) offer(ev *tappb.TapEvent) bool {
	select {
	case m.out <- ev:
		return true
	default:
		return false
	}
}
