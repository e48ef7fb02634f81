package dashboard

import (
	"context"
	"io"
	"net/http/httptest"
	"regexp"
	"testing"

	"meshtls/fixtures/synth"
	"meshtls/stat"
)

// TestWarmChangesNoFigure: a capture's pages served after Warm are byte
// for byte the pages computed on demand, and none of them computes
// anything: the namespaces page and every namespace it links to come from
// the warm-up's one engine run.
func TestWarmChangesNoFigure(t *testing.T) {
	synthFS, _ := synth.Capture(200)
	synthCapture, err := stat.OpenCapture(synthFS, "synthetic")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    *stat.Capture
	}{{"emojivoto", openBuiltinCapture(t, "emojivoto")}, {"mixed", openBuiltinCapture(t, "mixed")}, {"synthetic 200 proxies", synthCapture}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Metrics: tc.c, Pods: tc.c, SourceName: "capture", Static: true}
			cold, warm := mustNew(t, cfg), mustNew(t, cfg)
			n, err := warm.Warm(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			cached := len(warm.cache)
			if n < 2 || cached != n {
				t.Fatalf("Warm cached %d pages (%d in the cache), want the namespaces page and at least one namespace", n, cached)
			}
			home := serve(t, warm, "/")
			if want := serve(t, cold, "/"); home != want {
				t.Fatalf("the warmed namespaces page differs from the computed one:\n%s\nwant\n%s", home, want)
			}
			links := regexp.MustCompile(`href="(/ns/[^"/]+)"`).FindAllStringSubmatch(home, -1)
			if len(links) == 0 {
				t.Fatal("the namespaces page links to no namespace")
			}
			for _, l := range links {
				got, want := serve(t, warm, l[1]), serve(t, cold, l[1])
				if got != want {
					t.Errorf("%s: the warmed page differs from the computed one:\n%s\nwant\n%s", l[1], got, want)
				}
			}
			if len(warm.cache) != cached {
				t.Errorf("serving the warmed pages computed %d more results", len(warm.cache)-cached)
			}
		})
	}
}

// TestWarmLiveSourceIsNotWarmed: a live source's figures move, so Warm
// keeps nothing for it.
func TestWarmLiveSourceIsNotWarmed(t *testing.T) {
	c := openBuiltinCapture(t, "emojivoto")
	s := mustNew(t, Config{Metrics: c, Pods: c, SourceName: "live"})
	if n, err := s.Warm(context.Background()); err != nil || n != 0 || len(s.cache) != 0 {
		t.Errorf("Warm on a live source: %d, %v, %d cached", n, err, len(s.cache))
	}
}

func serve(t *testing.T, s *Server, path string) string {
	t.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	body, _ := io.ReadAll(w.Result().Body)
	if w.Code != 200 {
		t.Fatalf("GET %s: %d: %s", path, w.Code, body)
	}
	return string(body)
}
