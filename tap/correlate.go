package tap

// requestState is what a correlator remembers of a request between its
// events.
type requestState struct {
	method, scheme, authority, path string
	status                          uint32
	pass                            bool
	seq                             uint64
}

// Correlator joins a request's response and end events with its request,
// so every event carries the request's method, authority and path. It
// remembers at most a bounded number of open requests: a proxy that never
// reports a request's end cannot make it grow without limit.
type Correlator struct {
	open  map[RequestKey]*requestState
	order []RequestKey // ring of insertion order, for eviction
	seqs  []uint64
	next  int
	seq   uint64
}

// DefaultOpenRequests bounds a Correlator's memory.
const DefaultOpenRequests = 1 << 16

// NewCorrelator remembers up to capacity open requests.
func NewCorrelator(capacity int) *Correlator {
	if capacity <= 0 {
		capacity = DefaultOpenRequests
	}
	return &Correlator{open: make(map[RequestKey]*requestState), order: make([]RequestKey, capacity), seqs: make([]uint64, capacity)}
}

// Observe fills e from its request's earlier events, and remembers what
// later events need. pass is stored with a request and returned for its
// later events (a source that filters a request filters its response too);
// for a response or end whose request was not seen, known is false.
func (c *Correlator) Observe(e *Event, pass bool) (passed, known bool) {
	switch e.Kind {
	case KindRequest:
		c.seq++
		st := &requestState{method: e.Method, scheme: e.Scheme, authority: e.Authority, path: e.Path, pass: pass, seq: c.seq}
		slot := c.next
		if old := c.order[slot]; c.seqs[slot] != 0 {
			if st, ok := c.open[old]; ok && st.seq == c.seqs[slot] {
				delete(c.open, old)
			}
		}
		c.order[slot], c.seqs[slot] = e.key, c.seq
		c.next = (c.next + 1) % len(c.order)
		c.open[e.key] = st
		return pass, true
	case KindResponse, KindEnd:
		st, ok := c.open[e.key]
		if !ok {
			return false, false
		}
		e.Method, e.Scheme, e.Authority, e.Path, e.HasRequest = st.method, st.scheme, st.authority, st.path, true
		if e.Kind == KindResponse {
			st.status = e.Status
		} else {
			e.Status = st.status
			delete(c.open, e.key)
		}
		return st.pass, true
	}
	return false, false
}

// Open is how many requests are waiting for their end.
func (c *Correlator) Open() int { return len(c.open) }
