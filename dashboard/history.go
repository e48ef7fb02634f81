package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/http"
	"time"

	"meshtls/stat"
)

// History is where the per-deployment charts' figures come from: the
// same stat engine, over earlier windows.
type History interface {
	// Steps returns the windows to chart, oldest first.
	Steps(ctx context.Context) ([]Step, error)
}

// Step is one window of a chart: the metrics for the window that ends at
// End.
type Step struct {
	End     time.Time
	Window  time.Duration
	Metrics stat.MetricSource
	// Key names the step for the cache; steps of a live source move, so
	// theirs includes End.
	Key string
}

// maxSteps is how many windows a chart shows.
const maxSteps = 30

// CaptureHistory charts a capture round by round: each step is a capture
// of two consecutive rounds, read by the stat engine like any capture.
// It returns nil and a note when the capture has no history (two rounds
// make one window, a single point).
func CaptureHistory(fsys fs.FS, name string) (History, string, error) {
	c, err := stat.OpenCapture(fsys, name)
	if err != nil {
		return nil, "", err
	}
	m := c.Manifest()
	if len(m.Scrapes) < 3 {
		return nil, fmt.Sprintf("No history: %s has %d scrape rounds, one window; a chart needs at least three rounds.", name, len(m.Scrapes)), nil
	}
	h := &captureHistory{}
	first := max(1, len(m.Scrapes)-maxSteps)
	for i := first; i < len(m.Scrapes); i++ {
		sub := m
		sub.Scrapes = []stat.ScrapeRecord{m.Scrapes[i-1], m.Scrapes[i]}
		raw, err := json.Marshal(sub)
		if err != nil {
			return nil, "", err
		}
		step, err := stat.OpenCapture(manifestFS{fsys, raw}, fmt.Sprintf("%s rounds %d-%d", name, i-1, i))
		if err != nil {
			return nil, "", err
		}
		h.steps = append(h.steps, Step{End: m.Scrapes[i].Time, Window: m.Scrapes[i].Time.Sub(m.Scrapes[i-1].Time),
			Metrics: step, Key: fmt.Sprintf("capture round %d", i)})
	}
	return h, "", nil
}

type captureHistory struct{ steps []Step }

func (h *captureHistory) Steps(context.Context) ([]Step, error) { return h.steps, nil }

// manifestFS is a capture directory seen with another manifest, so a
// step reads only its own two rounds, with no copy of the scrapes.
type manifestFS struct {
	fs.FS
	manifest []byte
}

func (m manifestFS) Open(name string) (fs.File, error) {
	if name == stat.ManifestName {
		return &memFile{Reader: bytes.NewReader(m.manifest), size: int64(len(m.manifest))}, nil
	}
	return m.FS.Open(name)
}

type memFile struct {
	*bytes.Reader
	size int64
}

func (f *memFile) Stat() (fs.FileInfo, error) { return memInfo{f.size}, nil }
func (f *memFile) Close() error               { return nil }

type memInfo struct{ size int64 }

func (i memInfo) Name() string       { return stat.ManifestName }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) Mode() fs.FileMode  { return 0o444 }
func (i memInfo) ModTime() time.Time { return time.Time{} }
func (i memInfo) IsDir() bool        { return false }
func (i memInfo) Sys() any           { return nil }

// PrometheusHistory charts the steps windows before now, each evaluated
// by the stat engine on Prometheus at the window's end: the figures a
// range query with that step returns, through the same queries `stat`
// runs.
type PrometheusHistory struct {
	Prometheus *stat.Prometheus
	Window     time.Duration
	// Points is how many windows to chart (12 when zero).
	Points int
	Now    func() time.Time
}

// Steps implements History.
func (h *PrometheusHistory) Steps(context.Context) ([]Step, error) {
	n := h.Points
	if n <= 0 {
		n = 12
	}
	window := h.Window
	if window <= 0 {
		window = time.Minute
	}
	now := time.Now
	if h.Now != nil {
		now = h.Now
	}
	// Steps end on multiples of the window, so pages opened a moment apart
	// share them (and the cache).
	end := now().Truncate(window)
	steps := make([]Step, 0, n)
	for i := n - 1; i >= 0; i-- {
		p := *h.Prometheus
		p.Now = end.Add(-time.Duration(i) * window)
		steps = append(steps, Step{End: p.Now, Window: window, Metrics: &p, Key: "prometheus " + p.Now.Format(time.RFC3339Nano)})
	}
	return steps, nil
}

// historyJSON is what the charts read: one time per step (Unix seconds,
// the window's end), and per deployment its RPS and TLS share at each
// step (null where it had no traffic).
type historyJSON struct {
	Times       []float64                   `json:"times"`
	Deployments map[string]deploymentSeries `json:"deployments"`
}

type deploymentSeries struct {
	RPS []*float64 `json:"rps"`
	TLS []*float64 `json:"tls"`
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// namespaceHistory computes every step's deployment figures in ns.
func (s *Server) namespaceHistory(ctx context.Context, ns string) (*historyJSON, error) {
	steps, err := s.cfg.History.Steps(ctx)
	if err != nil {
		return nil, err
	}
	out := &historyJSON{Deployments: map[string]deploymentSeries{}}
	for i, st := range steps {
		q := []stat.Query{{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: ns}, Window: st.Window}}
		// No pod list: a chart needs traffic figures only, and an earlier
		// window's pods may be gone.
		res, err := s.computeWith(ctx, st.Key+"\n", st.Metrics, nil, q)
		if err != nil {
			return nil, err
		}
		out.Times = append(out.Times, float64(st.End.Unix()))
		for _, r := range res.Rows {
			d, ok := out.Deployments[r.Name]
			if !ok {
				d = deploymentSeries{RPS: make([]*float64, len(steps)), TLS: make([]*float64, len(steps))}
			}
			d.RPS[i], d.TLS[i] = finite(r.RPS), finite(r.TLS)
			out.Deployments[r.Name] = d
		}
	}
	return out, nil
}

func (s *Server) history(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	if s.cfg.History == nil {
		http.Error(w, s.cfg.HistoryNote, http.StatusNotFound)
		return
	}
	ok, err := s.namespaceExists(r.Context(), ns)
	if err != nil {
		s.failed(w, err)
		return
	}
	if !ok {
		s.errorPage(w, http.StatusNotFound, "Unknown namespace", fmt.Sprintf("Namespace %q is not in %s.", ns, s.cfg.SourceName))
		return
	}
	h, err := s.namespaceHistory(r.Context(), ns)
	if err != nil {
		s.cfg.ErrorLog.Printf("history: %v", err)
		var we *stat.WindowError
		status := http.StatusBadGateway
		if errors.As(err, &we) {
			status = http.StatusBadRequest
		}
		http.Error(w, "cannot compute the history: "+err.Error(), status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	_ = enc.Encode(h)
}
