package dashboard

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"meshtls/fixtures/synth"
	"meshtls/stat"
)

// BenchmarkNamespacePage100Deployments renders a namespace page of 100
// deployments (and their authorities), server-side, from a synthetic
// capture of 1,000 proxies: the budget is 200 ms a page. "engine"
// is stat.ComputeAll alone on the page's queries, so the two show how much
// is the page's own.
func BenchmarkNamespacePage100Deployments(b *testing.B) {
	fsys, _ := synth.Capture(1000)
	c, err := stat.OpenCapture(fsys, "synthetic")
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Metrics: c, Pods: c, SourceName: "synthetic"})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("engine", func(b *testing.B) {
		// The stat engine alone on the same queries, to tell the page's
		// own cost from the figures'.
		for i := 0; i < b.N; i++ {
			if _, err := stat.ComputeAll(context.Background(), []stat.Query{
				{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: "ns-0"}},
				{Resource: stat.Resource{Kind: stat.KindAuthority, Namespace: "ns-0"}}}, c, c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("page", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			renderNamespace(b, s)
		}
	})
}

func renderNamespace(b *testing.B, s *Server) {
	b.Helper()
	w := httptest.NewRecorder()
	s.ServeHTTP(w, httptest.NewRequest("GET", "/ns/ns-0", nil))
	if w.Code != 200 {
		b.Fatalf("%d: %s", w.Code, w.Body)
	}
	if n := strings.Count(w.Body.String(), `href="/ns/ns-0/deploy/`); n != 100 {
		b.Fatalf("%d deployments on the page, want 100", n)
	}
}
