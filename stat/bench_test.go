package stat_test

import (
	"context"
	"testing"

	"k8s.io/apimachinery/pkg/labels"

	"meshtls/fixtures/synth"
	"meshtls/stat"
)

// BenchmarkAggregate1000Pods computes `stat deploy -A` over a capture of
// 1,000 proxies with about 340 series each, two scrapes. Bytes per op are
// the scrape text parsed, so MB/s is the parse throughput.
func BenchmarkAggregate1000Pods(b *testing.B) {
	fsys, size := synth.Capture(1000)
	c, err := stat.OpenCapture(fsys, "synthetic")
	if err != nil {
		b.Fatal(err)
	}
	q := stat.Query{Resource: stat.Resource{Kind: stat.KindDeployment}}
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		res, err := stat.Compute(context.Background(), q, c, c)
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Rows) != 1000 {
			b.Fatalf("%d rows, want 1000 (100 deployments x 10 namespaces)", len(res.Rows))
		}
	}
}

type staticPods []stat.Pod

func (s staticPods) Pods(context.Context, string, labels.Selector) ([]stat.Pod, error) { return s, nil }
