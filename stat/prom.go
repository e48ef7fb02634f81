package stat

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
)

// Prometheus answers stat queries with PromQL, as Linkerd's public API did.
type Prometheus struct {
	url string
	api promv1.API
	// Now fixes the evaluation time; zero means the server's now.
	Now time.Time
}

// NewPrometheus returns a source that queries the Prometheus at rawURL.
func NewPrometheus(rawURL string) (*Prometheus, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("invalid --prometheus-url %q: want http(s)://host:port", rawURL)
	}
	client, err := promapi.NewClient(promapi.Config{Address: rawURL})
	if err != nil {
		return nil, fmt.Errorf("invalid --prometheus-url %q: %v", rawURL, err)
	}
	return &Prometheus{url: rawURL, api: promv1.NewAPI(client)}, nil
}

func (p *Prometheus) collect(_ context.Context, window time.Duration, _ []Pod, _ []vectorQuery) (evaluator, error) {
	if window <= 0 {
		window = time.Minute
	}
	at := p.Now
	if at.IsZero() {
		at = time.Now()
	}
	return &promEvaluator{p: p, span: window, at: at}, nil
}

type promEvaluator struct {
	p    *Prometheus
	span time.Duration
	at   time.Time
}

func (e *promEvaluator) window() time.Duration { return e.span }

func (e *promEvaluator) query(ctx context.Context, promql string) (model.Vector, error) {
	v, _, _, err := e.p.api.Query(ctx, promql, e.at)
	if err != nil {
		var netErr net.Error
		var urlErr *url.Error
		if errors.As(err, &urlErr) || errors.As(err, &netErr) {
			return nil, fmt.Errorf("cannot reach Prometheus at %s: %v", e.p.url, rootCause(err))
		}
		return nil, fmt.Errorf("Prometheus at %s rejected query %s: %v", e.p.url, promql, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("Prometheus at %s returned %s, want a vector, for %s", e.p.url, v.Type(), promql)
	}
	return vec, nil
}

func rootCause(err error) error {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err
		}
		err = next
	}
}

func (e *promEvaluator) sum(ctx context.Context, q vectorQuery) ([]sample, error) {
	vec, err := e.query(ctx, q.PromQL(promDuration(e.span)))
	if err != nil {
		return nil, err
	}
	out := make([]sample, 0, len(vec))
	for _, s := range vec {
		out = append(out, sample{Labels: metricLabels(s.Metric), Value: float64(s.Value)})
	}
	return out, nil
}

func (e *promEvaluator) quantiles(ctx context.Context, q vectorQuery, qs []float64) ([]quantileSample, error) {
	byKey := map[string]*quantileSample{}
	var order []string
	for i, qv := range qs {
		vec, err := e.query(ctx, q.QuantilePromQL(qv, promDuration(e.span)))
		if err != nil {
			return nil, err
		}
		for _, s := range vec {
			key := s.Metric.String()
			g, ok := byKey[key]
			if !ok {
				vals := make([]float64, len(qs))
				for j := range vals {
					vals[j] = math.NaN()
				}
				g = &quantileSample{Labels: metricLabels(s.Metric), Values: vals}
				byKey[key] = g
				order = append(order, key)
			}
			g.Values[i] = float64(s.Value)
		}
	}
	out := make([]quantileSample, 0, len(order))
	for _, k := range order {
		out = append(out, *byKey[k])
	}
	return out, nil
}

func metricLabels(m model.Metric) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[string(k)] = string(v)
	}
	return out
}

func promDuration(d time.Duration) string {
	return model.Duration(d).String()
}
