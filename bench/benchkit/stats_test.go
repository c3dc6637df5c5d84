package benchkit

import (
	"math"
	"testing"
	"time"
)

func TestPercentileNearestRank(t *testing.T) {
	xs := make([]float64, 50)
	for i := range xs {
		xs[i] = float64(50 - i) // 50..1, unsorted on purpose
	}
	cases := []struct{ p, want float64 }{{0, 1}, {50, 25}, {90, 45}, {99, 50}, {100, 50}}
	for _, c := range cases {
		if got := Percentile(xs, c.p); got != c.want {
			t.Errorf("p%v of 1..50 = %v, want %v", c.p, got, c.want)
		}
	}
	if xs[0] != 50 {
		t.Error("Percentile sorted its input in place")
	}
	if !math.IsNaN(Percentile(nil, 99)) {
		t.Error("p99 of nothing should be NaN")
	}
}

func TestMedian(t *testing.T) {
	if got := Median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("Median(3,1,2) = %v", got)
	}
	if got := Median([]float64{4, 1, 3, 2}); got != 2.5 {
		t.Errorf("Median(4,1,3,2) = %v", got)
	}
	if !math.IsNaN(Median(nil)) {
		t.Error("the median of nothing should be NaN")
	}
}

// The millisecond forms feed figures, which JSON must encode: no NaN.
func TestMillisecondForms(t *testing.T) {
	ds := []time.Duration{4 * time.Millisecond, 1500 * time.Microsecond, 3 * time.Millisecond, 2 * time.Millisecond}
	if got := MedianMs(ds); got != 2.5 {
		t.Errorf("MedianMs = %v, want 2.5", got)
	}
	if got := PercentileMs(ds, 99); got != 4 {
		t.Errorf("PercentileMs p99 = %v, want 4", got)
	}
	if got := PercentileMs(ds, 25); got != 1.5 {
		t.Errorf("PercentileMs p25 = %v, want 1.5", got)
	}
	if MedianMs(nil) != 0 || PercentileMs(nil, 99) != 0 {
		t.Error("no samples should give 0 ms")
	}
	if ds[0] != 4*time.Millisecond {
		t.Error("MedianMs sorted its input in place")
	}
}
