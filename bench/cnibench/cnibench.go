// Package cnibench measures CNI ADD and DEL latency of Calyx beside the
// reference ptp + host-local plugins, both driven through libcni exactly
// as a container runtime drives them, in the same run. `make bench` calls
// Run (suite "cni").
//
// Figures: ADD median and p99, DEL median (sequential calls), and the p99
// of a burst of ADDs started at once on one node.
//
// Setup: a 1-host lab (etcd, one calyx-agent) from e2e/lab. Both sides
// exec their plugins from a thread inside that host's namespace, into
// workload namespaces made before the timed call. Rounds alternate the
// sides (calyx first in even rounds, ptp first in odd ones) to spread the
// noise of a shared machine over both.
package cnibench

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
)

// sizes of one run.
type sizes struct {
	sequential int // ADDs (then DELs) one after the other, per side
	roundSize  int // sequential calls per side before switching sides
	burst      int // ADDs started at once in a burst round (then as many DELs)
	burstRound int // burst rounds per side
}

var (
	// 100 at once: what a node sees when a Deployment scales up or a
	// drained node comes back (the cni_add_burst100_p99).
	fullSizes  = sizes{sequential: 100, roundSize: 10, burst: 100, burstRound: 2}
	quickSizes = sizes{sequential: 20, roundSize: 5, burst: 10, burstRound: 1}
)

// Run builds a 1-host lab, measures both sides and removes everything,
// also on error or when ctx is cancelled.
func Run(ctx context.Context, quick bool, log *slog.Logger) ([]bench.Figure, error) {
	sz := fullSizes
	if quick {
		sz = quickSizes
	}
	return benchkit.RunInLab(ctx, "cni", log, lab.Options{Hosts: 1}, func(l *lab.Lab, work string, log *slog.Logger) ([]bench.Figure, error) {
		h := l.Hosts()[0]
		calyx, err := calyxSide(l, h, filepath.Join(work, "cache-calyx"))
		if err != nil {
			return nil, err
		}
		ref, err := refSide(l, h, filepath.Join(work, "cache-ptp"), filepath.Join(work, "host-local"))
		if err != nil {
			return nil, err
		}
		res, err := measure(ctx, sz, calyx, ref, log)
		if err != nil {
			return nil, err
		}
		return figures(sz, res[0], res[1]), nil
	})
}

// result is what one side measured.
type result struct{ seq, par samples }

// measure warms both sides up, then runs the alternating sequential and
// burst rounds; it returns the results of a and b.
func measure(ctx context.Context, sz sizes, a, b *side, log *slog.Logger) ([2]result, error) {
	var res [2]result
	sides := [2]*side{a, b}
	// The first calyx ADD on a host claims an IPAM block; the first exec of
	// each plugin reads it from disk. Neither is what a runtime sees later.
	for _, s := range sides {
		var discard samples
		if err := s.sequentialRound(ctx, 1, &discard); err != nil {
			return res, fmt.Errorf("warm-up: %w", err)
		}
	}
	rounds := (sz.sequential + sz.roundSize - 1) / sz.roundSize
	for r := range rounds {
		n := min(sz.roundSize, sz.sequential-r*sz.roundSize)
		for _, i := range order(r) {
			if err := sides[i].sequentialRound(ctx, n, &res[i].seq); err != nil {
				return res, fmt.Errorf("sequential round %d: %w", r+1, err)
			}
		}
		log.Info("sequential round", "round", r+1, "of", rounds)
	}
	for r := range sz.burstRound {
		for _, i := range order(r) {
			if err := sides[i].parallelRound(ctx, sz.burst, &res[i].par); err != nil {
				return res, fmt.Errorf("burst round %d (%d at once): %w", r+1, sz.burst, err)
			}
		}
		log.Info("burst round", "round", r+1, "of", sz.burstRound)
	}
	return res, nil
}

// order alternates which side goes first.
func order(round int) [2]int {
	if round%2 == 0 {
		return [2]int{0, 1}
	}
	return [2]int{1, 0}
}
