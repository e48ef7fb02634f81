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
// capture of 1,000 proxies: the budget is 200 ms a page.
//
//   - engine: stat.ComputeAll alone on the page's queries, the floor of a
//     page computed from scratch (it parses all 1,000 proxies' scrapes:
//     senders in any namespace name who sends plain text);
//   - cold: the first request of a fresh server that was not warmed,
//     engine and rendering;
//   - warm: every later request; a capture never changes, so the
//     dashboard keeps each query's result and renders from it.
func BenchmarkNamespacePage100Deployments(b *testing.B) {
	fsys, _ := synth.Capture(1000)
	c, err := stat.OpenCapture(fsys, "synthetic")
	if err != nil {
		b.Fatal(err)
	}
	newServer := func(b *testing.B) *Server {
		s, err := New(Config{Metrics: c, Pods: c, SourceName: "synthetic", Static: true})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	b.Run("engine", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if _, err := stat.ComputeAll(context.Background(), []stat.Query{
				{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: "ns-0"}},
				{Resource: stat.Resource{Kind: stat.KindAuthority, Namespace: "ns-0"}}}, c, c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			renderNamespace(b, newServer(b))
		}
	})
	// startup: what `linkerd dashboard --capture` now does before it
	// serves (Warm: one engine run for every namespace page); first: the
	// first request of a server started that way.
	b.Run("startup", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			if _, err := newServer(b).Warm(context.Background()); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			s := newServer(b)
			if _, err := s.Warm(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			renderNamespace(b, s)
		}
	})
	b.Run("warm", func(b *testing.B) {
		s := newServer(b)
		renderNamespace(b, s)
		b.ReportAllocs()
		b.ResetTimer()
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
