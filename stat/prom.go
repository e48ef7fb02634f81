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
	"sigs.k8s.io/yaml"
)

// Prometheus answers stat queries with PromQL, as Linkerd's public API did.
type Prometheus struct {
	url string
	api promv1.API
	// Now fixes the evaluation time; zero means the server's now.
	Now time.Time
	// Name says which Prometheus this is in messages; default its URL.
	Name string
	// Timeout bounds each query; zero means DefaultPrometheusTimeout.
	Timeout time.Duration
}

// DefaultPrometheusTimeout bounds one PromQL query.
const DefaultPrometheusTimeout = 30 * time.Second

func (p *Prometheus) timeout() time.Duration {
	if p.Timeout > 0 {
		return p.Timeout
	}
	return DefaultPrometheusTimeout
}

func (p *Prometheus) name() string {
	if p.Name != "" {
		return p.Name
	}
	return p.url
}

// WindowError is a window too short for Prometheus's scrape interval:
// increase() needs two samples inside it.
type WindowError struct {
	Window, Interval time.Duration
}

func (e *WindowError) Error() string {
	return fmt.Sprintf("-t %s is shorter than twice Prometheus's scrape interval (%s): increase() needs two samples in the window; use -t %s or more (Linkerd asks for at least 15s)",
		e.Window, e.Interval, 2*e.Interval)
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

func (p *Prometheus) collect(ctx context.Context, window time.Duration, _ []Pod, _ []vectorQuery) (evaluator, error) {
	if window <= 0 {
		window = time.Minute
	}
	if iv := p.scrapeInterval(ctx); iv > 0 && window < 2*iv {
		return nil, &WindowError{Window: window, Interval: iv}
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
	timeout := e.p.timeout()
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	v, _, _, err := e.p.api.Query(qctx, promql, e.at, promv1.WithTimeout(timeout))
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(qctx.Err(), context.DeadlineExceeded) {
			return nil, fmt.Errorf("Prometheus at %s did not answer within %s", e.p.name(), timeout)
		}
		var netErr net.Error
		var urlErr *url.Error
		if errors.As(err, &urlErr) || errors.As(err, &netErr) {
			return nil, fmt.Errorf("cannot reach Prometheus at %s: %v", e.p.name(), rootCause(err))
		}
		return nil, fmt.Errorf("Prometheus at %s rejected query %s: %v", e.p.name(), promql, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("Prometheus at %s returned %s, want a vector, for %s", e.p.name(), v.Type(), promql)
	}
	return vec, nil
}

// scrapeInterval is the interval at which Prometheus scrapes proxies: its
// linkerd-proxy job's (as install and Linkerd name it), else the longest
// of its jobs; 0 when it cannot say.
func (p *Prometheus) scrapeInterval(ctx context.Context) time.Duration {
	ctx, cancel := context.WithTimeout(ctx, p.timeout())
	defer cancel()
	cfg, err := p.api.Config(ctx)
	if err != nil {
		return 0
	}
	var parsed struct {
		Global struct {
			ScrapeInterval string `json:"scrape_interval"`
		} `json:"global"`
		ScrapeConfigs []struct {
			JobName        string `json:"job_name"`
			ScrapeInterval string `json:"scrape_interval"`
		} `json:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(cfg.YAML), &parsed); err != nil {
		return 0
	}
	global := time.Minute // Prometheus's default
	if d, err := model.ParseDuration(parsed.Global.ScrapeInterval); err == nil {
		global = time.Duration(d)
	}
	longest := time.Duration(0)
	for _, sc := range parsed.ScrapeConfigs {
		iv := global
		if d, err := model.ParseDuration(sc.ScrapeInterval); err == nil {
			iv = time.Duration(d)
		}
		if sc.JobName == "linkerd-proxy" {
			return iv
		}
		longest = max(longest, iv)
	}
	return longest
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
