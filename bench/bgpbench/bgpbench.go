// Package bgpbench measures Calyx's BGP path in a lab of network
// namespaces (e2e/lab): how fast a new address block reaches another
// host's kernel, and how a host takes 100k prefixes from a BIRD peer
// beside a second BIRD that receives the same prefixes with its kernel
// protocol, in the same run. `make bench` calls Run.
//
// What it adds to the lab, and removes again: an IPPool of /32 blocks for
// host1, and two namespaces on the lab's fabric ("<prefix>bb-origin" with
// the originating BIRD at 198.18.0.240, "<prefix>bb-recv" with the
// receiving BIRD at 198.18.0.241). They carry the lab's prefix, so
// `calyx-lab down --dir DIR` removes them too should this process be
// killed. CALYX_BENCH_AGENT_LOG_LEVEL sets the agents' log level (default
// info) and keeps the logs, for looking into where the time goes;
// CALYX_BENCH_PPROF_DIR profiles host1's agent (profile.go).
package bgpbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
)

// sizes of one run.
type sizes struct {
	prefixes        int // originated by the BIRD peer
	convergenceRuns int // new blocks timed
	scaleRounds     int // transfers per side, order alternating
	quick           bool
}

// Run builds a three-host lab, measures, and removes everything it made
// (also when it fails or ctx is cancelled). quick: 10k prefixes and 10
// convergence runs.
func Run(ctx context.Context, quick bool, log *slog.Logger) (figs []bench.Figure, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("bgp benchmark: needs root (it builds network namespaces)")
	}
	sz := sizes{prefixes: 100_000, convergenceRuns: 50, scaleRounds: 3}
	if quick {
		sz = sizes{prefixes: 10_000, convergenceRuns: 10, scaleRounds: 2, quick: true}
	}
	dir, err := os.MkdirTemp("", "bgpbench-")
	if err != nil {
		return nil, fmt.Errorf("bgp benchmark: lab directory: %w", err)
	}
	return measure(ctx, dir, sz, log)
}

// measure runs the lab in dir (its name gives the lab's namespace prefix,
// lab.Prefix) and removes dir after a successful run.
func measure(ctx context.Context, dir string, sz sizes, log *slog.Logger) (figs []bench.Figure, err error) {
	bins, err := benchkit.BinDir(ctx, log)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bgp benchmark: %w", err)
	}
	log.Info("bgp benchmark lab", "dir", dir, "bin", bins, "prefixes", sz.prefixes, "convergence_runs", sz.convergenceRuns)
	level := os.Getenv("CALYX_BENCH_AGENT_LOG_LEVEL")
	var agentArgs []string
	if profileDir() != "" {
		agentArgs = []string{"--pprof-addr", pprofAddr}
	}
	l, err := lab.Up(ctx, lab.Options{Dir: dir, Hosts: 3, BinDir: bins, AgentLogLevel: level, AgentArgs: agentArgs, Logger: log.With("part", "lab")})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("bgp benchmark: lab up: %w", err)
	}
	defer func() {
		if downErr := l.Teardown(); downErr != nil {
			err = errors.Join(err, fmt.Errorf("bgp benchmark: lab down (dir %s): %w", dir, downErr))
			return
		}
		if err != nil || level != "" {
			log.Warn("bgp benchmark: agent and BIRD logs kept", "dir", dir)
			if err != nil {
				err = fmt.Errorf("%w (agent and BIRD logs kept in %s)", err, dir)
			}
			return
		}
		_ = os.RemoveAll(dir)
	}()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	err = l.WaitEstablished(wctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("bgp benchmark: %w", err)
	}

	var errs []error
	conv, err := measureConvergence(ctx, l, sz.convergenceRuns, log.With("part", "convergence"))
	if err != nil {
		errs = append(errs, fmt.Errorf("bgp new-block convergence: %w", err))
	} else {
		figs = append(figs, convergenceFigures(conv)...)
	}
	if ctx.Err() == nil {
		sc, err := measureScale(ctx, l, sz.prefixes, sz.scaleRounds, log.With("part", "scale"))
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp %d-prefix scale: %w", sz.prefixes, err))
		} else {
			figs = append(figs, scaleFigures(sc)...)
		}
	}
	if ctx.Err() == nil {
		fo, err := measureFailover(ctx, l, !sz.quick, log.With("part", "failover"))
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp failover: %w", err))
		} else {
			figs = append(figs, failoverFigures(fo)...)
		}
	}
	return figs, errors.Join(errs...)
}
