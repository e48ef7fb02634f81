package tap

import (
	"math"
	"sort"
	"time"
)

// GroupBy picks what an aggregate row stands for.
type GroupBy uint8

// Aggregations Linkerd users ask of `top`: per edge, and per path.
const (
	ByEdge GroupBy = iota
	ByPath
)

// AggKey identifies an aggregate row.
type AggKey struct {
	Src, Dst string
	// Method and Path are set when grouping by path.
	Method, Path string
}

// AggRow is one row of the aggregate view.
type AggRow struct {
	Key       AggKey
	Count     uint64
	Successes uint64
	TLS       uint64
	First     time.Time
	Last      time.Time
	latency   latencyHistogram
	reasons   map[string]uint64
}

// SuccessRate is the share of successful requests.
func (r *AggRow) SuccessRate() float64 { return ratio(r.Successes, r.Count) }

// TLSRate is the share of requests that were mutually authenticated TLS.
func (r *AggRow) TLSRate() float64 { return ratio(r.TLS, r.Count) }

// NoTLSReasons counts the plain-text requests by reason.
func (r *AggRow) NoTLSReasons() map[string]uint64 { return r.reasons }

// Quantile is the latency below which a share q of requests fell.
func (r *AggRow) Quantile(q float64) time.Duration { return r.latency.quantile(q) }

// RPS is requests per second over the span the aggregate has seen (at
// least one second, so a single request is not an infinite rate).
func (r *AggRow) RPS(span time.Duration) float64 {
	s := max(span, time.Second).Seconds()
	return float64(r.Count) / s
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// Aggregator sums finished requests per edge or path.
type Aggregator struct {
	by          GroupBy
	rows        map[AggKey]*AggRow
	first, last time.Time
}

// NewAggregator groups by by.
func NewAggregator(by GroupBy) *Aggregator {
	return &Aggregator{by: by, rows: make(map[AggKey]*AggRow)}
}

// By is how the aggregator groups.
func (a *Aggregator) By() GroupBy { return a.by }

// Reset forgets everything.
func (a *Aggregator) Reset() {
	clear(a.rows)
	a.first, a.last = time.Time{}, time.Time{}
}

// Add counts e if it ends a request; other stages are ignored so each
// request counts once.
func (a *Aggregator) Add(e *Event) {
	if e.Kind != KindEnd {
		return
	}
	k := AggKey{Src: e.Src.Name(), Dst: dstName(e)}
	if a.by == ByPath {
		k.Method, k.Path = e.Method, e.Path
	}
	r := a.rows[k]
	if r == nil {
		r = &AggRow{Key: k, First: e.Time}
		a.rows[k] = r
	}
	r.Count++
	if e.Success() {
		r.Successes++
	}
	if e.TLS.Encrypted() {
		r.TLS++
	} else {
		if r.reasons == nil {
			r.reasons = make(map[string]uint64)
		}
		r.reasons[e.TLS.Reason()]++
	}
	r.latency.add(e.Latency)
	r.Last = e.Time
	if a.first.IsZero() || e.Time.Before(a.first) {
		a.first = e.Time
	}
	if e.Time.After(a.last) {
		a.last = e.Time
	}
}

// dstName names a destination by its resource, else by authority, else by
// address: an unmeshed server is still recognisable by the name it was
// called by.
func dstName(e *Event) string {
	if r := e.Dst.Resource(); r != "" {
		return r
	}
	if e.Authority != "" {
		return e.Authority
	}
	return e.Dst.Name()
}

// Span is the time between the first and last request counted.
func (a *Aggregator) Span() time.Duration { return a.last.Sub(a.first) }

// SortKey orders aggregate rows.
type SortKey uint8

// Sort orders, cycled by the TUI's `s` key.
const (
	SortByCount SortKey = iota
	SortBySuccess
	SortByLatency
	SortByTLS
	SortByName
	sortKeys
)

// Next is the following sort order.
func (s SortKey) Next() SortKey { return (s + 1) % sortKeys }

func (s SortKey) String() string {
	return [...]string{"count", "success", "p99", "tls", "name"}[s]
}

// Rows returns the rows in order: busiest, least successful, slowest or
// least encrypted first, or by name.
func (a *Aggregator) Rows(by SortKey) []*AggRow {
	rows := make([]*AggRow, 0, len(a.rows))
	for _, r := range a.rows {
		rows = append(rows, r)
	}
	name := func(i, j int) bool {
		ki, kj := rows[i].Key, rows[j].Key
		if ki.Src != kj.Src {
			return ki.Src < kj.Src
		}
		if ki.Dst != kj.Dst {
			return ki.Dst < kj.Dst
		}
		if ki.Path != kj.Path {
			return ki.Path < kj.Path
		}
		return ki.Method < kj.Method
	}
	sort.Slice(rows, func(i, j int) bool {
		ri, rj := rows[i], rows[j]
		switch by {
		case SortByCount:
			if ri.Count != rj.Count {
				return ri.Count > rj.Count
			}
		case SortBySuccess:
			if si, sj := ri.SuccessRate(), rj.SuccessRate(); si != sj {
				return si < sj
			}
		case SortByLatency:
			if li, lj := ri.Quantile(0.99), rj.Quantile(0.99); li != lj {
				return li > lj
			}
		case SortByTLS:
			if ti, tj := ri.TLSRate(), rj.TLSRate(); ti != tj {
				return ti < tj
			}
		}
		return name(i, j)
	})
	return rows
}

// latencyHistogram keeps latencies in logarithmic buckets 2% wide, from
// 1µs to about 20 minutes: fixed memory per row, quantiles within 2%.
type latencyHistogram struct {
	counts []uint32
	total  uint64
}

const (
	histGrowth  = 1.02
	histBuckets = 1100
)

var logGrowth = math.Log(histGrowth)

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	return min(int(math.Ceil(math.Log(us)/logGrowth)), histBuckets-1)
}

func (h *latencyHistogram) add(d time.Duration) {
	if h.counts == nil {
		h.counts = make([]uint32, histBuckets)
	}
	h.counts[bucketOf(d)]++
	h.total++
}

// quantile returns the upper bound of the bucket holding the q-th value,
// rounded to the microsecond.
func (h *latencyHistogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += uint64(c)
		if seen >= rank {
			return time.Duration(math.Round(math.Pow(histGrowth, float64(i)))) * time.Microsecond
		}
	}
	return 0
}
