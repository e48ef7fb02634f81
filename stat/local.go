package stat

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"
)

// sample is one group of a query result.
type sample struct {
	Labels map[string]string
	Value  float64
}

// quantileSample is one group's latency quantiles, in the order asked.
type quantileSample struct {
	Labels map[string]string
	Values []float64
}

// evaluator answers the queries of one stat request over one window.
type evaluator interface {
	sum(ctx context.Context, q vectorQuery) ([]sample, error)
	quantiles(ctx context.Context, q vectorQuery, qs []float64) ([]quantileSample, error)
	window() time.Duration
}

// deltaSet holds the increase of every series over a window and evaluates
// queries on them in memory, as Prometheus would on its side.
type deltaSet struct {
	series []series // Value is the increase over the window
	span   time.Duration
}

func (d *deltaSet) window() time.Duration { return d.span }

func (d *deltaSet) sum(_ context.Context, q vectorQuery) ([]sample, error) {
	groups := map[string]*sample{}
	var order []string
	var key strings.Builder
next:
	for i := range d.series {
		s := &d.series[i]
		if s.Metric != q.Metric {
			continue
		}
		for _, m := range q.Matchers {
			if !m.matches(s.get(m.Name)) {
				continue next
			}
		}
		key.Reset()
		for _, b := range q.By {
			key.WriteString(s.get(b))
			key.WriteByte(0xff)
		}
		g, ok := groups[key.String()]
		if !ok {
			labels := make(map[string]string, len(q.By))
			for _, b := range q.By {
				if v := s.get(b); v != "" {
					labels[b] = v
				}
			}
			g = &sample{Labels: labels}
			groups[key.String()] = g
			order = append(order, key.String())
		}
		g.Value += s.Value
	}
	out := make([]sample, 0, len(order))
	for _, k := range order {
		out = append(out, *groups[k])
	}
	return out, nil
}

func (d *deltaSet) quantiles(ctx context.Context, q vectorQuery, qs []float64) ([]quantileSample, error) {
	buckets, err := d.sum(ctx, q.withLE())
	if err != nil {
		return nil, err
	}
	return quantilesFromBuckets(buckets, q.By, qs), nil
}

// quantilesFromBuckets groups bucket sums (by le and by) and interpolates
// each group's quantiles.
func quantilesFromBuckets(bucketSums []sample, by []string, qs []float64) []quantileSample {
	type group struct {
		labels  map[string]string
		buckets []bucket
	}
	groups := map[string]*group{}
	var order []string
	for _, s := range bucketSums {
		le, err := parseLE(s.Labels["le"])
		if err != nil {
			// Prometheus ignores series whose le is not a number; so do we.
			continue
		}
		var key strings.Builder
		labels := map[string]string{}
		for _, b := range by {
			key.WriteString(s.Labels[b])
			key.WriteByte(0xff)
			if v := s.Labels[b]; v != "" {
				labels[b] = v
			}
		}
		g, ok := groups[key.String()]
		if !ok {
			g = &group{labels: labels}
			groups[key.String()] = g
			order = append(order, key.String())
		}
		g.buckets = append(g.buckets, bucket{upper: le, count: s.Value})
	}
	out := make([]quantileSample, 0, len(order))
	for _, k := range order {
		g := groups[k]
		vals := make([]float64, len(qs))
		for i, qv := range qs {
			vals[i] = histogramQuantile(qv, g.buckets)
		}
		out = append(out, quantileSample{Labels: g.labels, Values: vals})
	}
	return out
}

func parseLE(s string) (float64, error) {
	if s == "+Inf" {
		return math.Inf(1), nil
	}
	return parseFloat(s)
}

// targetScrapes are the successive scrapes of one target, oldest first.
// Each element is nil when the target was not scraped at that time.
type targetScrapes struct {
	Name   string // pod or file, for errors
	Target map[string]string
	// Keep, when set, names the only labels worth keeping.
	Keep    map[string]bool
	Scrapes []scrapeText
}

// scrapeText is one scrape body; Open returns its text and Source names
// where it came from (a pod, or a file of a capture) for errors.
type scrapeText interface {
	Open() ([]byte, error)
	Source() string
}

// timedScrape is a scrape that knows when it arrived. Samples that carry
// their own timestamp override that instant, as Prometheus honours them.
type timedScrape interface {
	At() time.Time
}

// counterRun is what Prometheus's increase() keeps of one series over a
// range: its first and last samples, how many there were, and the values
// lost to counter resets.
type counterRun struct {
	first, last, resets float64
	n                   int
}

// add takes the next sample. A value below the previous one means the
// proxy restarted and counted again from zero, so the previous value is
// added back, exactly as Prometheus does; a NaN compares false and so
// flows into the result as it does there.
func (c *counterRun) add(v float64) {
	if c.n == 0 {
		c.first = v
	} else if v < c.last {
		c.resets += c.last
	}
	c.last = v
	c.n++
}

func (c *counterRun) increase() float64 { return c.last - c.first + c.resets }

// increases computes each series' increase across a target's scrapes as
// Prometheus's increase() does: last minus first plus what counter resets
// lost. Like Prometheus, a series needs two samples: one first seen in the
// last scrape has no increase yet and is left out. Series are matched
// across scrapes by a hash of their text, as Prometheus's scrape cache
// matches them (a proxy writes a series' labels in a fixed order); only
// the last scrape's series are decoded in full.
//
// When the scrapes know their instants (timedScrape, or timestamps on the
// samples) and window is set, the increases are scaled from the target's
// own first-to-last interval to window, as Prometheus's increase()
// extrapolates to its range: a pod served late in one round and early in
// the next is not over-counted. A series that appeared after the target's
// first scrape is scaled the same way, where Prometheus would extrapolate
// it only half an interval (see fixtures/README.md).
func increases(t targetScrapes, window time.Duration) ([]series, error) {
	last := -1
	for i, sc := range t.Scrapes {
		if sc != nil {
			last = i
		}
	}
	if last < 0 {
		return nil, nil
	}
	var runs map[uint64]counterRun
	var out, gauges []series
	var firstAt, at time.Time
	seenFirst := false
	target := sortedTarget(t.Target)
	for i, sc := range t.Scrapes {
		if sc == nil {
			continue
		}
		body, err := sc.Open()
		if err != nil {
			return nil, &ScrapeError{Source: sc.Source(), Err: err}
		}
		at = time.Time{}
		if ts, ok := sc.(timedScrape); ok {
			at = ts.At()
		}
		stamped := false
		if runs == nil {
			// Size for the first scrape's series from its length (about
			// 150 bytes a series), so the map does not grow step by step.
			runs = make(map[uint64]counterRun, len(body)/150)
		}
		err = scanScrape(body, func(raw []byte, ts *int64, v float64, decode func() labels.Labels) {
			if ts != nil && !stamped {
				at, stamped = time.UnixMilli(*ts), true
			}
			h := xxhash.Sum64(raw)
			r := runs[h]
			r.add(v)
			runs[h] = r
			if i != last {
				return
			}
			if isGauge(raw) {
				// A gauge is read now, as an instant query reads it.
				lset := decode()
				gauges = append(gauges, series{Metric: lset.Get(labels.MetricName), Labels: mergeTarget(lset, t.Target, target), Value: v})
			} else if r.n >= 2 {
				lset := decode()
				out = append(out, series{Metric: lset.Get(labels.MetricName), Labels: mergeTarget(lset, t.Target, target), Value: r.increase()})
			}
		})
		if err != nil {
			return nil, &ScrapeError{Source: sc.Source(), Err: err}
		}
		if !seenFirst {
			firstAt = at
		}
		seenFirst = true
	}
	if own := at.Sub(firstAt); window > 0 && !firstAt.IsZero() && !at.IsZero() && own > 0 {
		scale := window.Seconds() / own.Seconds()
		for i := range out {
			out[i].Value *= scale
		}
	}
	return append(out, gauges...), nil
}

// scrapedRounds counts the rounds in which a target answered.
func scrapedRounds(t targetScrapes) int {
	n := 0
	for _, sc := range t.Scrapes {
		if sc != nil {
			n++
		}
	}
	return n
}

// aggregates holds the prepared query results of a client-side source.
type aggregates struct {
	results map[string][]sample // by vectorQuery.id
	span    time.Duration
	// missed are targets scraped fewer than twice, which have no figures.
	missed []string
}

func (a *aggregates) warnings() []string { return a.missed }

func (a *aggregates) window() time.Duration { return a.span }

func (a *aggregates) sum(_ context.Context, q vectorQuery) ([]sample, error) {
	r, ok := a.results[q.id()]
	if !ok {
		return nil, fmt.Errorf("internal error: query %s was not prepared", q.id())
	}
	return r, nil
}

func (a *aggregates) quantiles(ctx context.Context, q vectorQuery, qs []float64) ([]quantileSample, error) {
	buckets, err := a.sum(ctx, q.withLE())
	if err != nil {
		return nil, err
	}
	return quantilesFromBuckets(buckets, q.By, qs), nil
}

// partial accumulates query sums across pods.
type partial struct {
	groups map[string]*sample
	order  []string
}

func (p *partial) add(s sample) {
	key := groupKey(s.Labels)
	g, ok := p.groups[key]
	if !ok {
		labels := make(map[string]string, len(s.Labels))
		for k, v := range s.Labels {
			labels[k] = strings.Clone(v) // do not pin a pod's scrape text
		}
		g = &sample{Labels: labels}
		p.groups[key] = g
		p.order = append(p.order, key)
	}
	g.Value += s.Value
}

func groupKey(l map[string]string) string {
	var b strings.Builder
	for _, k := range sortedKeys(l) {
		b.WriteString(k)
		b.WriteByte(0xfe)
		b.WriteString(l[k])
		b.WriteByte(0xff)
	}
	return b.String()
}

// buildDeltas computes the increases of many targets in parallel and
// reduces each target to the sums of queries right away.
func buildDeltas(ctx context.Context, targets []targetScrapes, span time.Duration, queries []vectorQuery) (*aggregates, error) {
	workers := runtime.GOMAXPROCS(0)
	perWorker := make([][]partial, workers)
	errs := make([]error, workers)
	work := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		parts := make([]partial, len(queries))
		for i := range parts {
			parts[i].groups = map[string]*sample{}
		}
		perWorker[w] = parts
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := range work {
				if errs[w] != nil {
					continue
				}
				series, err := increases(targets[i], span)
				if err != nil {
					errs[w] = err
					continue
				}
				pod := &deltaSet{series: series}
				for qi, q := range queries {
					sums, _ := pod.sum(ctx, q)
					for _, s := range sums {
						perWorker[w][qi].add(s)
					}
				}
			}
		}(w)
	}
feed:
	for i := range targets {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	agg := &aggregates{results: map[string][]sample{}, span: span}
	for _, t := range targets {
		if n := scrapedRounds(t); n < 2 {
			agg.missed = append(agg.missed, fmt.Sprintf("no figures for %s: scraped in %d of %d rounds, and an increase needs two", t.Name, n, len(t.Scrapes)))
		}
	}
	for qi, q := range queries {
		merged := partial{groups: map[string]*sample{}}
		for w := range perWorker {
			p := perWorker[w][qi]
			for _, k := range p.order {
				merged.add(*p.groups[k])
			}
		}
		out := make([]sample, 0, len(merged.order))
		for _, k := range merged.order {
			out = append(out, *merged.groups[k])
		}
		agg.results[q.id()] = out
	}
	return agg, nil
}
