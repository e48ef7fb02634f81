package stat

import (
	"math"
	"testing"
)

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	b := func(pairs ...float64) []bucket {
		var out []bucket
		for i := 0; i+1 < len(pairs); i += 2 {
			out = append(out, bucket{upper: pairs[i], count: pairs[i+1]})
		}
		return out
	}
	cases := []struct {
		name    string
		q       float64
		buckets []bucket
		want    float64
	}{
		{"first bucket interpolates from zero", 0.5, b(1, 66, inf, 66), 0.5},
		{"inside a bucket", 0.5, b(5, 15, 10, 45, 20, 55, inf, 66), 8},
		{"upper bucket", 0.99, b(5, 15, 10, 45, 20, 55, 30, 61, 40, 66, inf, 66), 38.68},
		{"rank on a boundary stays in the lower bucket", 0.5, b(1, 5, 4, 33, 10, 66, inf, 66), 4},
		{"in +Inf bucket gives the second-highest bound", 0.99, b(1, 10, 2, 20, inf, 100), 2},
		{"unsorted input", 0.5, b(inf, 66, 10, 45, 5, 15), 8},
		{"no +Inf bucket", 0.5, b(1, 10, 2, 20), math.NaN()},
		{"only +Inf", 0.5, b(inf, 10), math.NaN()},
		{"no observations", 0.5, b(1, 0, inf, 0), math.NaN()},
		{"q below 0", -0.1, b(1, 1, inf, 1), math.Inf(-1)},
		{"q above 1", 1.1, b(1, 1, inf, 1), math.Inf(1)},
		{"non-monotonic counts are raised", 0.75, b(1, 10, 2, 8, 3, 20, inf, 20), 2.5},
		{"duplicate bounds are merged", 0.75, b(1, 2, 1, 3, 2, 10, inf, 10), 1.5},
		{"negative first bound returns it", 0.1, b(-1, 5, 1, 10, inf, 10), -1},
		// Prometheus ignores float noise between neighbouring buckets (a
		// relative 1e-12): the +Inf bucket is the first one's 10, so the
		// whole rank sits in the first bucket. Exact arithmetic would put
		// it at the top of the second.
		{"float noise between buckets is ignored", 1, b(1, 10, 2, 10+1e-12, inf, 10+1e-12), 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := histogramQuantile(tc.q, tc.buckets)
			if math.IsNaN(tc.want) {
				if !math.IsNaN(got) {
					t.Fatalf("got %v, want NaN", got)
				}
				return
			}
			if math.Abs(got-tc.want) > 1e-9 && got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestHistogramQuantileDoesNotModifyInput(t *testing.T) {
	in := []bucket{{math.Inf(1), 20}, {1, 10}, {2, 8}}
	histogramQuantile(0.5, in)
	if in[0].upper != math.Inf(1) || in[2].count != 8 {
		t.Fatalf("input changed: %v", in)
	}
}
