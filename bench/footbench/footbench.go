// Package footbench measures the idle footprint of a calyx-agent carrying
// real load: 250 local endpoints, 1,000 policies selecting them and 10,000
// routes learned over BGP, all programmed. The figures are the agent's
// resident memory and its CPU while nothing changes, beside the goal's
// limits (64 MiB, 1% of a core). `make bench` calls Run (suite
// "footprint").
//
// Setup: a 1-host lab from e2e/lab with the workloads made by Up (as a
// runtime makes them, in parallel), the policies written to etcd in one
// batch, and a BIRD on the fabric originating the routes to the host
// (bench/bgpbench.Origin). Measuring starts once the kernel holds every
// learned route and iptables every policy, and the agent has been left
// alone for a settle period.
package footbench

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/calyx-net/calyx/bench"
	"github.com/calyx-net/calyx/bench/benchkit"
	"github.com/calyx-net/calyx/bench/bgpbench"
	"github.com/calyx-net/calyx/e2e/lab"
)

// Limits of the goal (issue 16).
const (
	rssLimitMiB = 64
	cpuLimitPct = 1
)

// sizes of one run.
type sizes struct {
	endpoints, policies, routes int
	settle, window              time.Duration
}

var (
	fullSizes  = sizes{endpoints: 250, policies: 1000, routes: 10000, settle: 10 * time.Second, window: 30 * time.Second}
	quickSizes = sizes{endpoints: 10, policies: 40, routes: 500, settle: time.Second, window: 3 * time.Second}
)

// Run builds the loaded 1-host lab, measures the idle agent and removes
// everything, also on error or when ctx is cancelled.
func Run(ctx context.Context, quick bool, log *slog.Logger) ([]bench.Figure, error) {
	sz := fullSizes
	if quick {
		sz = quickSizes
	}
	return benchkit.RunInLab(ctx, "footprint", log, lab.Options{Hosts: 1, Workloads: sz.endpoints},
		func(l *lab.Lab, _ string, log *slog.Logger) (figs []bench.Figure, err error) {
			return measure(ctx, l, sz, log)
		})
}

func measure(ctx context.Context, l *lab.Lab, sz sizes, log *slog.Logger) (figs []bench.Figure, err error) {
	h := l.Hosts()[0]
	if err := l.Apply(ctx, policiesYAML(sz.policies, sz.endpoints)); err != nil {
		return nil, fmt.Errorf("writing %d policies: %w", sz.policies, err)
	}
	origin, err := bgpbench.StartOrigin(ctx, l, sz.routes, log)
	defer func() {
		if cerr := origin.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("removing the origin BIRD: %w", cerr)
		}
	}()
	if err != nil {
		return nil, err
	}
	if err := waitPolicies(ctx, l, h.Name, sz.policies); err != nil {
		return nil, err
	}
	pid, err := agentPID(l, h.Name)
	if err != nil {
		return nil, err
	}
	log.Info("load in place; settling", "endpoints", sz.endpoints, "policies", sz.policies, "routes", sz.routes, "settle", sz.settle)
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-time.After(sz.settle):
	}
	s, err := sample(ctx, pid, sz.window)
	if err != nil {
		return nil, err
	}
	heap, herr := agentMemStats(h.Netns)
	if herr != nil {
		heap = "Go memory stats unavailable: " + herr.Error()
	}
	load := fmt.Sprintf("%d local endpoints (made by CNI ADD), %d policies (each selecting one endpoint, ingress from another's selector), %d routes learned over eBGP from a BIRD and in the kernel; measured after %s idle, over %s",
		sz.endpoints, sz.policies, sz.routes, sz.settle, sz.window)
	rss := bench.NewRatio(bench.Figure{
		Name: "agent_idle_rss_mib", Unit: "MiB", Calyx: s.rssMax, Peer: rssLimitMiB, PeerName: "limit",
		Goal:  fmt.Sprintf("<= %d MiB", rssLimitMiB),
		Notes: fmt.Sprintf("%s; highest VmRSS of %d samples (first %.1f MiB); at the end %s; %s", load, s.samples, s.rssFirst, s.split, heap),
	})
	rss.Met = rss.Calyx > 0 && rss.Calyx <= rssLimitMiB
	cpu := bench.NewRatio(bench.Figure{
		Name: "agent_idle_cpu_percent", Unit: "% core", Calyx: s.cpuPct, Peer: cpuLimitPct, PeerName: "limit",
		Goal:  fmt.Sprintf("<= %d%% core", cpuLimitPct),
		Notes: fmt.Sprintf("%s; user+system CPU of the agent over the window (/proc/PID/stat, 10 ms ticks: %.2f s)", load, s.cpuSeconds),
	})
	cpu.Met = cpu.Calyx <= cpuLimitPct
	return []bench.Figure{rss, cpu}, nil
}

// policiesYAML is n policies over endpoints lab workloads (labels app=wK,
// see e2e/lab): policy i selects workload i%endpoints+1 and lets in TCP to
// one port from the next workload, so that each policy has its own chain
// and each source selector its own ipset.
func policiesYAML(n, endpoints int) []byte {
	var b strings.Builder
	for i := range n {
		self, from := i%endpoints+1, (i+1)%endpoints+1
		fmt.Fprintf(&b, `---
apiVersion: calyx.dev/v1
kind: Policy
metadata:
  name: %s%d
spec:
  selector: app == "w%d"
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: tcp
    source:
      selector: app == "w%d"
    destination:
      ports: [%d]
`, policyPrefix, i, self, from, 8000+i%1000)
	}
	return []byte(b.String())
}

const policyPrefix = "fb-"

// waitPolicies polls host's iptables until every policy's chain is jumped
// to from an endpoint's chain (the comment "cx:HASH policy NAME" on the
// jump, policy/render_chains.go).
func waitPolicies(ctx context.Context, l *lab.Lab, host string, n int) error {
	deadline := time.Now().Add(max(60*time.Second, time.Duration(n)*30*time.Millisecond))
	seen := 0
	for {
		out, err := l.ExecContext(ctx, host, "iptables-save", "-t", "filter")
		if err != nil {
			return err
		}
		names := map[string]bool{}
		for _, line := range strings.Split(out, "\n") {
			if _, rest, ok := strings.Cut(line, " policy "+policyPrefix); ok && strings.HasPrefix(line, "-A cx-") {
				name, _, _ := strings.Cut(rest, `"`)
				names[name] = true
			}
		}
		if seen = len(names); seen >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d policies programmed in iptables after waiting", host, seen, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// agentPID is the PID of host's agent as the lab recorded it.
func agentPID(l *lab.Lab, host string) (int, error) {
	for _, p := range l.Processes() {
		if p.Name == "agent-"+host && p.Alive() {
			return p.PID, nil
		}
	}
	return 0, fmt.Errorf("the agent of %s does not run", host)
}
