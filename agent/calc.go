package agent

import (
	"iter"
	"net/netip"
	"slices"
	"sort"

	"github.com/calyx-net/calyx/bgp"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/routes"
)

// The calculation from the cluster state to each part's desired state.
// Pure functions: the loop calls them under its lock and hands the results
// to the parts.

// endpointPrefixes parses a workload endpoint's addresses, skipping any that
// do not parse (validation keeps them out of etcd).
func endpointPrefixes(w *datastore.WorkloadEndpoint) []netip.Prefix {
	var out []netip.Prefix
	for _, n := range w.Spec.IPNetworks {
		if p, err := netip.ParsePrefix(n); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// ownBlocks are the blocks whose affinity is this node.
func ownBlocks(node string, blocks map[netip.Prefix]*ipam.Block) []netip.Prefix {
	var out []netip.Prefix
	for p, b := range blocks {
		if b.Affinity == node {
			out = append(out, p)
		}
	}
	sortPrefixes(out)
	return out
}

// desiredLocalRoutes: a device route to each local workload address, and a
// blackhole for each block this node owns, so that traffic for a free
// address in it is dropped here instead of bouncing off the default route.
func desiredLocalRoutes(node string, local map[string]*datastore.WorkloadEndpoint, blocks map[netip.Prefix]*ipam.Block) []routes.Route {
	var out []routes.Route
	seen := map[netip.Prefix]bool{}
	for _, w := range local {
		for _, p := range endpointPrefixes(w) {
			if seen[p] {
				continue
			}
			seen[p] = true
			out = append(out, routes.Route{Dst: p, Type: routes.RouteDevice, LinkName: w.Spec.InterfaceName})
		}
	}
	for _, p := range ownBlocks(node, blocks) {
		if !seen[p] {
			out = append(out, routes.Route{Dst: p, Type: routes.RouteBlackhole})
		}
	}
	return out
}

// desiredAdvertisements: the service ranges, each owned block as one
// prefix (or, with advertiseBlocks off, each local workload address), plus
// a /32 (/128) for
// every address this node borrowed from another node's block. IPv6
// prefixes are announced only when the node has an IPv6 next hop.
func desiredAdvertisements(node string, nh4, nh6 netip.Addr, local map[string]*datastore.WorkloadEndpoint, blocks map[netip.Prefix]*ipam.Block, advertiseBlocks bool,
	services []netip.Prefix, communities []uint32) []bgp.Advertisement {
	want := map[netip.Prefix]bool{}
	for _, p := range services {
		want[p] = true // every node announces them: ECMP at the ToR
	}
	if advertiseBlocks {
		for _, p := range ownBlocks(node, blocks) {
			want[p] = true
		}
	} else {
		for _, w := range local {
			for _, p := range endpointPrefixes(w) {
				want[p] = true
			}
		}
	}
	for _, b := range blocks {
		if b.Affinity == node {
			continue
		}
		for _, ip := range b.BorrowedBy(node) {
			want[netip.PrefixFrom(ip, ip.BitLen())] = true
		}
	}
	var out []bgp.Advertisement
	for p := range want {
		nh := nh4
		if p.Addr().Is6() {
			nh = nh6
		}
		if !nh.IsValid() {
			continue
		}
		out = append(out, bgp.Advertisement{Prefix: p, NextHop: nh, Communities: communities})
	}
	sort.Slice(out, func(i, j int) bool { return prefixLess(out[i].Prefix, out[j].Prefix) })
	return out
}

// learnedRoutes turns the BGP best paths into kernel routes. A learned
// prefix that equals one of this node's own routes (a local workload or an
// owned block) is skipped: learned routes never override the node's own.
// Covering routes (a default from the ToR) and more-specific ones inside an
// owned block (an address another node borrowed from it) are installed:
// longest-prefix match keeps each where it belongs. The order is the map's:
// the table keys routes by destination.
func learnedRoutes(learned iter.Seq2[netip.Prefix, []netip.Addr], own []routes.Route, self []netip.Addr) []routes.Route {
	mine := make(map[netip.Prefix]struct{}, len(own))
	for _, r := range own {
		mine[r.Dst] = struct{}{}
	}
	var out []routes.Route
	for p, hops := range learned {
		if r, ok := learnedRoute(p, hops, mine, self); ok {
			out = append(out, r)
		}
	}
	return out
}

// learnedRoute is the kernel route of one learned prefix; ok is false when
// the prefix gets none (one of the node's own, withdrawn, or no usable next
// hop: only ourselves, or of the other family).
func learnedRoute(p netip.Prefix, hops []netip.Addr, mine map[netip.Prefix]struct{}, self []netip.Addr) (routes.Route, bool) {
	if _, own := mine[p]; own || len(hops) == 0 {
		return routes.Route{}, false
	}
	nh := hops
	for i, h := range hops {
		if !slices.Contains(self, h) && h.Is4() == p.Addr().Is4() {
			continue
		}
		// Rare: copy the usable ones, leaving the caller's slice alone.
		nh = slices.Clone(hops[:i])
		for _, h := range hops[i+1:] {
			if !slices.Contains(self, h) && h.Is4() == p.Addr().Is4() {
				nh = append(nh, h)
			}
		}
		break
	}
	if len(nh) == 0 {
		return routes.Route{}, false
	}
	return routes.Route{Dst: p, Type: routes.RouteGateway, NextHops: nh}, true
}

func prefixLess(a, b netip.Prefix) bool {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c < 0
	}
	return a.Bits() < b.Bits()
}

func sortPrefixes(ps []netip.Prefix) {
	sort.Slice(ps, func(i, j int) bool { return prefixLess(ps[i], ps[j]) })
}
