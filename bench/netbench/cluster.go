package netbench

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/calyx-net/calyx/e2e/lab"
)

// policyName is the policy the benchmark puts in place, so that packets
// cross real per-endpoint chains and not an open dataplane.
const policyName = "netbench-allow"

// benchLabels are carried by the lab's own workloads (see e2e/lab) and
// given to the workloads this package adds, so that the policy selects all.
var benchLabels = map[string]any{"lab-test": "yes", "app": "netbench"}

// policyYAML selects every lab workload: ingress only iperf3 and ICMP from
// other lab workloads, egress open. The iperf3 and ping traffic is
// allowed by a rule, not by the absence of policy.
const policyYAML = `apiVersion: calyx.dev/v1
kind: Policy
metadata:
  name: ` + policyName + `
spec:
  selector: lab-test == "yes"
  types: [Ingress, Egress]
  ingress:
  - action: Allow
    protocol: tcp
    source:
      selector: lab-test == "yes"
    destination:
      ports: [` + iperfPort + `]
  - action: Allow
    protocol: icmp
    source:
      selector: lab-test == "yes"
  egress:
  - action: Allow
`

// bgpRouteProto is the rtnetlink protocol of routes the agent learned over
// BGP (docs/routes.md).
const bgpRouteProto = "202"

// applyPolicy writes the policy and waits until host's iptables send the
// workload's traffic through it (chain prefix: cx-tw- for traffic to a
// workload, cx-fw- for traffic from one).
func applyPolicy(ctx context.Context, l *lab.Lab, waitFor map[string]string) error {
	if err := l.Apply(ctx, []byte(policyYAML)); err != nil {
		return fmt.Errorf("applying policy %s: %w", policyName, err)
	}
	for host, chain := range waitFor {
		if err := poll(ctx, 30*time.Second, func() error {
			out, err := l.ExecContext(ctx, host, "iptables-save", "-t", "filter")
			if err != nil {
				return err
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "-A "+chain) && strings.Contains(line, "policy "+policyName) {
					return nil
				}
			}
			return fmt.Errorf("%s: no %s* chain jumps to policy %s yet", host, chain, policyName)
		}); err != nil {
			return err
		}
	}
	return nil
}

// waitBGPRoute waits until host holds a BGP-learned route covering dst via
// nextHop, and returns it as `ip route` prints it.
func waitBGPRoute(ctx context.Context, l *lab.Lab, host string, dst netip.Addr, nextHop string) (string, error) {
	var found string
	err := poll(ctx, 30*time.Second, func() error {
		out, err := l.ExecContext(ctx, host, "ip", "-4", "route", "show", "proto", bgpRouteProto)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 3 || f[1] != "via" || f[2] != nextHop {
				continue
			}
			if p, err := netip.ParsePrefix(f[0]); err == nil && p.Contains(dst) {
				found = line
				return nil
			}
		}
		return fmt.Errorf("%s has no route proto %s to %s via %s: %q", host, bgpRouteProto, dst, nextHop, out)
	})
	if err != nil {
		// Tell "never learned" from "learned but not programmed".
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rib, ribErr := l.ExecContext(rctx, host, "calyxctl", "bgp", "routes")
		if ribErr != nil {
			rib = ribErr.Error()
		}
		return "", fmt.Errorf("%w; %s's BGP RIB (calyxctl bgp routes):\n%s", err, host, rib)
	}
	return found, nil
}

// poll retries check until it succeeds or the timeout passes.
func poll(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// workloadOn finds the lab workload Up made on host.
func workloadOn(l *lab.Lab, host string) (lab.Workload, netip.Addr, error) {
	for _, w := range l.Workloads() {
		if w.Host == host && w.Wired {
			a, err := netip.ParseAddr(w.IP())
			if err != nil {
				return w, netip.Addr{}, fmt.Errorf("workload %s: address %q: %w", w.Name, w.IP(), err)
			}
			return w, a, nil
		}
	}
	return lab.Workload{}, netip.Addr{}, fmt.Errorf("no wired workload on %s", host)
}
