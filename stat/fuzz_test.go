package stat

import (
	"context"
	"io/fs"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

// oneLine reports whether an error message prints as one line.
func oneLine(msg string) bool { return !strings.ContainsAny(msg, "\n\r\x1b") }

// fixtureFS is a recorded capture's files (fixtures/captures/NAME).
func fixtureFS(f *testing.F, name string) fstest.MapFS {
	dir := os.DirFS("../fixtures/captures/" + name)
	files := fstest.MapFS{}
	err := fs.WalkDir(dir, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(dir, p)
		files[p] = &fstest.MapFile{Data: b}
		return err
	})
	if err != nil {
		f.Fatal(err)
	}
	return files
}

// FuzzOpenCapture reads any capture.json beside a real capture's scrapes,
// as `--capture DIR` does. An error is one line naming the capture; a
// manifest that opens has at least two scrapes in time order, and stat
// over it (every kind, with and without a window) gives rows or a
// one-line error, never a panic.
func FuzzOpenCapture(f *testing.F) {
	files := fixtureFS(f, "emojivoto")
	f.Add(files[ManifestName].Data)
	f.Add([]byte(`{"format":"meshtls.capture/v1","pods":[{"namespace":"emojivoto","name":"web-5d9c8b7f6-x7k2p","meshed":true,"owners":{"deployment":"web"}}],"scrapes":[{"time":"2026-11-23T05:00:00Z","dir":"001"},{"time":"2026-11-23T05:00:00Z","dir":"000"}]}`))
	f.Add([]byte(`{"format":"meshtls.capture/v1","scrapes":[{"dir":"../000"},{"dir":"/etc"}]}`))
	f.Fuzz(func(t *testing.T, manifest []byte) {
		fsys := fstest.MapFS{}
		for k, v := range files {
			fsys[k] = v
		}
		fsys[ManifestName] = &fstest.MapFile{Data: manifest}
		c, err := OpenCapture(fsys, "cap")
		if err != nil {
			if msg := err.Error(); !oneLine(msg) || !strings.HasPrefix(msg, "cap: ") {
				t.Fatalf("error is not one line naming the capture: %q", msg)
			}
			return
		}
		s := c.Manifest().Scrapes
		if len(s) < 2 || !slices.IsSortedFunc(s, func(a, b ScrapeRecord) int { return a.Time.Compare(b.Time) }) {
			t.Fatalf("scrapes %v: fewer than two or out of order", s)
		}
		for _, k := range []Kind{KindDeployment, KindPod, KindAuthority, KindNamespace} {
			for _, w := range []time.Duration{0, 10 * time.Second} {
				q := Query{Resource: Resource{Kind: k}, Window: w}
				res, err := Compute(context.Background(), q, c, c)
				if err != nil {
					if !oneLine(err.Error()) {
						t.Fatalf("stat %s: error is not one line: %q", k, err)
					}
					continue
				}
				if res.Window < 0 {
					t.Fatalf("stat %s: negative window %s", k, res.Window)
				}
			}
		}
	})
}

// FuzzParseScrape parses any /metrics text as a proxy's. An error is one
// line; parsed series are only the metrics stat reads, with their labels
// sorted, unique, and the scrape target's labels set; and a counter that
// did not move between two scrapes has increased by zero.
func FuzzParseScrape(f *testing.F) {
	for _, p := range []string{"emojivoto/000/emojivoto/web-5d9c8b7f6-x7k2p.prom", "emojivoto-live/000/emojivoto/web-7f544455f7-kxnr4.prom"} {
		b, err := os.ReadFile("../fixtures/captures/" + p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("response_total{direction=\"inbound\",pod=\"x\"} 3 1700000000000\n"))
	f.Add([]byte("tcp_open_connections 2\n# EOF\n"))
	target := map[string]string{"namespace": "emojivoto", "pod": "web-1", "deployment": "web"}
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := parseScrape(append([]byte(nil), body...), target)
		if err != nil {
			if !oneLine(err.Error()) {
				t.Fatalf("error is not one line: %q", err)
			}
			return
		}
		for _, s := range out {
			if !wanted[s.Metric] {
				t.Fatalf("series of metric %q", s.Metric)
			}
			if !slices.IsSortedFunc(s.Labels, func(a, b labelPair) int { return strings.Compare(a.Name, b.Name) }) {
				t.Fatalf("labels not sorted: %v", s.Labels)
			}
			for i := 1; i < len(s.Labels); i++ {
				if s.Labels[i].Name == s.Labels[i-1].Name {
					t.Fatalf("label %q twice: %v", s.Labels[i].Name, s.Labels)
				}
			}
			for k, v := range target {
				if s.get(k) != v {
					t.Fatalf("target label %s=%q is %q in %v", k, v, s.get(k), s.Labels)
				}
			}
		}

		// Twice the same scrape: no counter moved. (A series written twice
		// in one scrape, or a value that is not finite, has no such rule.)
		seen, plain := map[string]bool{}, true
		_ = scanScrape(body, func(raw []byte, _ *int64, v float64, _ func() labels.Labels) {
			plain = plain && !seen[string(raw)] && !math.IsInf(v, 0) && !math.IsNaN(v)
			seen[string(raw)] = true
		})
		twice := targetScrapes{Name: "pod", Target: target, Scrapes: []scrapeText{
			scrapeBody{body: body, source: "first"}, scrapeBody{body: body, source: "second"}}}
		incs, err := increases(twice, time.Minute)
		if err != nil {
			t.Fatalf("parses once, fails twice: %v", err)
		}
		for _, s := range incs {
			if plain && s.Metric != metricTCPOpen && s.Value != 0 {
				t.Fatalf("%s %v increased by %v between two identical scrapes", s.Metric, s.Labels, s.Value)
			}
		}
	})
}

// FuzzParseResources reads the resource arguments of `linkerd stat`, one
// or two of them, in any namespace. An error is one line; resources read
// are of known kinds, without duplicates, in the namespace asked for
// (none for namespaces), a name given is never empty or holding a slash,
// and a named resource's String reads back as itself.
func FuzzParseResources(f *testing.F) {
	f.Add("deploy", "web", "emojivoto", true)
	f.Add("deploy/web", "po/web-1", "", true)
	f.Add("all", "", "emojivoto", false)
	f.Add("ns", "emojivoto", "linkerd", true)
	f.Add("au/web-svc.emojivoto:80", "", "", false)
	f.Fuzz(func(t *testing.T, a, b, ns string, two bool) {
		args := []string{a}
		if two {
			args = append(args, b)
		}
		rs, err := ParseResources(args, ns)
		if err != nil {
			if !oneLine(err.Error()) {
				t.Fatalf("%q: error is not one line: %q", args, err)
			}
			return
		}
		if len(rs) == 0 {
			t.Fatalf("%q: no resources and no error", args)
		}
		for i, r := range rs {
			if k, err := ParseKind(string(r.Kind)); err != nil || k != r.Kind {
				t.Fatalf("%q: unknown kind %q", args, r.Kind)
			}
			if slices.Contains(rs[:i], r) {
				t.Fatalf("%q: %v twice", args, r)
			}
			if want := ns; r.Kind == KindNamespace && r.Namespace != "" || r.Kind != KindNamespace && r.Namespace != want {
				t.Fatalf("%q -n %q: %v in namespace %q", args, ns, r, r.Namespace)
			}
			named := two || strings.Contains(a, "/")
			if named && (r.Name == "" || strings.Contains(r.Name, "/")) {
				t.Fatalf("%q: resource %v has name %q", args, r, r.Name)
			}
			if r.Name != "" {
				back, err := ParseResources([]string{r.String()}, ns)
				if err != nil || len(back) != 1 || back[0] != r {
					t.Fatalf("%q: %v reads back as %v (%v)", args, r, back, err)
				}
			}
		}
	})
}
