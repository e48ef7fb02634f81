package stat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"time"

	"k8s.io/apimachinery/pkg/labels"
)

// CaptureFormat is the manifest's format tag; see fixtures/README.md.
const CaptureFormat = "meshtls.capture/v1"

// ManifestName is the capture manifest's file name.
const ManifestName = "capture.json"

// Manifest describes a capture directory.
type Manifest struct {
	Format string `json:"format"`
	// Note says where the capture came from.
	Note    string         `json:"note,omitempty"`
	Pods    []Pod          `json:"pods"`
	Scrapes []ScrapeRecord `json:"scrapes"`
}

// ScrapeRecord is one round of scrapes: every pod's /metrics at Time,
// stored as Dir/<namespace>/<pod>.prom.
type ScrapeRecord struct {
	Time time.Time `json:"time"`
	Dir  string    `json:"dir"`
}

// Capture is a recorded set of proxy scrapes. It is both a MetricSource and
// a PodSource, so it answers stat queries with no cluster at all.
type Capture struct {
	fsys     fs.FS
	name     string
	manifest Manifest
}

// OpenCapture reads a capture's manifest. name is used in errors.
func OpenCapture(fsys fs.FS, name string) (*Capture, error) {
	raw, err := fs.ReadFile(fsys, ManifestName)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s is not a capture: no %s in it", name, ManifestName)
		}
		return nil, fmt.Errorf("cannot read capture %s: %w", name, err)
	}
	var m Manifest
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("%s: malformed %s: %v", name, ManifestName, err)
	}
	if m.Format != CaptureFormat {
		return nil, fmt.Errorf("%s: unsupported capture format %q (want %q)", name, m.Format, CaptureFormat)
	}
	if len(m.Scrapes) < 2 {
		return nil, fmt.Errorf("%s: a capture needs at least two scrapes to measure a rate, it has %d", name, len(m.Scrapes))
	}
	sort.SliceStable(m.Scrapes, func(i, j int) bool { return m.Scrapes[i].Time.Before(m.Scrapes[j].Time) })
	return &Capture{fsys: fsys, name: name, manifest: m}, nil
}

// Manifest returns the capture's manifest.
func (c *Capture) Manifest() Manifest { return c.manifest }

// Pods lists the capture's pods in namespace ("" for all) matching sel.
func (c *Capture) Pods(_ context.Context, namespace string, sel labels.Selector) ([]Pod, error) {
	var out []Pod
	for _, p := range c.manifest.Pods {
		if namespace != "" && p.Namespace != namespace {
			continue
		}
		if sel != nil && !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// Span picks the scrapes a window covers: it ends at the last scrape and
// starts at the scrape closest to window before that. window 0 means the
// whole capture.
func (c *Capture) Span(window time.Duration) (first, last int) {
	s := c.manifest.Scrapes
	last = len(s) - 1
	if window <= 0 {
		return 0, last
	}
	want := s[last].Time.Add(-window)
	best := 0
	for i := 0; i < last; i++ {
		if absDur(s[i].Time.Sub(want)) < absDur(s[best].Time.Sub(want)) {
			best = i
		}
	}
	return best, last
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

func (c *Capture) collect(ctx context.Context, window time.Duration, _ []Pod, queries []vectorQuery) (evaluator, error) {
	first, last := c.Span(window)
	recs := c.manifest.Scrapes[first : last+1]
	span := recs[len(recs)-1].Time.Sub(recs[0].Time)
	targets := make([]targetScrapes, 0, len(c.manifest.Pods))
	for _, p := range c.manifest.Pods {
		if !p.Meshed {
			continue
		}
		t := targetScrapes{Name: "pod " + p.Namespace + "/" + p.Name, Target: p.TargetLabels()}
		for _, r := range recs {
			file := path.Join(r.Dir, p.Namespace, p.Name+".prom")
			if _, err := fs.Stat(c.fsys, file); err != nil {
				t.Scrapes = append(t.Scrapes, nil) // not scraped this round
				continue
			}
			t.Scrapes = append(t.Scrapes, captureFile{c.fsys, file, c.name})
		}
		targets = append(targets, t)
	}
	return buildDeltas(ctx, targets, span, queries)
}

type captureFile struct {
	fsys    fs.FS
	file    string
	capture string
}

func (f captureFile) Source() string { return path.Join(f.capture, f.file) }

// Open reads the file into a buffer with room for one more byte: the
// parser appends a newline, and without room it would copy the whole body.
func (f captureFile) Open() ([]byte, error) {
	file, err := f.fsys.Open(f.file)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	info, err := file.Stat()
	if err != nil {
		return nil, err
	}
	buf := make([]byte, 0, info.Size()+1)
	for {
		n, err := file.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
		if len(buf) == cap(buf) {
			// The file grew since Stat; keep reading.
			buf = append(buf, 0)[:len(buf)]
		}
	}
}

// CaptureWriter records a capture into a directory.
type CaptureWriter struct {
	dir      string
	manifest Manifest
}

// NewCaptureWriter starts a capture in dir, which must not hold one yet.
func NewCaptureWriter(dir, note string, pods []Pod) (*CaptureWriter, error) {
	if _, err := os.Stat(filepath.Join(dir, ManifestName)); err == nil {
		return nil, fmt.Errorf("%s already holds a capture; choose an empty directory", dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	sorted := append([]Pod(nil), pods...)
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].Namespace != sorted[j].Namespace {
			return sorted[i].Namespace < sorted[j].Namespace
		}
		return sorted[i].Name < sorted[j].Name
	})
	return &CaptureWriter{dir: dir, manifest: Manifest{Format: CaptureFormat, Note: note, Pods: sorted}}, nil
}

// AddScrape stores one round: bodies maps "namespace/pod" to /metrics text.
func (w *CaptureWriter) AddScrape(at time.Time, bodies map[string][]byte) error {
	dir := fmt.Sprintf("%03d", len(w.manifest.Scrapes))
	for key, body := range bodies {
		file := filepath.Join(w.dir, dir, filepath.FromSlash(key)+".prom")
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(file, body, 0o644); err != nil {
			return err
		}
	}
	w.manifest.Scrapes = append(w.manifest.Scrapes, ScrapeRecord{Time: at.UTC(), Dir: dir})
	return nil
}

// Close writes the manifest; a capture without one is incomplete.
func (w *CaptureWriter) Close() error {
	raw, err := json.MarshalIndent(w.manifest, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(w.dir, ManifestName), append(raw, '\n'), 0o644)
}
