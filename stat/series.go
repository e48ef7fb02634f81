package stat

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

// labelPair is one label of a series.
type labelPair struct{ Name, Value string }

// series is one sample of one time series, with the scrape target's
// labels (namespace, pod, workload) already attached.
type series struct {
	Metric string
	Labels []labelPair // sorted by name
	Value  float64
}

func (s *series) get(name string) string {
	for _, l := range s.Labels {
		if l.Name == name {
			return l.Value
		}
	}
	return ""
}

// wanted are the series stat reads; everything else in a scrape is
// skipped before its labels are even decoded.
var wanted = map[string]bool{
	metricResponses: true, metricLatency: true,
	metricTCPOpen: true, metricTCPRead: true, metricTCPWritten: true,
	metricRefused: true,
}

// isGauge says whether a series' text is of a gauge stat reads, whose
// latest value counts rather than its increase.
func isGauge(raw []byte) bool {
	rest, ok := bytes.CutPrefix(raw, []byte(metricTCPOpen))
	return ok && len(rest) > 0 && (rest[0] == '{' || rest[0] == ' ')
}

// scanScrape calls fn for each sample stat needs in one proxy's /metrics
// text. It uses the Prometheus server's own scrape parser, which is several
// times faster than expfmt's; when the text is malformed, expfmt parses it
// again to say which line is wrong.
//
// fn gets the raw series text; it calls decode only when it needs the
// labels, which is most of the parsing cost.
func scanScrape(body []byte, fn func(raw []byte, ts *int64, v float64, decode func() labels.Labels)) error {
	p := textparse.NewPromParser(body, labels.NewSymbolTable(), false)
	var lset labels.Labels
	decode := func() labels.Labels {
		p.Labels(&lset)
		return lset
	}
	for {
		entry, err := p.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return explainParseError(body, err)
		}
		if entry != textparse.EntrySeries {
			continue
		}
		raw, ts, v := p.Series()
		if !wanted[seriesName(raw)] {
			continue
		}
		fn(raw, ts, v, decode)
	}
}

// seriesName is the metric name at the start of a series' text.
func seriesName(raw []byte) string {
	if i := bytes.IndexAny(raw, "{ "); i >= 0 {
		raw = raw[:i]
	}
	return string(raw)
}

func explainParseError(body []byte, fast error) error {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	if _, err := parser.TextToMetricFamilies(bytes.NewReader(body)); err != nil {
		return err
	}
	return fast
}

// parseScrape returns the series stat needs, with target labels attached.
// Target labels override clashing metric labels, which are kept as
// exported_<name>, as Prometheus does with honor_labels: false.
func parseScrape(body []byte, target map[string]string) ([]series, error) {
	var out []series
	err := scanScrape(body, func(_ []byte, _ *int64, v float64, decode func() labels.Labels) {
		lset := decode()
		out = append(out, series{Metric: lset.Get(labels.MetricName), Labels: withTarget(lset, target), Value: v})
	})
	return out, err
}

func withTarget(lset labels.Labels, target map[string]string) []labelPair {
	return mergeTarget(lset, target, sortedTarget(target))
}

// sortedTarget is a target's labels sorted by name, computed once per pod.
func sortedTarget(target map[string]string) []labelPair {
	out := make([]labelPair, 0, len(target))
	for k, v := range target {
		out = append(out, labelPair{k, v})
	}
	sortLabels(out)
	return out
}

// mergeTarget merges a series' labels (sorted, as the parser gives them)
// with the target's sorted labels, without a sort in the common case.
func mergeTarget(lset labels.Labels, target map[string]string, sorted []labelPair) []labelPair {
	out := make([]labelPair, 0, lset.Len()+len(sorted))
	renamed := false
	ti := 0
	lset.Range(func(l labels.Label) {
		if l.Name == labels.MetricName {
			return
		}
		name := l.Name
		if _, clash := target[name]; clash {
			name = "exported_" + name
			renamed = true
		}
		for ti < len(sorted) && sorted[ti].Name < name {
			out = append(out, sorted[ti])
			ti++
		}
		out = append(out, labelPair{name, l.Value})
	})
	out = append(out, sorted[ti:]...)
	if renamed {
		sortLabels(out)
	}
	return out
}

func sortLabels(ls []labelPair) {
	slices.SortFunc(ls, func(a, b labelPair) int { return strings.Compare(a.Name, b.Name) })
}

// counterIncrease is the increase of a counter from one sample to the
// next. A drop means the proxy restarted and counted again from zero, so
// the whole later value is new, as Prometheus's increase() assumes.
func counterIncrease(prev, cur float64) float64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// ScrapeError names where a malformed scrape came from.
type ScrapeError struct {
	Source string // pod or file
	Err    error
}

func (e *ScrapeError) Error() string {
	return fmt.Sprintf("malformed metrics from %s: %v", e.Source, e.Err)
}

func (e *ScrapeError) Unwrap() error { return e.Err }
