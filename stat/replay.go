package stat

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/http"
	"path"
	"sort"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Replay serves a capture's pods as live proxies: each meshed pod gets its
// own loopback listener whose /metrics counters grow linearly from the
// capture's first scrape at the capture's own rate, for as long as the
// replay runs. Linear growth makes Prometheus's extrapolating increase()
// exact, so Prometheus and the capture must agree on every figure.
type Replay struct {
	Targets []ReplayTarget
	servers []*http.Server
	wg      sync.WaitGroup
}

// ReplayTarget is one served pod.
type ReplayTarget struct {
	Pod  Pod
	Addr string // host:port of its /metrics
}

type replayPod struct {
	start    []*dto.MetricFamily
	increase map[string][]float64 // family -> per metric value increases over span
	span     time.Duration
	began    time.Time
	step     time.Duration
}

// stepDown rounds a Unix millisecond instant down to a multiple of step.
func stepDown(ms int64, step time.Duration) int64 {
	if s := step.Milliseconds(); s > 0 {
		return ms - ms%s
	}
	return ms
}

// ReplayOptions narrow what a replay serves.
type ReplayOptions struct {
	// Pod, as "namespace/name", serves only that pod.
	Pod string
	// Listen is the address to serve on; default 127.0.0.1:0 (one free port
	// per pod). With several pods only a port of 0 makes sense.
	Listen string
	// Step, when set, rounds each scrape's instant down to a multiple of
	// it. With Step equal to a Prometheus scrape interval, samples land on
	// a shared grid, so a query evaluated at a grid instant finds samples
	// exactly at both ends of its range and increase() needs no
	// extrapolation, however irregular a loaded machine makes the scrapes.
	Step time.Duration
}

// StartReplay serves every meshed pod of c on 127.0.0.1, each on a free port.
func StartReplay(c *Capture) (*Replay, error) { return StartReplayWith(c, ReplayOptions{}) }

// StartReplayWith serves the capture's pods as opts says.
func StartReplayWith(c *Capture, opts ReplayOptions) (*Replay, error) {
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	found := opts.Pod == ""
	first, last := c.Span(0)
	recs := c.manifest.Scrapes
	span := recs[last].Time.Sub(recs[first].Time)
	r := &Replay{}
	began := time.UnixMilli(stepDown(time.Now().UnixMilli(), opts.Step))
	for _, p := range c.manifest.Pods {
		if !p.Meshed || (opts.Pod != "" && opts.Pod != p.Namespace+"/"+p.Name) {
			continue
		}
		found = true
		a, err := readFamilies(c.fsys, path.Join(recs[first].Dir, p.Namespace, p.Name+".prom"))
		if err != nil {
			r.Close()
			return nil, err
		}
		b, err := readFamilies(c.fsys, path.Join(recs[last].Dir, p.Namespace, p.Name+".prom"))
		if err != nil {
			r.Close()
			return nil, err
		}
		rp := &replayPod{start: a, increase: familyIncreases(a, b), span: span, began: began, step: opts.Step}
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			r.Close()
			return nil, err
		}
		srv := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
		r.servers = append(r.servers, srv)
		r.Targets = append(r.Targets, ReplayTarget{Pod: p, Addr: ln.Addr().String()})
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			_ = srv.Serve(ln)
		}()
	}
	if !found {
		r.Close()
		return nil, fmt.Errorf("%s has no meshed pod %s", c.name, opts.Pod)
	}
	return r, nil
}

// Close stops every listener.
func (r *Replay) Close() {
	for _, s := range r.servers {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = s.Shutdown(ctx)
		cancel()
	}
	r.wg.Wait()
}

func readFamilies(fsys fs.FS, file string) ([]*dto.MetricFamily, error) {
	raw, err := fs.ReadFile(fsys, file)
	if err != nil {
		return nil, err
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, &ScrapeError{Source: file, Err: err}
	}
	names := make([]string, 0, len(fams))
	for n := range fams {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]*dto.MetricFamily, 0, len(names))
	for _, n := range names {
		out = append(out, fams[n])
	}
	return out, nil
}

// metricValues flattens a metric into its numbers: the value, or a
// histogram's bucket counts then count and sum.
func metricValues(m *dto.Metric) []float64 {
	switch {
	case m.Counter != nil:
		return []float64{m.Counter.GetValue()}
	case m.Gauge != nil:
		return []float64{m.Gauge.GetValue()}
	case m.Untyped != nil:
		return []float64{m.Untyped.GetValue()}
	case m.Histogram != nil:
		var v []float64
		for _, b := range m.Histogram.GetBucket() {
			c := float64(b.GetCumulativeCount())
			if b.CumulativeCountFloat != nil {
				c = b.GetCumulativeCountFloat()
			}
			v = append(v, c)
		}
		count := float64(m.Histogram.GetSampleCount())
		if m.Histogram.SampleCountFloat != nil {
			count = m.Histogram.GetSampleCountFloat()
		}
		return append(v, count, m.Histogram.GetSampleSum())
	case m.Summary != nil:
		return []float64{float64(m.Summary.GetSampleCount()), m.Summary.GetSampleSum()}
	}
	return nil
}

func metricID(m *dto.Metric) string {
	var b bytes.Buffer
	for _, l := range m.GetLabel() {
		fmt.Fprintf(&b, "%s=%q,", l.GetName(), l.GetValue())
	}
	return b.String()
}

// familyIncreases finds how much each number grew from a to b. Gauges do
// not grow; a number missing from b keeps its value.
func familyIncreases(a, b []*dto.MetricFamily) map[string][]float64 {
	later := map[string][]float64{}
	for _, f := range b {
		for _, m := range f.GetMetric() {
			later[f.GetName()+"|"+metricID(m)] = metricValues(m)
		}
	}
	out := map[string][]float64{}
	for _, f := range a {
		for _, m := range f.GetMetric() {
			key := f.GetName() + "|" + metricID(m)
			before := metricValues(m)
			after, ok := later[key]
			inc := make([]float64, len(before))
			if ok && len(after) == len(before) && f.GetType() != dto.MetricType_GAUGE {
				for i := range before {
					inc[i] = counterIncrease(before[i], after[i])
				}
			}
			out[key] = inc
		}
	}
	return out
}

func (p *replayPod) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/metrics" {
		http.NotFound(w, req)
		return
	}
	// Each sample carries the instant its value was computed for, so a
	// scraper that honours timestamps (Prometheus does by default) sees
	// exact linear growth however late a loaded machine serves the scrape.
	nowMs := stepDown(time.Now().UnixMilli(), p.step)
	frac := time.UnixMilli(nowMs).Sub(p.began).Seconds() / p.span.Seconds()
	// The page is written whole or not at all: a family that cannot be
	// encoded must fail the scrape, not end the page early (a scraper
	// would take a cut page for a pod with fewer metrics).
	var page bytes.Buffer
	for _, f := range p.start {
		scaled := &dto.MetricFamily{Name: f.Name, Help: f.Help, Type: f.Type}
		for _, m := range f.GetMetric() {
			inc := p.increase[f.GetName()+"|"+metricID(m)]
			am := advance(m, inc, frac)
			am.TimestampMs = &nowMs
			scaled.Metric = append(scaled.Metric, am)
		}
		if _, err := expfmt.MetricFamilyToText(&page, scaled); err != nil {
			http.Error(w, fmt.Sprintf("replay of %s: %v", f.GetName(), err), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	_, _ = w.Write(page.Bytes())
}

// advance returns m with each number grown by frac of its increase.
func advance(m *dto.Metric, inc []float64, frac float64) *dto.Metric {
	vals := metricValues(m)
	for i := range vals {
		if i < len(inc) {
			vals[i] += inc[i] * frac
		}
	}
	out := &dto.Metric{Label: m.Label}
	switch {
	case m.Counter != nil:
		out.Counter = &dto.Counter{Value: &vals[0]}
	case m.Gauge != nil:
		out.Gauge = &dto.Gauge{Value: &vals[0]}
	case m.Untyped != nil:
		out.Untyped = &dto.Untyped{Value: &vals[0]}
	case m.Histogram != nil:
		h := &dto.Histogram{}
		n := len(m.Histogram.GetBucket())
		for i, b := range m.Histogram.GetBucket() {
			c := vals[i]
			h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: b.UpperBound, CumulativeCountFloat: &c})
		}
		h.SampleCountFloat = &vals[n]
		h.SampleSum = &vals[n+1]
		out.Histogram = h
	case m.Summary != nil:
		// Proxies export summaries only for the Go runtime, which stat
		// never reads; a whole count and its quantiles as first scraped
		// are enough for them.
		count := uint64(math.Round(vals[0]))
		out.Summary = &dto.Summary{SampleCount: &count, SampleSum: &vals[1], Quantile: m.Summary.Quantile}
	}
	return out
}
