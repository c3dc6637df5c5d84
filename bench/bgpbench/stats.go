package bgpbench

import (
	"math"
	"net/netip"
	"time"
)

// The medians and percentiles are benchkit's.

func seconds(d time.Duration) float64 { return d.Seconds() }

// round3 keeps figures readable in results.json.
func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

func ipAddr(ip []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(ip)
	return a.Unmap()
}
