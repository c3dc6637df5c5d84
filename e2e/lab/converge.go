package lab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// WaitRoutes waits until every host's kernel holds a route learned over
// BGP (protocol 202) covering each address of every workload of the other
// hosts, in both families. Sessions being Established (WaitEstablished)
// does not mean the routes went through yet: graceful restart defers the
// first updates until End-of-RIB, and IPv6 blocks often arrive a few
// hundred milliseconds after the IPv4 ones, so a ping right after `up`
// could fail for a reason that is no fault.
func (l *Lab) WaitRoutes(ctx context.Context) error {
	if l.opts.SkipAgents {
		return errors.New("this lab runs no agents (SkipAgents)")
	}
	for {
		last := l.checkRoutes(ctx)
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("workload routes not in every kernel: %w", last)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (l *Lab) checkRoutes(ctx context.Context) error {
	var errs []error
	workloads := l.Workloads()
	for _, h := range l.Hosts() {
		learned, err := learnedPrefixes(ctx, h.Netns)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, w := range workloads {
			if w.Host == h.Name || !w.Wired {
				continue
			}
			for _, s := range w.IPs {
				a, err := netip.ParseAddr(s)
				if err == nil && !coveredBy(a, learned) {
					errs = append(errs, fmt.Errorf("%s has no BGP route to %s (%s on %s)", h.Name, a, w.Name, w.Host))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// learnedPrefixes lists the destinations of the namespace's protocol 202
// routes, both families.
func learnedPrefixes(ctx context.Context, netns string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, fam := range []string{"-4", "-6"} {
		text, err := run(ctx, "ip", "-n", netns, "-o", fam, "route", "show", "proto", "202")
		if err != nil {
			return nil, fmt.Errorf("routes of %s: %w", netns, err)
		}
		for _, line := range strings.Split(text, "\n") {
			if f := strings.Fields(line); len(f) > 0 {
				if p, ok := parseRouteDst(f[0]); ok {
					out = append(out, p)
				}
			}
		}
	}
	return out, nil
}

// parseRouteDst reads the destination of an `ip route` line: a prefix, or
// a bare address for a host route.
func parseRouteDst(s string) (netip.Prefix, bool) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, true
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), true
	}
	return netip.Prefix{}, false
}

func coveredBy(a netip.Addr, prefixes []netip.Prefix) bool {
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
