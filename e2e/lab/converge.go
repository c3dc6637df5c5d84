package lab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
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
// routes, both families, read with netlink from inside it (no process per
// poll: a 50-host lab polls 50 namespaces several times a second).
func learnedPrefixes(_ context.Context, ns string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	err := inNamespace(ns, func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
			rs, err := h.RouteListFiltered(fam, &netlink.Route{Protocol: learnedProto}, netlink.RT_FILTER_PROTOCOL)
			if err != nil {
				return err
			}
			for _, r := range rs {
				if r.Dst == nil {
					continue
				}
				if p, ok := netipx(r.Dst); ok {
					out = append(out, p)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("routes of %s: %w", ns, err)
	}
	return out, nil
}

// learnedProto is the protocol of the routes the agents learn over BGP.
const learnedProto = 202

func netipx(n *net.IPNet) (netip.Prefix, bool) {
	a, ok := netip.AddrFromSlice(n.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a.Unmap(), ones), true
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
