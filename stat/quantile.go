package stat

import (
	"math"
	"sort"
)

// bucket is one cumulative histogram bucket: count observations <= upper.
type bucket struct {
	upper float64
	count float64
}

// histogramQuantile interpolates the q-quantile from cumulative buckets the
// way Prometheus's histogram_quantile does for classic histograms:
//   - the buckets are sorted by upper bound and equal bounds are merged;
//   - a missing +Inf bucket, fewer than two buckets or no observations give NaN;
//   - counts that go down (scrape races) are raised to stay monotonic;
//   - a quantile in the +Inf bucket is the second-highest upper bound;
//   - otherwise it interpolates linearly inside the bucket, from 0 for the
//     first bucket when its bound is positive.
func histogramQuantile(q float64, buckets []bucket) float64 {
	if math.IsNaN(q) {
		return math.NaN()
	}
	if q < 0 {
		return math.Inf(-1)
	}
	if q > 1 {
		return math.Inf(1)
	}
	if len(buckets) == 0 {
		return math.NaN()
	}
	bs := append([]bucket(nil), buckets...)
	sort.Slice(bs, func(i, j int) bool { return bs[i].upper < bs[j].upper })
	if !math.IsInf(bs[len(bs)-1].upper, 1) {
		return math.NaN()
	}
	bs = coalesce(bs)
	monotonic(bs)
	if len(bs) < 2 {
		return math.NaN()
	}
	observations := bs[len(bs)-1].count
	if observations == 0 {
		return math.NaN()
	}
	rank := q * observations
	b := sort.Search(len(bs)-1, func(i int) bool { return bs[i].count >= rank })
	if b == len(bs)-1 {
		return bs[len(bs)-2].upper
	}
	if b == 0 && bs[0].upper <= 0 {
		return bs[0].upper
	}
	var start float64
	end, count := bs[b].upper, bs[b].count
	if b > 0 {
		start = bs[b-1].upper
		count -= bs[b-1].count
		rank -= bs[b-1].count
	}
	return start + (end-start)*(rank/count)
}

func coalesce(bs []bucket) []bucket {
	out := bs[:1]
	for _, b := range bs[1:] {
		if b.upper == out[len(out)-1].upper {
			out[len(out)-1].count += b.count
		} else {
			out = append(out, b)
		}
	}
	return out
}

func monotonic(bs []bucket) {
	max := math.Inf(-1)
	for i := range bs {
		if bs[i].count > max {
			max = bs[i].count
		} else if bs[i].count < max {
			bs[i].count = max
		}
	}
}
