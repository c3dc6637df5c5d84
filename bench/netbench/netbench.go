// Package netbench measures the Calyx dataplane between hosts: TCP
// throughput from a workload on one host to a workload on another (routed
// over BGP-learned routes, through the policy chains) beside host-to-host
// over the same fabric (one stream and eight) and beside a VXLAN overlay
// between the same hosts (vxlan.go), and how soon a new workload answers a ping from
// another host once its CNI ADD returned. `make bench` calls Run (suite
// "net").
//
// Setup: a 2-host lab from e2e/lab (node-to-node BGP mesh, one workload per
// host) with a Policy selecting every workload, so that iperf3 and ICMP are
// let through by rules of the per-endpoint chains.
package netbench

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/e2e/lab"
)

// sizes of one run.
type sizes struct {
	rounds  int // iperf3 runs per side, alternating
	seconds int // iperf3 -t
	trials  int // new workloads for the first-ping figure
}

var (
	fullSizes  = sizes{rounds: 5, seconds: 3, trials: 10}
	quickSizes = sizes{rounds: 2, seconds: 1, trials: 10}
)

// Run builds the lab, measures and removes everything, also on error or
// when ctx is cancelled.
func Run(ctx context.Context, quick bool, log *slog.Logger) ([]bench.Figure, error) {
	sz := fullSizes
	if quick {
		sz = quickSizes
	}
	return benchkit.RunInLab(ctx, "net", log, lab.Options{Hosts: 2, Workloads: 1}, func(l *lab.Lab, work string, log *slog.Logger) (figs []bench.Figure, err error) {
		b, err := prepare(ctx, l, log)
		if err != nil {
			return nil, err
		}
		defer b.close()
		vx, err := newVXLANOverlay(ctx, l, b.h1, b.h2)
		defer func() {
			if cerr := vx.close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("removing the VXLAN peer: %w", cerr))
			}
		}()
		if err != nil {
			return nil, err
		}
		tcp, err := b.throughput(ctx, sz, vx)
		if err != nil {
			return nil, err
		}
		fp, err := b.firstPings(ctx, sz, filepath.Join(work, "cni-cache"))
		if err != nil {
			return nil, err
		}
		return append(tcp, fp), nil
	})
}

// runner holds the prepared lab: two hosts, a workload on each, the policy
// in place and the BGP route between them checked.
type runner struct {
	l             *lab.Lab
	log           *slog.Logger
	h1, h2        lab.Host
	h2IP          netip.Addr
	w1, w2        lab.Workload
	w1IP, w2IP    netip.Addr
	route         string // host1's BGP route toward w2
	backRoute     string // host2's BGP route toward w1
	probe, fabric *pinger
}

func prepare(ctx context.Context, l *lab.Lab, log *slog.Logger) (*runner, error) {
	b := &runner{l: l, log: log}
	var err error
	if b.h1, err = l.Host(lab.HostName(1)); err != nil {
		return nil, err
	}
	if b.h2, err = l.Host(lab.HostName(2)); err != nil {
		return nil, err
	}
	if b.h2IP, err = netip.ParseAddr(b.h2.IP); err != nil {
		return nil, fmt.Errorf("host2 address: %w", err)
	}
	if b.w1, b.w1IP, err = workloadOn(l, b.h1.Name); err != nil {
		return nil, err
	}
	if b.w2, b.w2IP, err = workloadOn(l, b.h2.Name); err != nil {
		return nil, err
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := l.WaitEstablished(wctx); err != nil {
		return nil, err
	}
	// Both directions: the TCP ACKs and the echo replies come back over
	// host2's route to w1.
	if b.route, err = waitBGPRoute(wctx, l, b.h1.Name, b.w2IP, b.h2.IP); err != nil {
		return nil, err
	}
	if b.backRoute, err = waitBGPRoute(wctx, l, b.h2.Name, b.w1IP, b.h1.IP); err != nil {
		return nil, err
	}
	// Traffic from w1 leaves through host1's cx-fw- chain, reaches w2
	// through host2's cx-tw- chain: both must run the policy.
	if err := applyPolicy(wctx, l, map[string]string{b.h1.Name: "cx-fw-", b.h2.Name: "cx-tw-"}); err != nil {
		return nil, err
	}
	if b.probe, err = openPinger(b.w1.Netns); err != nil {
		return nil, err
	}
	if b.fabric, err = openPinger(b.h1.Netns); err != nil {
		b.probe.Close()
		return nil, err
	}
	if _, _, err := b.probe.firstReply(wctx, b.w2IP, 1, 100*time.Millisecond, 10*time.Second); err != nil {
		b.close()
		return nil, fmt.Errorf("%s cannot reach %s before the benchmark: %w", b.w1.Name, b.w2.Name, err)
	}
	log.Info("lab ready", "route", b.route, "back_route", b.backRoute, "policy", policyName)
	return b, nil
}

func (b *runner) close() {
	b.probe.Close()
	b.fabric.Close()
}
