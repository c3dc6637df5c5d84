package scalebench

import (
	"fmt"
	"slices"

	"github.com/calyx-net/calyx/bench"
)

// Limits and goals (issue 15); Cilium's per-pod memory is what its
// scalability docs report, for scale.
const (
	convergeLimitS      = 30.0
	idleCPULimitPct     = 1.0
	rssGoalUnselected   = 1024.0
	rssGoalSelected     = 2048.0
	ciliumBytesPerPod   = 10240.0
	rpcsPerAddLimit     = 6.0
	bytesPerAddLimit    = 4096.0
	eventsPerAddLimit   = 4.0
	inSyncRatioLimit    = 4.0
	ciliumPeerName      = "Cilium, reported (~10 KiB per pod)"
	limitPeerName       = "limit"
	convergeFigureName  = "lab50_converge_s"
	idleCPUFigureName   = "agent_idle_cpu_pct"
	rpcsFigureName      = "etcd_txns_per_add"
	bytesFigureName     = "etcd_bytes_per_add"
	eventsFigureName    = "etcd_watch_events_per_agent_per_add"
	rssFigureName       = "agent_rss_per_remote_endpoint_bytes"
	rssSelFigureName    = "agent_rss_per_selected_remote_endpoint_bytes"
	inSyncFigureName    = "agent_insync_100k_endpoints_s"
	rssBlockFigureName  = "agent_rss_per_remote_ipam_allocation_bytes"
	rssGoalAllocation   = 256.0
	labelConvergeFormat = "calyx-lab up --hosts %d --workloads %d --reflectors %d"
)

// figureNames are every figure, in the order Run returns them.
var figureNames = []string{convergeFigureName, idleCPUFigureName, rpcsFigureName, bytesFigureName, eventsFigureName,
	rssFigureName, rssSelFigureName, inSyncFigureName, rssBlockFigureName}

func convergenceFigures(sz sizes, c convergence) []bench.Figure {
	total := c.total().Seconds()
	lab := fmt.Sprintf(labelConvergeFormat, sz.hosts, sz.workloads, sz.reflectors)
	mean, most := 0.0, 0.0
	for _, v := range c.idleCPU {
		mean += v / float64(len(c.idleCPU))
		most = max(most, v)
	}
	return []bench.Figure{
		bench.NewRatio(bench.Figure{
			Name: convergeFigureName, Unit: "s", Calyx: total, Peer: convergeLimitS, PeerName: limitPeerName,
			Goal: "<= 30 s", Met: total <= convergeLimitS,
			Notes: fmt.Sprintf("%s (%d workloads), until every BGP session is Established and every workload route is in every kernel: "+
				"up %.1f s (%s), then sessions %.1f s, routes %.1f s; one run", lab, sz.hosts*sz.workloads,
				c.up.Seconds(), stepsNote(c.steps), c.established.Seconds(), c.routes.Seconds()),
		}),
		bench.NewRatio(bench.Figure{
			Name: idleCPUFigureName, Unit: "% of a core", Calyx: mean, Peer: idleCPULimitPct, PeerName: limitPeerName,
			Goal: "<= 1% per agent", Met: most <= idleCPULimitPct,
			Notes: fmt.Sprintf("mean over the %d agents of the converged %s lab, sampled %s after 1 s of quiet; the busiest %.2f%% (clock tick 10 ms: %.2f%% resolution)",
				c.agents, fmt.Sprintf("%d-host", sz.hosts), sz.idle, most, 1/sz.idle.Seconds()),
		}),
	}
}

func costFigures(sz sizes, c costs) []bench.Figure {
	var figs []bench.Figure
	if e := c.etcd; e.adds > 0 {
		figs = append(figs,
			bench.NewRatio(bench.Figure{
				Name: rpcsFigureName, Unit: "round trips", Calyx: e.addRPCs, Peer: rpcsPerAddLimit, PeerName: limitPeerName,
				Goal: fmt.Sprintf("<= %.0f per ADD", rpcsPerAddLimit), Met: e.addRPCs <= rpcsPerAddLimit,
				Notes: fmt.Sprintf("unary etcd RPCs per CNI ADD into a block the node holds (etcd's grpc_server_handled_total, the idle rate taken out), mean of %d ADDs one at a time: %s; "+
					"the node's first ADD (claims a block) %.0f; a DEL %.1f", e.adds, methodsNote(e.addByMethod), e.firstAddRPCs, e.delRPCs),
			}),
			bench.NewRatio(bench.Figure{
				Name: bytesFigureName, Unit: "bytes", Calyx: e.addBytes, Peer: bytesPerAddLimit, PeerName: limitPeerName,
				Goal: fmt.Sprintf("<= %.0f per ADD", bytesPerAddLimit), Met: e.addBytes <= bytesPerAddLimit,
				Notes: fmt.Sprintf("keys and values written per CNI ADD (a watch on /calyx/v1/ sums them), mean of %d filling the node's /26 (after the ADD that claimed it): %s; "+
					"the legacy block layout (every allocation in the block, before the bitmap) would have written %.0f B per ADD for the same ADDs (the block rebuilt from the handle records and sized as that layout stored it); "+
					"a DEL %.0f bytes (legacy %.0f)", e.adds, blockNote(e.addBlocks), e.legacyAddBytes, e.delBytes, e.legacyDelBytes),
			}),
			bench.NewRatio(bench.Figure{
				Name: eventsFigureName, Unit: "events", Calyx: e.addEvents, Peer: eventsPerAddLimit, PeerName: limitPeerName,
				Goal: fmt.Sprintf("<= %.0f per ADD", eventsPerAddLimit), Met: e.addEvents <= eventsPerAddLimit,
				Notes: fmt.Sprintf("watch events every agent receives per CNI ADD anywhere (its watch covers /calyx/v1/), mean of %d; another node's agent decoded %.1f per ADD "+
					"(calyx_datastore_events_total); a DEL %.1f events", e.adds, e.agentEvents, e.delEvents),
			}),
		)
	}
	r := c.remote
	if r.unselected.rss > 0 {
		per := r.perEndpoint(r.unselected)
		figs = append(figs, bench.NewRatio(bench.Figure{
			Name: rssFigureName, Unit: "bytes", Calyx: per, Peer: ciliumBytesPerPod, PeerName: ciliumPeerName,
			Goal: "<= 1024 B", Met: per <= rssGoalUnselected,
			Notes: fmt.Sprintf("one real agent's RSS growth per remote endpoint, %d WorkloadEndpoints of %d fake nodes in etcd (Kubernetes-shaped: 64-hex container ID, 8 labels, their namespace's Profile with its label), no policy selects them; "+
				"read %s after the agent's start: %.1f MiB without them, %.1f MiB with (Go heap in use %.1f -> %.1f MiB)",
				r.endpoints, r.nodes, sz.settle, r.base.rss/(1<<20), r.unselected.rss/(1<<20), r.base.heapInuse/(1<<20), r.unselected.heapInuse/(1<<20)),
		}))
	}
	if r.selected.rss > 0 {
		per := r.perEndpoint(r.selected)
		figs = append(figs, bench.NewRatio(bench.Figure{
			Name: rssSelFigureName, Unit: "bytes", Calyx: per, Peer: ciliumBytesPerPod, PeerName: ciliumPeerName,
			Goal: "<= 2048 B", Met: per <= rssGoalSelected,
			Notes: fmt.Sprintf("the same with a policy on a local workload whose rule selects all %d (its ipset in the kernel: %d members, kernel memory not counted): %.1f MiB (Go heap in use %.1f MiB)",
				r.endpoints, r.setMembers, r.selected.rss/(1<<20), r.selected.heapInuse/(1<<20)),
		}))
	}
	if r.inSync > 0 {
		s := r.inSync.Seconds()
		figs = append(figs, bench.NewRatio(bench.Figure{
			Name: inSyncFigureName, Unit: "s", Calyx: s, Peer: r.list.Seconds(), PeerName: "one etcd range of the same endpoints, decoded (bench process)",
			Goal: fmt.Sprintf("ratio <= %.0f", inSyncRatioLimit), Met: r.list > 0 && s/r.list.Seconds() <= inSyncRatioLimit,
			Notes: fmt.Sprintf("host1's agent from start to ready (in sync and dataplane programmed; polled every 200 ms) with %d remote endpoints in etcd; writing them took %.1f s (%.0f endpoints/s, 4096 per WriteAll)",
				r.endpoints, r.fill.Seconds(), float64(r.endpoints)/r.fill.Seconds()),
		}))
	}
	if b := c.blocks; b.with.rss > 0 {
		per := b.perAllocation()
		figs = append(figs, bench.NewRatio(bench.Figure{
			Name: rssBlockFigureName, Unit: "bytes", Calyx: per, Peer: rssGoalAllocation, PeerName: limitPeerName,
			Goal: fmt.Sprintf("<= %.0f B (500k allocations at 5,000 nodes: <= 122 MiB per agent)", rssGoalAllocation), Met: per <= rssGoalAllocation,
			Notes: fmt.Sprintf("one real agent's RSS growth per allocation in other nodes' IPAM blocks: %d /26 blocks of %d fake nodes with %d addresses taken each (%d allocations, compact layout) and their handle records in etcd, "+
				"beside a reading just before (restarted, fake endpoints removed): %.1f -> %.1f MiB, %.0f B per block; Go heap in use %.1f -> %.1f MiB, %.1f B per allocation; writing them took %.1f s",
				b.blocks, b.blocks, b.perBlock, b.blocks*b.perBlock, b.base.rss/(1<<20), b.with.rss/(1<<20), per*float64(b.perBlock),
				b.base.heapInuse/(1<<20), b.with.heapInuse/(1<<20), b.heapPerAllocation(), b.fill.Seconds()),
		}))
	}
	return figs
}

// missing lists the figures of figureNames not in figs.
func missing(figs []bench.Figure) []string {
	var out []string
	for _, n := range figureNames {
		if !slices.ContainsFunc(figs, func(f bench.Figure) bool { return f.Name == n }) {
			out = append(out, n)
		}
	}
	return out
}
