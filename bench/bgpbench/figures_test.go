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
	if f := figs[3]; f.Name != "bgp_100k_agent_rss_mib" || f.Calyx != 80 || f.Peer != 14 || !f.Met {
		t.Errorf("rss figure: %+v", f)
	}
}

func TestFailoverFigures(t *testing.T) {
	figs := failoverFigures(failover{calyxBFD: 850 * time.Millisecond, birdBFD: 900 * time.Millisecond, calyxHold: 91 * time.Second, holdTime: 90})
	if len(figs) != 2 || figs[0].Name != "bgp_bfd_failover_ms" || figs[0].Calyx != 850 || figs[0].Peer != 900 || !figs[0].Met {
		t.Fatalf("figures: %+v", figs)
	}
	if figs[1].Name != "bgp_holdtimer_failover_ms" || figs[1].Calyx != 91000 || figs[1].Peer != 90000 {
		t.Errorf("hold-timer figure: %+v", figs[1])
	}
	if !strings.Contains(figs[0].Notes, "91000 ms (hold time 90 s)") {
		t.Errorf("notes: %s", figs[0].Notes)
	}
	if quick := failoverFigures(failover{calyxBFD: 1200 * time.Millisecond, birdBFD: time.Second}); len(quick) != 1 || quick[0].Met {
		t.Errorf("quick run: %+v", quick)
	}
}
