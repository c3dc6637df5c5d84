package cnibench

import (
	"fmt"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
)

const refName = "ptp+host-local"

// figures turns the samples into the suite's figures: medians for the
// goals, p99s and the burst case beside them, in the order.
func figures(sz sizes, cx, ref result) []bench.Figure {
	how := fmt.Sprintf("%d sequential per side, rounds of %d alternating with %s; same host netns, libcni, fresh pre-made netns",
		len(cx.seq.add), sz.roundSize, refName)
	p99s := func(c, r samples) string {
		return fmt.Sprintf("p99 ADD calyx %.1f ms / %s %.1f ms; p99 DEL calyx %.1f ms / %s %.1f ms",
			benchkit.PercentileMs(c.add, 99), refName, benchkit.PercentileMs(r.add, 99),
			benchkit.PercentileMs(c.del, 99), refName, benchkit.PercentileMs(r.del, 99))
	}
	ratioGoal := func(name string, calyx, peer, limit float64, notes string) bench.Figure {
		f := bench.NewRatio(bench.Figure{
			Name: name, Unit: "ms", Calyx: calyx, Peer: peer, PeerName: refName,
			Goal: fmt.Sprintf("ratio <= %g", limit), Notes: notes,
		})
		f.Met = f.Peer > 0 && f.Ratio <= limit
		return f
	}
	return []bench.Figure{
		ratioGoal("cni_add_median", benchkit.MedianMs(cx.seq.add), benchkit.MedianMs(ref.seq.add), 0.5,
			how+"; calyx ADD includes IPAM and the WorkloadEndpoint write to etcd; "+p99s(cx.seq, ref.seq)),
		ratioGoal("cni_add_p99", benchkit.PercentileMs(cx.seq.add, 99), benchkit.PercentileMs(ref.seq.add, 99), 0.75,
			fmt.Sprintf("nearest-rank p99 of %d sequential ADDs per side", len(cx.seq.add))),
		ratioGoal("cni_del_median", benchkit.MedianMs(cx.seq.del), benchkit.MedianMs(ref.seq.del), 1.0,
			how+"; "+p99s(cx.seq, ref.seq)),
		ratioGoal(burstName(sz), benchkit.PercentileMs(cx.par.add, 99), benchkit.PercentileMs(ref.par.add, 99), 0.5,
			fmt.Sprintf("%d rounds of %d ADDs started at once on one node per side (each timed alone, from its own thread in the host netns), then %d DELs at once; median ADD calyx %.1f ms / %s %.1f ms; median DEL calyx %.1f ms / %s %.1f ms; ",
				sz.burstRound, sz.burst, sz.burst, benchkit.MedianMs(cx.par.add), refName, benchkit.MedianMs(ref.par.add),
				benchkit.MedianMs(cx.par.del), refName, benchkit.MedianMs(ref.par.del))+p99s(cx.par, ref.par)),
	}
}

// burstName is the burst figure's name, by its size (100 in the full run).
func burstName(sz sizes) string { return fmt.Sprintf("cni_add_burst%d_p99", sz.burst) }
