package tui

import (
	"net/netip"

	"meshtls/tap"
)

// store keeps the newest requests in a ring, one row per request, updated
// in place as its response and end arrive: memory stays flat however long
// the stream runs.
type store struct {
	rows []tap.Event
	// next is the sequence number the next row gets; row seq lives in
	// rows[seq%len(rows)] while seq > next-len(rows).
	next  uint64
	index map[tap.RequestKey]uint64
	// proxies are the tapped proxies heard from, bounded like the rows.
	proxies map[netip.Addr]struct{}
}

const maxProxies = 1 << 14

func newStore(capacity int) *store {
	return &store{rows: make([]tap.Event, capacity), index: make(map[tap.RequestKey]uint64), proxies: make(map[netip.Addr]struct{})}
}

// oldest is the sequence number of the oldest row held.
func (s *store) oldest() uint64 {
	if s.next > uint64(len(s.rows)) {
		return s.next - uint64(len(s.rows))
	}
	return 0
}

func (s *store) len() int { return int(s.next - s.oldest()) }

func (s *store) get(seq uint64) *tap.Event {
	if seq < s.oldest() || seq >= s.next {
		return nil
	}
	return &s.rows[seq%uint64(len(s.rows))]
}

// apply adds or updates the row of e's request and returns it.
func (s *store) apply(e *tap.Event) *tap.Event {
	if p := e.Proxy().Addr.Addr(); p.IsValid() && len(s.proxies) < maxProxies {
		s.proxies[p] = struct{}{}
	}
	key := e.Key()
	if e.Kind != tap.KindRequest {
		if seq, ok := s.index[key]; ok {
			if row := s.get(seq); row != nil {
				merge(row, e)
				if e.Kind == tap.KindEnd {
					delete(s.index, key)
				}
				return row
			}
			delete(s.index, key)
		}
	}
	slot := s.next % uint64(len(s.rows))
	if s.next >= uint64(len(s.rows)) {
		old := &s.rows[slot]
		if seq, ok := s.index[old.Key()]; ok && seq == s.next-uint64(len(s.rows)) {
			delete(s.index, old.Key())
		}
	}
	s.rows[slot] = *e
	if e.Kind != tap.KindEnd {
		s.index[key] = s.next
	}
	s.next++
	return &s.rows[slot]
}

// merge updates a request's row with a later stage, keeping the time the
// request started.
func merge(row, e *tap.Event) {
	t := row.Time
	dropped := row.DroppedBefore
	*row = *e
	row.Time = t
	row.DroppedBefore = dropped
}
