package footbench

import (
	"testing"

	"github.com/calyx-net/calyx/bench/benchkit/benchtest"
)

// TestRunQuick runs the quick benchmark once (a small load): both figures
// are there and measured, and nothing is left behind. No limit is asserted.
func TestRunQuick(t *testing.T) {
	benchtest.NeedLab(t, "etcd", "bird", "birdc", "iptables-save")
	figs := benchtest.RunQuick(t, "footprintbench-*", Run)
	want := []struct{ name, unit string }{{"agent_idle_rss_mib", "MiB"}, {"agent_idle_cpu_percent", "% core"}}
	if len(figs) != len(want) {
		t.Fatalf("got %d figures, want %v: %+v", len(figs), want, figs)
	}
	for i, f := range figs {
		if f.Name != want[i].name || f.Unit != want[i].unit || f.PeerName != "limit" || f.Goal == "" {
			t.Errorf("figure %d = %+v, want %s in %s beside its limit", i, f, want[i].name, want[i].unit)
		}
		t.Logf("%s: %.2f %s (limit %.0f, met %v): %s", f.Name, f.Calyx, f.Unit, f.Peer, f.Met, f.Notes)
	}
	if figs[0].Calyx <= 0 {
		t.Errorf("RSS not measured: %+v", figs[0])
	}
}
