// Package ipambench measures Calyx IPAM's allocation rate against a real,
// fsync'ing etcd, beside the reference host-local IPAM plugin executed the
// way a container runtime executes it, in the same run with the two sides
// alternating. `make bench` calls Run.
package ipambench

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/datastore/etcdserver"
)

// HostLocalPath is the reference plugin (Debian containernetworking-plugins).
const HostLocalPath = "/usr/lib/cni/host-local"

// settings size one run.
type settings struct {
	perNode int // allocations per node per round
	workers int // concurrent callers per node (a burst of pod starts)
	rounds  int // rounds per side; the median is reported
}

// Run measures allocations per second during a burst of concurrent ADDs on
// one node and on three contending nodes, each beside host-local under the
// same load; one caller at a time is measured too and given in the notes.
func Run(ctx context.Context, quick bool, log *slog.Logger) ([]bench.Figure, error) {
	s := settings{perNode: 600, workers: 8, rounds: 3}
	if quick {
		s = settings{perNode: 200, workers: 8, rounds: 2}
	}
	return run(ctx, s, log)
}

func run(ctx context.Context, s settings, log *slog.Logger) ([]bench.Figure, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if _, err := os.Stat(HostLocalPath); err != nil {
		return nil, fmt.Errorf("IPAM benchmark needs the reference plugin %s (Debian package containernetworking-plugins): %w", HostLocalPath, err)
	}
	dir, err := os.MkdirTemp("", "calyx-ipambench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	// A real etcd that fsyncs every commit, as in production.
	srv, err := etcdserver.Start(ctx, etcdserver.Options{Dir: filepath.Join(dir, "etcd"), ClientURL: "http://127.0.0.1:0", NoFsync: false})
	if err != nil {
		return nil, err
	}
	defer srv.Close()
	r := &runner{ctx: ctx, s: s, log: log, dir: dir, endpoint: srv.Endpoint()}
	defer r.close()
	if err := r.setup(); err != nil {
		return nil, err
	}

	burst := load{workers: s.workers, perNode: s.perNode}
	single := load{workers: 1, perNode: max(s.perNode/4, 1)}
	var one, oneHL, three, threeHL, seq, seqHL []float64
	for round := range s.rounds {
		// Alternate which side goes first so drift (other load on the
		// machine, etcd compaction) hits both alike.
		pairs := [][2]func() error{
			{r.measure(&one, func() (float64, error) { return r.calyx(round, 1, burst) }),
				r.measure(&oneHL, func() (float64, error) { return r.hostLocal(round, 1, burst) })},
			{r.measure(&three, func() (float64, error) { return r.calyx(round, benchNodes, burst) }),
				r.measure(&threeHL, func() (float64, error) { return r.hostLocal(round, benchNodes, burst) })},
			{r.measure(&seq, func() (float64, error) { return r.calyx(round, 1, single) }),
				r.measure(&seqHL, func() (float64, error) { return r.hostLocal(round, 1, single) })},
		}
		for _, pair := range pairs {
			first, second := pair[0], pair[1]
			if round%2 == 1 {
				first, second = second, first
			}
			if err := first(); err != nil {
				return nil, err
			}
			if err := second(); err != nil {
				return nil, err
			}
		}
	}
	notes := func(nodes int) string {
		return fmt.Sprintf("burst of %d concurrent ADDs per node on %d node(s), %d allocations per node per round, median of %d rounds, sides alternating; "+
			"one caller at a time on one node: calyx %.0f, host-local %.0f allocs/s; "+
			"calyx: embedded etcd with fsync, /26 blocks, batched guarded transactions (%d lost races in the whole run); "+
			"host-local: one exec per ADD with CNI_* env and the config on stdin, one data dir per node",
			s.workers, nodes, s.perNode, s.rounds, benchkit.Median(seq), benchkit.Median(seqHL), r.conflicts())
	}
	f1 := bench.NewRatio(bench.Figure{Name: "ipam_allocs_per_s", Unit: "allocs/s", Calyx: benchkit.Median(one), Peer: benchkit.Median(oneHL), PeerName: "host-local", Goal: "ratio >= 2", Notes: notes(1)})
	f1.Met = f1.Ratio >= 2
	f3 := bench.NewRatio(bench.Figure{Name: "ipam_allocs_per_s_3nodes", Unit: "allocs/s", Calyx: benchkit.Median(three), Peer: benchkit.Median(threeHL), PeerName: "host-local", Goal: "ratio >= 2", Notes: notes(benchNodes)})
	f3.Met = f3.Ratio >= 2
	log.Info("IPAM benchmark done", "one_node", f1.Calyx, "host_local", f1.Peer, "three_nodes", f3.Calyx, "host_local_3", f3.Peer)
	return []bench.Figure{f1, f3}, nil
}

// measure returns a step that runs f and appends its rate to into.
func (r *runner) measure(into *[]float64, f func() (float64, error)) func() error {
	return func() error {
		rate, err := f()
		if err != nil {
			return err
		}
		*into = append(*into, rate)
		return nil
	}
}
