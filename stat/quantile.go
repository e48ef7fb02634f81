package stat

import (
	"math"

	"github.com/prometheus/prometheus/promql"
)

// bucket is one cumulative histogram bucket: count observations <= upper.
type bucket struct {
	upper float64
	count float64
}

// histogramQuantile is Prometheus's own histogram_quantile for classic
// histograms (promql.BucketQuantile), so client-side figures cannot drift
// from the server's: same sorting, merging of equal bounds, float
// tolerance between neighbouring buckets and forced monotonicity.
func histogramQuantile(q float64, buckets []bucket) float64 {
	if len(buckets) == 0 {
		return math.NaN()
	}
	bs := make(promql.Buckets, len(buckets))
	for i, b := range buckets {
		bs[i] = promql.Bucket{UpperBound: b.upper, Count: b.count}
	}
	v, _, _ := promql.BucketQuantile(q, bs)
	return v
}
