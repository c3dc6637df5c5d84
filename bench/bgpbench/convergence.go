package bgpbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/e2e/lab"
	"github.com/calyx-net/calyx/routes"
)

// blockPool is the pool of the convergence benchmark: /32 blocks, for
// host1 only, so that every ADD on host1 claims a new block and host1 must
// announce a new prefix (see Run's notes for why /32).
var blockPool = netip.MustParsePrefix("10.245.0.0/16")

const (
	blockPoolName = "bgpbench-blocks"
	// measuredHost adds the workloads; watchedHost's kernel is watched.
	measuredHost = "host1"
	watchedHost  = "host3"
	// convergenceTimeout bounds one run: a route that has not reached
	// host3 by then is a failure, not a slow sample.
	convergenceTimeout = 15 * time.Second
	// runGap lets the agents go idle between two runs, so that each run
	// measures one new block on its own.
	runGap = 150 * time.Millisecond
)

// convergence is what the new-block benchmark measured, one entry per
// measured run (the warm-up run is not in it).
type convergence struct {
	// afterReturn: from the moment AddWorkload returned until host3's
	// kernel announced the route (negative: the route was there first).
	afterReturn []time.Duration
	// fromCall: from the call of AddWorkload (it creates the workload's
	// namespace, then runs the CNI ADD) until the route event.
	fromCall []time.Duration
	// add: how long AddWorkload took.
	add []time.Duration
}

// prepareBlockPool restricts the lab's pool to the other hosts, adds the
// /32-block pool for host1 and raises maxBlocksPerHost so that host1 may
// claim one block per run.
func prepareBlockPool(ctx context.Context, l *lab.Lab, maxBlocks int) error {
	ds, err := l.Datastore()
	if err != nil {
		return err
	}
	var rs []datastore.Resource
	r, err := ds.Get(ctx, datastore.KindIPPool, "lab-pool")
	if err != nil {
		return fmt.Errorf("reading the lab's pool: %w", err)
	}
	labPool := r.(*datastore.IPPool)
	labPool.Spec.NodeSelector = fmt.Sprintf("%s != %q", datastore.LabelNode, measuredHost)
	rs = append(rs, labPool,
		&datastore.IPPool{
			TypeMeta: datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindIPPool},
			Metadata: datastore.Metadata{Name: blockPoolName},
			Spec: datastore.IPPoolSpec{
				CIDR: blockPool.String(), BlockSize: 32,
				NodeSelector: fmt.Sprintf("%s == %q", datastore.LabelNode, measuredHost),
			},
		},
		&datastore.IPAMConfig{
			TypeMeta: datastore.TypeMeta{APIVersion: datastore.APIVersion, Kind: datastore.KindIPAMConfig},
			Metadata: datastore.Metadata{Name: datastore.DefaultSingletonName},
			Spec:     datastore.IPAMConfigSpec{MaxBlocksPerHost: maxBlocks},
		})
	for _, r := range rs {
		if err := datastore.Validate(r); err != nil {
			return fmt.Errorf("benchmark resource %s: %w", datastore.Describe(r), err)
		}
	}
	if err := ds.WriteAll(ctx, rs, datastore.ModeApply); err != nil {
		return fmt.Errorf("writing the benchmark's pools: %w", err)
	}
	return nil
}

// measureConvergence adds runs+1 workloads on host1 (the first is a
// warm-up: first CNI call, first policy programming) and times each new
// block's route into host3's kernel.
func measureConvergence(ctx context.Context, l *lab.Lab, runs int, log *slog.Logger) (convergence, error) {
	var res convergence
	if err := prepareBlockPool(ctx, l, runs+20); err != nil {
		return res, err
	}
	ns, err := l.Namespace(watchedHost)
	if err != nil {
		return res, err
	}
	w, err := watchRoutes(benchkit.NetnsPath(ns), routes.ProtoBGP, blockPool, log)
	if err != nil {
		return res, err
	}
	defer w.close()

	for i := 0; i <= runs; i++ {
		name := fmt.Sprintf("bb-nb-%02d", i)
		called := time.Now()
		wl, err := l.AddWorkload(ctx, name, measuredHost, map[string]string{"bench": "bgp"})
		returned := time.Now()
		if err != nil {
			return res, fmt.Errorf("run %d: %w", i, err)
		}
		p, err := workloadPrefix(wl)
		if err != nil {
			return res, fmt.Errorf("run %d: %w", i, err)
		}
		wctx, cancel := context.WithTimeout(ctx, convergenceTimeout)
		seen, err := w.waitPrefix(wctx, p)
		cancel()
		if err != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return res, ctxErr
			}
			return res, fmt.Errorf("run %d: the route to %s (host1's new block) did not reach host3's kernel within %s: %w; %s",
				i, p, convergenceTimeout, err, ribDiagnosis(ctx, l, watchedHost, p))
		}
		log.Debug("new block converged", "run", i, "block", p, "after_return", seen.Sub(returned), "from_call", seen.Sub(called), "add", returned.Sub(called))
		if i > 0 {
			res.afterReturn = append(res.afterReturn, seen.Sub(returned))
			res.fromCall = append(res.fromCall, seen.Sub(called))
			res.add = append(res.add, returned.Sub(called))
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(runGap):
		}
	}
	if n := w.lostEvents(); n > 0 {
		log.Warn("the route watch on host3 lost events; some first-seen times are late", "renewals", n)
	}
	return res, nil
}

// ribDiagnosis says whether host's BGP RIB holds p, to tell a route that
// BGP never delivered from one the agent did not program.
func ribDiagnosis(ctx context.Context, l *lab.Lab, host string, p netip.Prefix) string {
	out, err := l.ExecContext(ctx, host, lab.CalyxctlBinary, "bgp", "routes")
	if err != nil {
		return "reading " + host + "'s BGP RIB failed: " + err.Error()
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == p.String() {
			return fmt.Sprintf("%s's BGP RIB holds it (next hops %s): BGP delivered it, the agent did not program it into the kernel", host, f[1])
		}
	}
	return host + "'s BGP RIB does not hold it either: it was not delivered over BGP"
}

// workloadPrefix is the workload's IPv4 address as a /32 inside the block
// pool: with /32 blocks that is also the block host1 announces.
func workloadPrefix(w lab.Workload) (netip.Prefix, error) {
	for _, s := range w.IPs {
		a, err := netip.ParseAddr(s)
		if err != nil || !a.Is4() {
			continue
		}
		if !blockPool.Contains(a) {
			return netip.Prefix{}, fmt.Errorf("workload %s got %s, outside the /32-block pool %s: the pool setup did not take", w.Name, a, blockPool)
		}
		return netip.PrefixFrom(a, 32), nil
	}
	return netip.Prefix{}, errors.New("workload " + w.Name + " got no IPv4 address")
}
