package tapapi

import (
	"errors"
	"net/netip"
	"sync/atomic"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protowire"
)

// Merger merges the streams of many proxies into one bounded queue under
// one max-rps budget. Nothing in it blocks: a request over the budget, or
// an event that does not fit in the queue, is dropped and counted, so a
// slow client never holds back the proxies (whose own queues would then
// drop, but whose traffic never waits on tap either way).
//
// Events stay in their wire encoding from the proxy to the client: the
// merger reads only the stage, the stream id and dropped_before, so the
// tap API never decodes and re-encodes an event (which cost most of its
// CPU when it did).
type Merger struct {
	limiter *rate.Limiter
	out     chan []byte
	dropped atomic.Uint64
	// OnDrop, when set, is told of every drop (for metrics).
	OnDrop func(n uint64)
}

// NewMerger caps requests at maxRPS across all feeders (0: no cap) and
// queues at most buffer events for the writer.
func NewMerger(maxRPS float64, buffer int) *Merger {
	m := &Merger{out: make(chan []byte, max(1, buffer))}
	if maxRPS > 0 {
		// A burst of one second's budget: a tap opened on a busy
		// workload shows its first second at once.
		m.limiter = rate.NewLimiter(rate.Limit(maxRPS), max(1, int(maxRPS)))
	}
	return m
}

// Events is the merged queue of encoded TapEvents.
func (m *Merger) Events() <-chan []byte { return m.out }

// TakeDropped returns the events dropped since the last call.
func (m *Merger) TakeDropped() uint64 { return m.dropped.Swap(0) }

// Dropped is what TakeDropped would return, without resetting it.
func (m *Merger) Dropped() uint64 { return m.dropped.Load() }

func (m *Merger) drop(n uint64) {
	m.dropped.Add(n)
	if m.OnDrop != nil {
		m.OnDrop(n)
	}
}

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
	// selfIn and selfOut, when set, are appended to inbound and outbound
	// events: the tapped pod's metadata as a second destination_meta or
	// source_meta, which protobuf merges into the proxy's.
	selfIn, selfOut []byte
	// peers, when set, names the peer pods of events; peerAllowed, when
	// set, says in which namespaces it may name them.
	peers       *Peers
	peerAllowed func(ns string) bool
	memo        map[peerKey]peerMemo
}

// SetPeerFilter names peer pods only in the namespaces allowed says yes
// to; elsewhere an event says only which namespace the peer is in.
func (f *Feeder) SetPeerFilter(allowed func(ns string) bool) { f.peerAllowed = allowed }

// SetPeers names the pods behind peer addresses in every event, from
// peers' cache.
func (f *Feeder) SetPeers(peers *Peers) {
	f.peers = peers
	if peers != nil && f.memo == nil {
		f.memo = map[peerKey]peerMemo{}
	}
}

// SetSelf labels the tapped pod in every event with labels (its owner,
// which its proxy does not know), besides what the proxy put there.
func (f *Feeder) SetSelf(labels map[string]string) {
	if len(labels) == 0 {
		return
	}
	f.selfIn = encodeMeta(fieldDestinationMeta, labels)
	f.selfOut = encodeMeta(fieldSourceMeta, labels)
}

// Feeder returns a feeder for one proxy stream.
func (m *Merger) Feeder() *Feeder {
	return &Feeder{m: m, skipped: map[streamKey]struct{}{}}
}

// The stages of TapEvent.Http, by field number.
const (
	stageRequest  = 1
	stageResponse = 2
	stageEnd      = 3
)

// TapEvent field numbers the merger reads or writes.
const (
	fieldSource          = 1
	fieldSourceMeta      = 2
	fieldDestination     = 3
	fieldDestinationMeta = 4
	fieldDirection       = 5
	fieldDroppedBefore   = 7
	fieldHTTP            = 10
)

// The ProxyDirection values.
const (
	dirInbound  = 1
	dirOutbound = 2
)

var errBadEvent = errors.New("malformed TapEvent")

// scanned is what the merger reads off an encoded TapEvent.
type scanned struct {
	dropped uint64
	// stage is 0 for an event that is not HTTP.
	stage int
	key   streamKey
	// dir is the ProxyDirection, an int32 enum on the wire.
	dir int32
	// src and dst are the peers' addresses (invalid when absent);
	// dstLabeled says the proxy put labels in destination_meta.
	src, dst   netip.Addr
	dstLabeled bool
}

// scanEvent reads an encoded TapEvent's dropped_before, direction, HTTP
// stage, stream id and peers, as protobuf decodes them: a scalar repeated
// on the wire takes its last value, and a message repeated on the wire
// (or a oneof member repeated) is merged field by field, so the merger
// reads what the client will decode.
func scanEvent(b []byte) (sc scanned, err error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return sc, errBadEvent
		}
		b = b[n:]
		switch {
		case (num == fieldDroppedBefore || num == fieldDirection) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return sc, errBadEvent
			}
			if num == fieldDroppedBefore {
				sc.dropped = v
			} else {
				sc.dir = int32(v)
			}
			b = b[n:]
			continue
		case (num == fieldHTTP || num == fieldSource || num == fieldDestination || num == fieldDestinationMeta) && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return sc, errBadEvent
			}
			b = b[n:]
			switch num {
			case fieldHTTP:
				if sc.stage, sc.key, err = scanHTTP(v, sc.stage, sc.key); err != nil {
					return sc, err
				}
			case fieldSource:
				sc.src = scanIP(v, sc.src)
			case fieldDestination:
				sc.dst = scanIP(v, sc.dst)
			case fieldDestinationMeta:
				// Labels are field 1 of EndpointMeta, one entry each.
				if hasField(v, 1, protowire.BytesType) {
					sc.dstLabeled = true
				}
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return sc, errBadEvent
		}
		b = b[n:]
	}
	return sc, nil
}

// hasField says whether an encoded message holds field num of type typ.
func hasField(b []byte, num protowire.Number, typ protowire.Type) bool {
	for len(b) > 0 {
		fnum, ftyp, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		if fnum == num && ftyp == typ {
			return true
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(fnum, ftyp, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return false
}

// scanIP reads a TcpAddress's ip over ip, what earlier occurrences of the
// address said; an unreadable one is no address (the event is still passed
// on, only not named).
func scanIP(b []byte, ip netip.Addr) netip.Addr {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return netip.Addr{}
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return netip.Addr{}
			}
			b = b[n:]
			a, _ := netip.AddrFromSlice(v)
			ip = a.Unmap()
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return netip.Addr{}
		}
		b = b[n:]
	}
	return ip
}

// scanHTTP reads a TapEvent.Http over what earlier occurrences of it said:
// another stage replaces the stage (a oneof), the same stage merges its id.
func scanHTTP(b []byte, stage int, key streamKey) (int, streamKey, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, key, errBadEvent
		}
		b = b[n:]
		if num >= stageRequest && num <= stageEnd && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, key, errBadEvent
			}
			b = b[n:]
			if int(num) != stage {
				key = streamKey{}
			}
			stage = int(num)
			// Every stage's message has its StreamId as field 1.
			for len(v) > 0 {
				fnum, ftyp, fn := protowire.ConsumeTag(v)
				if fn < 0 {
					return 0, key, errBadEvent
				}
				v = v[fn:]
				if fnum == 1 && ftyp == protowire.BytesType {
					id, idn := protowire.ConsumeBytes(v)
					if idn < 0 {
						return 0, key, errBadEvent
					}
					v = v[idn:]
					var err error
					if key, err = scanID(id, key); err != nil {
						return 0, key, err
					}
					continue
				}
				fn = protowire.ConsumeFieldValue(fnum, ftyp, v)
				if fn < 0 {
					return 0, key, errBadEvent
				}
				v = v[fn:]
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, key, errBadEvent
		}
		b = b[n:]
	}
	return stage, key, nil
}

// scanID reads a StreamId over key, what earlier occurrences of it said.
func scanID(b []byte, key streamKey) (streamKey, error) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return key, errBadEvent
		}
		b = b[n:]
		if typ == protowire.VarintType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return key, errBadEvent
			}
			b = b[n:]
			if num == 1 {
				key.base = uint32(v)
			} else {
				key.stream = v
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return key, errBadEvent
		}
		b = b[n:]
	}
	return key, nil
}

// Push offers one encoded event. A request that passes the budget and
// fits the queue is shown with its response and end; one that does not
// is counted once, and its response and end are dropped silently with it.
// A malformed event is dropped and counted.
func (f *Feeder) Push(ev []byte) {
	m := f.m
	sc, err := scanEvent(ev)
	if err != nil {
		m.drop(1)
		return
	}
	dropped, stage, k := sc.dropped, sc.stage, sc.key
	switch {
	case sc.dir == dirInbound && f.selfIn != nil:
		ev = append(ev, f.selfIn...)
	case sc.dir == dirOutbound && f.selfOut != nil:
		ev = append(ev, f.selfOut...)
	}
	if f.peers != nil {
		// The proxy knows its clients by address only, and its
		// outbound destinations by what discovery told it, if anything.
		switch {
		case sc.dir == dirInbound && sc.src.IsValid():
			ev = append(ev, f.peers.peerMetaIn(f.memo, sc.src, fieldSourceMeta, f.peerAllowed)...)
		case sc.dir == dirOutbound && sc.dst.IsValid() && !sc.dstLabeled:
			ev = append(ev, f.peers.peerMetaIn(f.memo, sc.dst, fieldDestinationMeta, f.peerAllowed)...)
		}
	}
	if dropped > 0 {
		// Counted here; the writer overrides the event's own count.
		m.drop(dropped)
	}
	switch stage {
	case stageRequest:
		if (m.limiter != nil && !m.limiter.Allow()) || !m.offer(ev) {
			m.drop(1)
			if len(f.skipped) >= maxSkipped {
				clear(f.skipped)
			}
			f.skipped[k] = struct{}{}
		}
		return
	case stageResponse, stageEnd:
		if _, ok := f.skipped[k]; ok {
			if stage == stageEnd {
				delete(f.skipped, k)
			}
			return
		}
	}
	if !m.offer(ev) {
		m.drop(1)
	}
}

func (m *Merger) offer(ev []byte) bool {
	select {
	case m.out <- ev:
		return true
	default:
		return false
	}
}

// withDropped sets an encoded event's dropped_before: a later occurrence
// of a scalar field overrides an earlier one, so appending is enough.
func withDropped(ev []byte, n uint64) []byte {
	ev = protowire.AppendTag(ev, fieldDroppedBefore, protowire.VarintType)
	return protowire.AppendVarint(ev, n)
}
