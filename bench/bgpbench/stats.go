package bgpbench

import (
	"math"
	"net/netip"
	"slices"
	"time"
)

// percentile is the nearest-rank percentile (p in 0..100) of xs: the
// smallest value with at least p% of the values at or below it. With 50
// samples p99 is the largest; that is what "p99 over 50 runs" can mean.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	rank = min(max(rank, 1), len(s))
	return s[rank-1]
}

// median is the middle value (the mean of the two middle ones for an even
// count).
func median(xs []float64) float64 {
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

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func seconds(d time.Duration) float64 { return d.Seconds() }

// round3 keeps figures readable in results.json.
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func ipAddr(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
