package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// Problem kinds reported by Check.
const (
	// ProblemLeakedAllocation: a handle whose WorkloadEndpoint does not
	// exist (gc releases it once older than the grace period).
	ProblemLeakedAllocation = "allocation-without-endpoint"
	// ProblemUnownedAllocation: a handle with no endpoint attribute, so
	// nothing tells whether it is in use (release it by hand).
	ProblemUnownedAllocation = "allocation-without-owner"
	// ProblemEndpointWithoutAllocation: an endpoint address inside a pool
	// that no handle holds for it.
	ProblemEndpointWithoutAllocation = "endpoint-without-allocation"
	// ProblemSharedAddress: two endpoints carry the same address.
	ProblemSharedAddress = "address-shared-by-endpoints"
	// ProblemUnknownNode: a block claimed by a node with no Node resource.
	ProblemUnknownNode = "block-of-unknown-node"
	// ProblemAllocationWithoutHandle: a block holds an address for a
	// handle record that does not exist.
	ProblemAllocationWithoutHandle = "allocation-without-handle"
	// ProblemHandleAddressNotAllocated: a handle lists an address its
	// block does not hold for it.
	ProblemHandleAddressNotAllocated = "handle-address-not-allocated"
	// ProblemAffinityWithoutBlock: an affinity key with no block record.
	ProblemAffinityWithoutBlock = "affinity-without-block"
	// ProblemBlockWithoutAffinity: a block whose affinity key is missing.
	ProblemBlockWithoutAffinity = "block-without-affinity-key"
	// ProblemBlockOutsidePools: a block no pool holds (its pool was
	// deleted); addresses in it still work but no new ones are given.
	ProblemBlockOutsidePools = "block-outside-pools"
	// ProblemUnreadable: a record that does not decode.
	ProblemUnreadable = "unreadable-record"
)

// Problem is one inconsistency found by Check.
type Problem struct {
	Kind string `json:"kind"`
	// Subject is what is wrong: a handle, a block CIDR, an endpoint or a key.
	Subject   string       `json:"subject"`
	Node      string       `json:"node,omitempty"`
	Addresses []netip.Addr `json:"addresses,omitempty"`
	Detail    string       `json:"detail"`
	// GCRepairs says whether `calyxctl ipam gc` repairs it (after the
	// grace period for those that depend on age).
	GCRepairs bool `json:"gcRepairs"`
}

// Check reads all IPAM records, pools, nodes and endpoints at one revision
// and lists every inconsistency, most important first.
func (i *IPAM) Check(ctx context.Context) ([]Problem, error) {
	st, err := readState(ctx, i.etcd)
	if err != nil {
		return nil, err
	}
	return st.check(i.now()), nil
}

func (st *clusterState) check(now time.Time) []Problem {
	var out []Problem
	add := func(p Problem) { out = append(out, p) }

	// Handles against endpoints and blocks.
	for _, id := range sortedKeys(st.handles) {
		h := st.handles[id]
		age := now.Sub(h.Created).Round(time.Second)
		switch {
		case h.Endpoint == "":
			add(Problem{Kind: ProblemUnownedAllocation, Subject: id, Node: h.Node, Addresses: h.IPs(),
				Detail: fmt.Sprintf("handle names no endpoint, so gc cannot tell whether it is in use (age %s); free it with calyxctl ipam release --ip", age)})
		case st.endpoints[h.Endpoint] == nil:
			add(Problem{Kind: ProblemLeakedAllocation, Subject: id, Node: h.Node, Addresses: h.IPs(), GCRepairs: true,
				Detail: fmt.Sprintf("endpoint %q does not exist (allocated %s ago)", h.Endpoint, age)})
		}
		for _, a := range h.Addresses {
			b := st.blocks[a.Block]
			if b == nil {
				add(Problem{Kind: ProblemHandleAddressNotAllocated, Subject: id, Node: h.Node, Addresses: []netip.Addr{a.IP}, GCRepairs: true,
					Detail: fmt.Sprintf("block %s does not exist", a.Block)})
				continue
			}
			if al, ok := b.Lookup(a.IP); !ok || al.Handle != id {
				holder := "nobody"
				if ok {
					holder = fmt.Sprintf("handle %q", al.Handle)
				}
				add(Problem{Kind: ProblemHandleAddressNotAllocated, Subject: id, Node: h.Node, Addresses: []netip.Addr{a.IP}, GCRepairs: true,
					Detail: fmt.Sprintf("block %s gives it to %s", a.Block, holder)})
			}
		}
	}

	// Blocks against handles, nodes, affinities and pools.
	for _, cidr := range sortedPrefixes(st.blocks) {
		b := st.blocks[cidr]
		for _, a := range b.Allocations {
			if st.handles[a.Handle] == nil {
				fix, repairs := "gc frees it", true
				if a.Endpoint != "" && st.endpoints[a.Endpoint] != nil {
					fix = fmt.Sprintf("gc rebuilds the record (endpoint %q exists)", a.Endpoint)
					if _, ok := st.rebuiltHandle(a); a.Handle == "" && !ok {
						fix, repairs = fmt.Sprintf("endpoint %q has it but names no container and interface to rebuild a handle from: gc keeps it; calyxctl ipam release --ip frees it", a.Endpoint), false
					}
				}
				add(Problem{Kind: ProblemAllocationWithoutHandle, Subject: a.Handle, Node: a.Node, Addresses: []netip.Addr{a.IP}, GCRepairs: repairs,
					Detail: fmt.Sprintf("block %s holds it but the handle record is missing; %s", cidr, fix)})
			}
		}
		if b.Affinity != "" {
			if !st.nodes[b.Affinity] {
				add(Problem{Kind: ProblemUnknownNode, Subject: cidr.String(), Node: b.Affinity, GCRepairs: b.Empty(),
					Detail: fmt.Sprintf("node %q is not registered; block has %d addresses in use", b.Affinity, b.Used())})
			}
			if _, ok := st.affinities[b.Affinity][cidr]; !ok {
				add(Problem{Kind: ProblemBlockWithoutAffinity, Subject: cidr.String(), Node: b.Affinity, GCRepairs: true,
					Detail: "the affinity key is missing"})
			}
		}
		if p := st.poolOf(cidr.Addr()); p == nil || p.cidr.Bits() > cidr.Bits() {
			add(Problem{Kind: ProblemBlockOutsidePools, Subject: cidr.String(), Node: b.Affinity,
				Detail: fmt.Sprintf("no pool holds the block; %d addresses still in use", b.Used())})
		}
	}
	for _, node := range sortedKeys(st.affinities) {
		for _, cidr := range sortedPrefixes(st.affinities[node]) {
			if b := st.blocks[cidr]; b == nil || b.Affinity != node {
				add(Problem{Kind: ProblemAffinityWithoutBlock, Subject: cidr.String(), Node: node, GCRepairs: true,
					Detail: "the affinity key names a block the node does not hold"})
			}
		}
	}

	// Endpoints against allocations.
	users := map[netip.Addr][]string{}
	for _, name := range sortedKeys(st.endpoints) {
		w := st.endpoints[name]
		for _, n := range w.Spec.IPNetworks {
			pfx, err := netip.ParsePrefix(n)
			if err != nil {
				continue
			}
			ip := pfx.Addr()
			users[ip] = append(users[ip], name)
			b := st.blockHolding(ip)
			if b == nil && st.poolOf(ip) == nil {
				continue // not an IPAM address
			}
			var al Allocation
			ok := false
			if b != nil {
				al, ok = b.Lookup(ip)
			}
			h := st.handles[al.Handle]
			switch {
			case !ok:
				add(Problem{Kind: ProblemEndpointWithoutAllocation, Subject: name, Node: w.Spec.Node, Addresses: []netip.Addr{ip},
					Detail: "the address is not allocated"})
			case h != nil && h.Endpoint != "" && h.Endpoint != name:
				add(Problem{Kind: ProblemEndpointWithoutAllocation, Subject: name, Node: w.Spec.Node, Addresses: []netip.Addr{ip},
					Detail: fmt.Sprintf("the address is allocated to endpoint %q (handle %q)", h.Endpoint, al.Handle)})
			}
		}
	}
	for _, ip := range sortedAddrs(users) {
		if names := users[ip]; len(names) > 1 {
			add(Problem{Kind: ProblemSharedAddress, Subject: strings.Join(names, ","), Addresses: []netip.Addr{ip},
				Detail: fmt.Sprintf("%d endpoints carry the address", len(names))})
		}
	}
	return append(out, st.unreadable...)
}

func sortedPrefixes[V any](m map[netip.Prefix]V) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return out
}

func sortedAddrs[V any](m map[netip.Addr]V) []netip.Addr {
	out := make([]netip.Addr, 0, len(m))
	for a := range m {
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b netip.Addr) int { return a.Compare(b) })
	return out
}
