package ipambench

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestRunProducesBothFigures runs a tiny version of the benchmark: both
// sides must really allocate and the figures must be filled in. (The rates
// themselves are for make bench, not for a test.)
func TestRunProducesBothFigures(t *testing.T) {
	if _, err := os.Stat(HostLocalPath); err != nil {
		t.Skipf("host-local not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	figs, err := run(ctx, settings{perNode: 40, workers: 4, rounds: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(figs) != 2 || figs[0].Name != "ipam_allocs_per_s" || figs[1].Name != "ipam_allocs_per_s_3nodes" {
		t.Fatalf("figures = %+v", figs)
	}
	for _, f := range figs {
		if f.Calyx <= 0 || f.Peer <= 0 || f.PeerName != "host-local" || f.Ratio != f.Calyx/f.Peer {
			t.Errorf("figure %+v is not filled in", f)
		}
		t.Logf("%s: calyx %.0f, host-local %.0f allocs/s (ratio %.2f)", f.Name, f.Calyx, f.Peer, f.Ratio)
	}
}
