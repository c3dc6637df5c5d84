package netbench

import (
	"testing"

	"github.com/calyx-net/calyx/bench/benchkit/benchtest"
)

// TestRunQuick runs the quick benchmark once: every figure is there with
// both sides measured, and nothing is left behind. No timing is asserted.
func TestRunQuick(t *testing.T) {
	benchtest.NeedLab(t, "etcd", "iperf3", "ss", "iptables-save", "bridge")
	figs := benchtest.RunQuick(t, "netbench-*", Run)
	want := []struct{ name, unit, peer string }{
		{"dataplane_vs_host", "Gbit/s", "host-to-host"},
		{"dataplane_vs_vxlan", "Gbit/s", "VXLAN overlay"},
		{"dataplane_8streams_vs_host", "Gbit/s", "host-to-host"},
		{"dataplane_new_workload_first_ping_ms", "ms", "fabric ping RTT"},
	}
	if len(figs) != len(want) {
		t.Fatalf("got %d figures, want %d: %+v", len(figs), len(want), figs)
	}
	for i, f := range figs {
		if f.Name != want[i].name || f.Unit != want[i].unit || f.PeerName != want[i].peer {
			t.Errorf("figure %d = %s (%s, peer %s), want %+v", i, f.Name, f.Unit, f.PeerName, want[i])
		}
		if f.Calyx <= 0 || f.Peer <= 0 || f.Goal == "" {
			t.Errorf("%s not measured on both sides: %+v", f.Name, f)
		}
		t.Logf("%s: calyx %.3f %s, %s %.3f, ratio %.2f (%s, met %v)", f.Name, f.Calyx, f.Unit, f.PeerName, f.Peer, f.Ratio, f.Goal, f.Met)
	}
}
