package stat

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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

// key identifies the series across scrapes of the same target.
func (s *series) key() string {
	n := len(s.Metric)
	for _, l := range s.Labels {
		n += len(l.Name) + len(l.Value) + 2
	}
	var b strings.Builder
	b.Grow(n)
	b.WriteString(s.Metric)
	for _, l := range s.Labels {
		b.WriteByte(0xff)
		b.WriteString(l.Name)
		b.WriteByte(0xfe)
		b.WriteString(l.Value)
	}
	return b.String()
}

// wanted are the metric families stat reads; everything else in a scrape
// is skipped after parsing.
var wanted = map[string]bool{"response_total": true, "response_latency_ms": true, "response_latency_ms_bucket": true}

// parseScrape reads one proxy's /metrics text and returns the series stat
// needs. Target labels override clashing metric labels, which are kept as
// exported_<name>, as Prometheus does with honor_labels: false.
func parseScrape(r io.Reader, target map[string]string) ([]series, error) {
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	var out []series
	for name, mf := range families {
		if !wanted[name] {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := mergeLabels(m.GetLabel(), target)
			switch {
			case mf.GetType() == dto.MetricType_HISTOGRAM && m.Histogram != nil:
				out = appendBuckets(out, name, labels, m.Histogram)
			case m.Counter != nil:
				out = append(out, series{Metric: name, Labels: labels, Value: m.Counter.GetValue()})
			case m.Untyped != nil:
				out = append(out, series{Metric: name, Labels: labels, Value: m.Untyped.GetValue()})
			case m.Gauge != nil:
				out = append(out, series{Metric: name, Labels: labels, Value: m.Gauge.GetValue()})
			}
		}
	}
	return out, nil
}

func appendBuckets(out []series, family string, labels []labelPair, h *dto.Histogram) []series {
	for _, b := range h.GetBucket() {
		count := float64(b.GetCumulativeCount())
		if b.CumulativeCountFloat != nil {
			count = b.GetCumulativeCountFloat()
		}
		withLE := make([]labelPair, 0, len(labels)+1)
		withLE = append(withLE, labels...)
		withLE = append(withLE, labelPair{"le", formatLE(b.GetUpperBound())})
		sortLabels(withLE)
		out = append(out, series{Metric: family + "_bucket", Labels: withLE, Value: count})
	}
	return out
}

// formatLE spells a bucket bound as Prometheus stores it in the le label.
func formatLE(v float64) string {
	if math.IsInf(v, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

func mergeLabels(metric []*dto.LabelPair, target map[string]string) []labelPair {
	out := make([]labelPair, 0, len(metric)+len(target))
	for _, l := range metric {
		name := l.GetName()
		if _, clash := target[name]; clash {
			name = "exported_" + name
		}
		out = append(out, labelPair{name, l.GetValue()})
	}
	for k, v := range target {
		out = append(out, labelPair{k, v})
	}
	sortLabels(out)
	return out
}

func sortLabels(ls []labelPair) {
	sort.Slice(ls, func(i, j int) bool { return ls[i].Name < ls[j].Name })
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
