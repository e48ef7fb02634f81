package dashboard

import (
	"context"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"

	"meshtls/stat"
)

// countingPods counts the stat engine's pod lists: one or more per
// computation, none when a page is answered from the cache.
type countingPods struct {
	stat.PodSource
	n atomic.Int64
}

func (c *countingPods) Pods(ctx context.Context, ns string, sel labels.Selector) ([]stat.Pod, error) {
	c.n.Add(1)
	return c.PodSource.Pods(ctx, ns, sel)
}

// TestDashboardCache: a capture's figures are computed once per query (it
// never changes); a live source's are shared for Refresh, then computed
// again. Both give the engine's figures.
func TestDashboardCache(t *testing.T) {
	c := openBuiltinCapture(t, "emojivoto")
	for _, tc := range []struct {
		name    string
		static  bool
		refresh time.Duration
		again   bool
	}{{"capture", true, time.Nanosecond, false}, {"live, within Refresh", false, time.Hour, false}, {"live, after Refresh", false, time.Nanosecond, true}} {
		t.Run(tc.name, func(t *testing.T) {
			pods := &countingPods{PodSource: c}
			ts := httptest.NewServer(mustNew(t, Config{Metrics: c, Pods: pods, Static: tc.static, Refresh: tc.refresh, SourceName: "capture"}))
			defer ts.Close()
			_, first := get(t, ts.URL+"/ns/emojivoto/deploy/web")
			n := pods.n.Load()
			if n == 0 {
				t.Fatal("the first page computed nothing")
			}
			time.Sleep(time.Millisecond)
			_, second := get(t, ts.URL+"/ns/emojivoto/deploy/web")
			if recomputed := pods.n.Load() > n; recomputed != tc.again {
				t.Errorf("second page recomputed: %t, want %t", recomputed, tc.again)
			}
			if first != second {
				t.Error("the cached page differs from the computed one")
			}
			want := compute(t, "emojivoto", stat.Query{Resource: stat.Resource{Kind: stat.KindDeployment, Namespace: "emojivoto"}})
			for _, w := range want.Rows {
				if w.Name == "web" {
					assertRowMatches(t, "cached web", fields(tableRow(t, second, "self", "web")), w)
				}
			}
		})
	}
}
