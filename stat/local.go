package stat

import (
	"context"
	"math"
	"runtime"
	"strings"
	"sync"
	"time"
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
	withLE := q
	withLE.By = append(append([]string{}, q.By...), "le")
	bucketSums, err := d.sum(ctx, withLE)
	if err != nil {
		return nil, err
	}
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
		for _, b := range q.By {
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
	return out, nil
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
	Name    string // pod or file, for errors
	Target  map[string]string
	Scrapes []scrapeText
}

// scrapeText is one scrape body; Open returns its text and Source names
// where it came from (a pod, or a file of a capture) for errors.
type scrapeText interface {
	Open() ([]byte, error)
	Source() string
}

// increases computes each series' increase across a target's scrapes,
// summing counter increases between successive samples and restarting
// from zero after a reset. A series first seen after the first scrape was
// created inside the window, so its whole value counts.
func increases(t targetScrapes) ([]series, error) {
	var prev map[string]float64
	var last []series
	total := map[string]float64{}
	seenFirst := false
	for _, sc := range t.Scrapes {
		if sc == nil {
			continue
		}
		body, err := sc.Open()
		if err != nil {
			return nil, &ScrapeError{Source: sc.Source(), Err: err}
		}
		cur, err := parseScrape(bytesReader(body), t.Target)
		if err != nil {
			return nil, &ScrapeError{Source: sc.Source(), Err: err}
		}
		vals := make(map[string]float64, len(cur))
		for i := range cur {
			k := cur[i].key()
			vals[k] = cur[i].Value
			if !seenFirst {
				continue
			}
			p, ok := prev[k]
			if !ok {
				total[k] += cur[i].Value
			} else {
				total[k] += counterIncrease(p, cur[i].Value)
			}
		}
		seenFirst = true
		prev, last = vals, cur
	}
	for i := range last {
		last[i].Value = total[last[i].key()]
	}
	return last, nil
}

// buildDeltas computes the increases of many targets in parallel.
func buildDeltas(ctx context.Context, targets []targetScrapes, span time.Duration) (*deltaSet, error) {
	results := make([][]series, len(targets))
	errs := make([]error, len(targets))
	work := make(chan int)
	var wg sync.WaitGroup
	workers := runtime.GOMAXPROCS(0)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				results[i], errs[i] = increases(targets[i])
			}
		}()
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
	d := &deltaSet{span: span}
	n := 0
	for i, err := range errs {
		if err != nil {
			return nil, err
		}
		n += len(results[i])
	}
	d.series = make([]series, 0, n)
	for _, r := range results {
		d.series = append(d.series, r...)
	}
	return d, nil
}
