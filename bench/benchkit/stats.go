package benchkit

import (
	"math"
	"slices"
	"time"
)

// Percentile is the nearest-rank percentile (p in 0..100) of xs: the
// smallest value with at least p% of the values at or below it. With 50
// samples p99 is the largest; that is what "p99 over 50 runs" can mean.
// NaN for no values.
func Percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// Median is the middle value (the mean of the two middle ones for an even
// count); NaN for no values.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// PercentileMs is Percentile of ds in milliseconds; 0 for no samples (a
// figure must stay encodable as JSON, which has no NaN).
func PercentileMs(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	return Percentile(MsOf(ds), p)
}

// MedianMs is Median of ds in milliseconds; 0 for no samples.
func MedianMs(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	return Median(MsOf(ds))
}

// Ms is d in (fractional) milliseconds.
func Ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// MsOf is every d in milliseconds.
func MsOf(ds []time.Duration) []float64 {
	v := make([]float64, len(ds))
	for i, d := range ds {
		v[i] = Ms(d)
	}
	return v
}
