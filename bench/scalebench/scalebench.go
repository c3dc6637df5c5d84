// Package scalebench measures what Calyx costs as a cluster grows, with
// the real parts: how long a 50-host lab takes to converge (every BGP
// session Established, every workload route in every kernel) beside the
// 30 s limit, an idle agent's CPU, the etcd round trips, bytes and watch
// events of one CNI ADD, and one real agent's memory and time to in-sync
// when etcd holds 100k WorkloadEndpoints of 1,000 other nodes. `make
// bench` calls Run; docs/scale.md uses the figures.
//
// Two labs, one after the other (so that the first one's 50 agents do not
// load the machine while the second is measured): the convergence lab,
// and a two-host lab for the etcd and memory figures. Everything they make
// goes with them, also on failure or Ctrl-C; after a failure the work
// directory stays, with the labs' logs.
package scalebench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
)

// sizes of one run.
type sizes struct {
	// The convergence lab: hosts, workloads per host, route reflectors.
	hosts, workloads, reflectors int
	// idle is how long the agents' idle CPU is sampled.
	idle time.Duration
	// adds is how many CNI ADDs (and DELs) the etcd figures average: 63
	// fill the /26 the first ADD claimed.
	adds int
	// remoteEndpoints of remoteNodes fake nodes fill etcd for the memory
	// figures.
	remoteEndpoints, remoteNodes int
	// remoteBlocks /26 blocks of fake nodes with allocsPerBlock
	// addresses taken each fill etcd for the IPAM memory figure.
	remoteBlocks, allocsPerBlock int
	// settle is how long an agent is left alone before its RSS is read.
	settle time.Duration
}

var (
	fullSizes  = sizes{hosts: 50, workloads: 10, reflectors: 2, idle: 10 * time.Second, adds: 63, remoteEndpoints: 100_000, remoteNodes: 1000, remoteBlocks: 2000, allocsPerBlock: 50, settle: 5 * time.Second}
	quickSizes = sizes{hosts: 50, workloads: 10, reflectors: 2, idle: 5 * time.Second, adds: 63, remoteEndpoints: 10_000, remoteNodes: 100, remoteBlocks: 200, allocsPerBlock: 50, settle: 3 * time.Second}
)

// Run measures every figure. quick: the same 50-host lab (it is the
// figure), a shorter idle sample and 10k remote endpoints.
func Run(ctx context.Context, quick bool, log *slog.Logger) ([]bench.Figure, error) {
	sz := fullSizes
	if quick {
		sz = quickSizes
	}
	return measure(ctx, sz, log)
}

func measure(ctx context.Context, sz sizes, log *slog.Logger) (figs []bench.Figure, err error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("scale benchmark needs root (it builds network namespaces)")
	}
	bin, err := benchkit.BinDir(ctx, log)
	if err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp("", "scalebench-")
	if err != nil {
		return nil, fmt.Errorf("work directory: %w", err)
	}
	defer func() {
		if err != nil {
			log.Warn("scale benchmark failed; lab logs kept", "dir", work)
			return
		}
		_ = os.RemoveAll(work)
	}()
	var errs []error
	conv, err := measureConvergence(ctx, sz, lab.Options{Dir: filepath.Join(work, "lab50"), BinDir: bin}, log.With("part", "converge"))
	if err != nil {
		errs = append(errs, fmt.Errorf("convergence lab: %w", err))
	} else {
		figs = append(figs, convergenceFigures(sz, conv)...)
	}
	if ctx.Err() == nil {
		costs, err := measureCosts(ctx, sz, lab.Options{Dir: filepath.Join(work, "costs"), BinDir: bin}, log.With("part", "costs"))
		figs = append(figs, costFigures(sz, costs)...)
		if err != nil {
			errs = append(errs, fmt.Errorf("etcd and memory lab: %w", err))
		}
	}
	return figs, errors.Join(errs...)
}

// testHookLabUp lets the test see each lab once it is up.
var testHookLabUp func(*lab.Lab)

// withLab brings up a lab of opts, runs fn with it and the time Up took,
// and tears it down whatever happens.
func withLab(ctx context.Context, opts lab.Options, log *slog.Logger, fn func(l *lab.Lab, upTook time.Duration) error) (err error) {
	opts.Logger = log.With("lab", filepath.Base(opts.Dir))
	start := time.Now()
	l, err := lab.Up(ctx, opts)
	if err != nil {
		return fmt.Errorf("lab up: %w", err)
	}
	upTook := time.Since(start)
	if testHookLabUp != nil {
		testHookLabUp(l)
	}
	defer func() {
		if downErr := l.Teardown(); downErr != nil {
			err = errors.Join(err, fmt.Errorf("removing the lab in %s: %w", opts.Dir, downErr))
		}
	}()
	return fn(l, upTook)
}
