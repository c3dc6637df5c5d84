package netbench

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
)

// tcpPath is one side of a throughput comparison: iperf3's server in one
// namespace, its client in another, toward dst.
type tcpPath struct {
	name, server, client, dst string
	runs                      []stream
}

func (p *tcpPath) median() (med float64, all []float64, retrans int) {
	for _, s := range p.runs {
		all = append(all, s.gbps)
		retrans += s.retrans
	}
	return benchkit.Median(all), all, retrans
}

// alternate runs iperf3 with streams parallel streams over every path in
// turn, sz.rounds times, the first path of each round rotating (so that no
// side always runs first, or right after the same one).
func (b *runner) alternate(ctx context.Context, sz sizes, streams int, paths ...*tcpPath) error {
	for r := range sz.rounds {
		for k := range paths {
			p := paths[(r+k)%len(paths)]
			s, err := iperf(ctx, b.l, p.server, p.client, p.dst, sz.seconds, streams)
			if err != nil {
				return fmt.Errorf("%s, round %d: %w", p.name, r+1, err)
			}
			p.runs = append(p.runs, s)
		}
		args := []any{"streams", streams, "round", r + 1, "of", sz.rounds}
		for _, p := range paths {
			args = append(args, p.name+"_gbps", p.runs[len(p.runs)-1].gbps)
		}
		b.log.Info("iperf3 round", args...)
	}
	return nil
}

// throughput measures one TCP stream workload->workload beside
// host->host and beside the VXLAN overlay's workload->workload, all three
// alternating, and eight streams workload->workload beside host->host.
func (b *runner) throughput(ctx context.Context, sz sizes, vx *vxlanOverlay) ([]bench.Figure, error) {
	newPaths := func() (cx, host, overlay *tcpPath) {
		return &tcpPath{name: "calyx", server: b.w2.Name, client: b.w1.Name, dst: b.w2IP.String()},
			&tcpPath{name: "host", server: b.h2.Name, client: b.h1.Name, dst: b.h2.IP},
			// The overlay's namespaces are not lab members: iperf3 runs
			// from the hosts under `ip netns exec`.
			&tcpPath{name: "vxlan", server: "netns:" + vx.workloads[1], client: "netns:" + vx.workloads[0], dst: vx.workloadIP[1]}
	}
	cx, host, overlay := newPaths()
	if err := b.alternate(ctx, sz, 1, cx, host, overlay); err != nil {
		return nil, err
	}
	cx8, host8, _ := newPaths()
	if err := b.alternate(ctx, sz, 8, cx8, host8); err != nil {
		return nil, err
	}
	route := fmt.Sprintf("%s (%s) -> %s (%s) over BGP-learned routes (proto %s) host1 %q, back host2 %q, with policy %s in the cx-fw-/cx-tw- chains",
		b.w1.Name, b.w1IP, b.w2.Name, b.w2IP, bgpRouteProto, b.route, b.backRoute, policyName)
	figure := func(name string, streams int, c, p *tcpPath, peerName string, goal float64, peerHow string) bench.Figure {
		cMed, cAll, cRe := c.median()
		pMed, pAll, pRe := p.median()
		f := bench.NewRatio(bench.Figure{
			Name: name, Unit: "Gbit/s", Calyx: cMed, Peer: pMed, PeerName: peerName,
			Goal: fmt.Sprintf("ratio >= %.2f", goal),
			Notes: fmt.Sprintf("iperf3 TCP %d stream(s), -t %d, median of %d runs per side, alternating; %s; peer: %s; Gbit/s per run calyx %s, peer %s; retransmits calyx %d, peer %d",
				streams, sz.seconds, sz.rounds, route, peerHow, fmtList(cAll), fmtList(pAll), cRe, pRe),
		})
		f.Met = f.Peer > 0 && f.Ratio >= goal
		return f
	}
	hostHow := "host1 -> host2 over the same fabric bridge"
	return []bench.Figure{
		figure("dataplane_vs_host", 1, cx, host, "host-to-host", 0.90, hostHow),
		figure("dataplane_vs_vxlan", 1, cx, overlay, "VXLAN overlay", 1.2,
			fmt.Sprintf("a flannel-style VXLAN overlay between the same hosts (VNI %d, static FDB/neighbour, workload veth MTU %d, no policy): %s -> %s",
				vxlanID, vxlanMTU, vx.workloadIP[0], vx.workloadIP[1])),
		figure("dataplane_8streams_vs_host", 8, cx8, host8, "host-to-host", 0.95, hostHow+", iperf3 -P 8"),
	}, nil
}

// firstPings times new workloads on host2 from CNI ADD returning to the
// first echo reply to w1 on host1, each beside one fabric RTT sample.
func (b *runner) firstPings(ctx context.Context, sz sizes, cacheDir string) (bench.Figure, error) {
	fp, err := newFirstPinger(b.l, b.h2, cacheDir, b.probe, b.fabric, b.h2IP)
	if err != nil {
		return bench.Figure{}, err
	}
	var first, rtt []time.Duration
	// A new workload in a block host1 already routes needs no BGP update;
	// one in a new block does (that case is bench/bgpbench's).
	routed, err := netip.ParsePrefix(strings.Fields(b.route)[0])
	if err != nil {
		return bench.Figure{}, fmt.Errorf("host1's route %q: %w", b.route, err)
	}
	probes, inBlock := 0, 0
	for i := range sz.trials {
		tr, err := fp.run(ctx)
		if err != nil {
			return bench.Figure{}, fmt.Errorf("first-ping trial %d: %w", i+1, err)
		}
		first, rtt = append(first, tr.firstPing), append(rtt, tr.fabricRTT)
		probes += tr.probes
		if routed.Contains(tr.addr) {
			inBlock++
		}
	}
	b.log.Info("first pings", "ms", fmtDurations(first))
	f := bench.NewRatio(bench.Figure{
		Name: "dataplane_new_workload_first_ping_ms", Unit: "ms",
		Calyx: benchkit.MedianMs(first), Peer: benchkit.MedianMs(rtt), PeerName: "fabric ping RTT",
		Goal: "<= 50 ms",
		Notes: fmt.Sprintf("median of %d new workloads on host2 (CNI ADD via libcni from host2's netns, labels matched by policy %s): from ADD returning to the first echo reply to %s on host1, probing every %s (%d probes in all; %d trials means every first probe answered); per trial ms %s; max %.1f ms; %d of %d new workloads inside host2's block %s that host1 already routed; peer: host1->host2 RTT, median of %d, one after each trial",
			sz.trials, policyName, b.w1.Name, probeInterval, probes, sz.trials, fmtDurations(first), benchkit.PercentileMs(first, 100), inBlock, sz.trials, routed, len(rtt)),
	})
	f.Met = f.Calyx > 0 && f.Calyx <= 50
	return f, nil
}

func fmtList(v []float64) string {
	s := ""
	for i, x := range v {
		if i > 0 {
			s += " "
		}
		s += fmt.Sprintf("%.2f", x)
	}
	return s
}

func fmtDurations(ds []time.Duration) string { return fmtList(benchkit.MsOf(ds)) }
