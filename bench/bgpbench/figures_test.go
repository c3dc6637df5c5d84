package bgpbench

import (
	"strings"
	"testing"
	"time"
)

// The figures use the clock from the call of the ADD; the notes give the
// issue's clock (from the ADD's return, early routes counted 0).
func TestConvergenceFiguresTimedFromTheCall(t *testing.T) {
	c := convergence{
		afterReturn: []time.Duration{-3 * time.Millisecond, 10 * time.Millisecond, 60 * time.Millisecond},
		fromCall:    []time.Duration{40 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond},
		add:         []time.Duration{43 * time.Millisecond, 40 * time.Millisecond, 40 * time.Millisecond},
	}
	figs := convergenceFigures(c)
	if len(figs) != 2 || figs[0].Name != "bgp_new_block_p99_ms" || figs[1].Name != "bgp_new_block_median_ms" {
		t.Fatalf("figures: %+v", figs)
	}
	if figs[0].Calyx != 100 || figs[0].Met {
		t.Errorf("p99 = %v met=%v, want 100 and not met", figs[0].Calyx, figs[0].Met)
	}
	if figs[1].Calyx != 50 || !figs[1].Met {
		t.Errorf("median = %v met=%v, want 50 and met", figs[1].Calyx, figs[1].Met)
	}
	if figs[0].Ratio != 100/calicoScan {
		t.Errorf("ratio = %v", figs[0].Ratio)
	}
	if !strings.Contains(figs[0].Notes, "in 1 runs the route was in host3's kernel before") || !strings.Contains(figs[0].Notes, "median 10.0 ms, p99 60.0 ms") {
		t.Errorf("notes lack the early count or the from-return measure: %s", figs[0].Notes)
	}
}

func TestScaleFiguresRatio(t *testing.T) {
	s := scale{
		prefixes: 100,
		calyx:    []time.Duration{2 * time.Second, time.Second, 3 * time.Second},
		bird:     []time.Duration{time.Second, time.Second, time.Second},
		agentRSS: 80, birdRSS: 14,
	}
	figs := scaleFigures(s)
	if figs[0].Name != "bgp_100k_to_kernel" || figs[0].Calyx != 2 || figs[0].Peer != 1 || figs[0].Ratio != 2 || figs[0].Met {
		t.Errorf("to_kernel figure: %+v", figs[0])
	}
	if figs[1].Name != "bgp_100k_agent_rss_mib" || figs[1].Calyx != 80 || figs[1].Peer != 14 {
		t.Errorf("rss figure: %+v", figs[1])
	}
}
