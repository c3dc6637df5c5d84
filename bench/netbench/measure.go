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

// throughput alternates iperf3 runs workload->workload and host->host
// (workload first in even rounds, host first in odd ones).
func (b *runner) throughput(ctx context.Context, sz sizes) (bench.Figure, error) {
	type path struct {
		server, client, dst string
		runs                []stream
	}
	paths := [2]*path{
		{server: b.w2.Name, client: b.w1.Name, dst: b.w2IP.String()},
		{server: b.h2.Name, client: b.h1.Name, dst: b.h2.IP},
	}
	for r := range sz.rounds {
		order := [2]int{0, 1}
		if r%2 == 1 {
			order = [2]int{1, 0}
		}
		for _, i := range order {
			p := paths[i]
			s, err := iperf(ctx, b.l, p.server, p.client, p.dst, sz.seconds)
			if err != nil {
				return bench.Figure{}, fmt.Errorf("round %d: %w", r+1, err)
			}
			p.runs = append(p.runs, s)
		}
		b.log.Info("iperf3 round", "round", r+1, "of", sz.rounds,
			"workload_gbps", paths[0].runs[r].gbps, "host_gbps", paths[1].runs[r].gbps)
	}
	gbps := func(p *path) (med float64, all []float64, retrans int) {
		for _, s := range p.runs {
			all = append(all, s.gbps)
			retrans += s.retrans
		}
		return benchkit.Median(all), all, retrans
	}
	cx, cxAll, cxRe := gbps(paths[0])
	host, hostAll, hostRe := gbps(paths[1])
	f := bench.NewRatio(bench.Figure{
		Name: "dataplane_tcp_gbps", Unit: "Gbit/s", Calyx: cx, Peer: host, PeerName: "host-to-host",
		Goal: "ratio >= 0.8",
		Notes: fmt.Sprintf("iperf3 TCP 1 stream, -t %d, median of %d runs per side, alternating; %s (%s) -> %s (%s) over BGP-learned routes (proto %s) host1 %q, back host2 %q, with policy %s in the cx-fw-/cx-tw- chains; host1 -> host2 over the same fabric bridge; Gbit/s per run calyx %s, host %s; retransmits calyx %d, host %d",
			sz.seconds, sz.rounds, b.w1.Name, b.w1IP, b.w2.Name, b.w2IP, bgpRouteProto, b.route, b.backRoute, policyName,
			fmtList(cxAll), fmtList(hostAll), cxRe, hostRe),
	})
	f.Met = f.Peer > 0 && f.Ratio >= 0.8
	return f, nil
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
