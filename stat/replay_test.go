package stat_test

import (
	"io"
	"io/fs"
	"net/http"
	"path"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"meshtls/fixtures"
	"meshtls/stat"
)

// A replay serves every metric family of every meshed pod of every
// built-in capture, with the same series, whatever their type: a page cut
// short at the first family it cannot grow would look to Prometheus like
// a healthy pod with no traffic.
func TestReplayServesEveryFamily(t *testing.T) {
	for _, name := range fixtures.Captures() {
		t.Run(name, func(t *testing.T) {
			fsys, err := fixtures.Capture(name)
			if err != nil {
				t.Fatal(err)
			}
			c, err := stat.OpenCapture(fsys, "builtin:"+name)
			if err != nil {
				t.Fatal(err)
			}
			r, err := stat.StartReplay(c)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if len(r.Targets) == 0 {
				t.Fatal("no meshed pod served")
			}
			first := c.Manifest().Scrapes[0].Dir
			for _, tg := range r.Targets {
				raw, err := fs.ReadFile(fsys, path.Join(first, tg.Pod.Namespace, tg.Pod.Name+".prom"))
				if err != nil {
					t.Fatal(err)
				}
				want := seriesOf(t, tg.Pod.Name+" captured", string(raw))
				resp, err := http.Get("http://" + tg.Addr + "/metrics")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("%s: %d %s", tg.Pod.Name, resp.StatusCode, body)
				}
				got := seriesOf(t, tg.Pod.Name+" served", string(body))
				if strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("%s: served %d series, captured %d; first captured: %q", tg.Pod.Name, len(got), len(want), want[:min(3, len(want))])
				}
			}
		})
	}
}

// seriesOf lists a metrics page's families and label sets, sorted.
func seriesOf(t *testing.T, what, page string) []string {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(page))
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var out []string
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+l.GetValue())
			}
			out = append(out, name+" "+f.GetType().String()+" "+strings.Join(labels, ","))
		}
	}
	sort.Strings(out)
	return out
}
