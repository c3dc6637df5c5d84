package agent

import (
	"maps"
	"net/netip"
	"reflect"
	"sort"
	"testing"

	"github.com/calyx-net/calyx/bgp"
	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
	"github.com/calyx-net/calyx/routes"
)

var (
	pfx  = netip.MustParsePrefix
	addr = netip.MustParseAddr
)

func wep(name, node, iface string, ips ...string) *datastore.WorkloadEndpoint {
	w := &datastore.WorkloadEndpoint{Metadata: datastore.Metadata{Name: name}}
	w.Spec = datastore.WorkloadEndpointSpec{Node: node, InterfaceName: iface, IPNetworks: ips}
	return w
}

func block(cidr, affinity string, allocs ...ipam.Allocation) *ipam.Block {
	return &ipam.Block{Prefix: pfx(cidr), Affinity: affinity, Allocations: allocs}
}

func testBlocks() map[netip.Prefix]*ipam.Block {
	return map[netip.Prefix]*ipam.Block{
		pfx("10.244.1.0/26"): block("10.244.1.0/26", "h1",
			ipam.Allocation{IP: addr("10.244.1.1"), Node: "h1"},
			ipam.Allocation{IP: addr("10.244.1.2"), Node: "h2", Borrowed: true}),
		pfx("10.244.2.0/26"): block("10.244.2.0/26", "h2",
			ipam.Allocation{IP: addr("10.244.2.9"), Node: "h1", Borrowed: true}),
		pfx("fd00::/122"): block("fd00::/122", "h1"),
	}
}

func TestDesiredLocalRoutes(t *testing.T) {
	local := map[string]*datastore.WorkloadEndpoint{
		"a": wep("a", "h1", "cxaaaaaaaaaaa", "10.244.1.1/32", "fd00::1/128"),
		"b": wep("b", "h1", "cxbbbbbbbbbbb", "10.244.2.9/32"), // borrowed from h2's block
	}
	got := desiredLocalRoutes("h1", local, testBlocks())
	want := map[netip.Prefix]routes.Route{
		pfx("10.244.1.1/32"): {Dst: pfx("10.244.1.1/32"), Type: routes.RouteDevice, LinkName: "cxaaaaaaaaaaa"},
		pfx("fd00::1/128"):   {Dst: pfx("fd00::1/128"), Type: routes.RouteDevice, LinkName: "cxaaaaaaaaaaa"},
		pfx("10.244.2.9/32"): {Dst: pfx("10.244.2.9/32"), Type: routes.RouteDevice, LinkName: "cxbbbbbbbbbbb"},
		pfx("10.244.1.0/26"): {Dst: pfx("10.244.1.0/26"), Type: routes.RouteBlackhole},
		pfx("fd00::/122"):    {Dst: pfx("fd00::/122"), Type: routes.RouteBlackhole},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d routes, want %d: %v", len(got), len(want), got)
	}
	for _, r := range got {
		if !reflect.DeepEqual(r, want[r.Dst]) {
			t.Errorf("route %v, want %v", r, want[r.Dst])
		}
	}
}

func TestDesiredAdvertisements(t *testing.T) {
	nh4, nh6 := addr("198.18.0.1"), addr("fd18::1")
	local := map[string]*datastore.WorkloadEndpoint{"a": wep("a", "h1", "cxa", "10.244.1.1/32")}
	// Own blocks, plus the address borrowed from h2's block as a /32; not
	// the address h2 borrowed from ours (h2 announces that).
	got := desiredAdvertisements("h1", nh4, nh6, local, testBlocks(), true, nil, nil)
	want := []bgp.Advertisement{
		{Prefix: pfx("10.244.1.0/26"), NextHop: nh4},
		{Prefix: pfx("10.244.2.9/32"), NextHop: nh4},
		{Prefix: pfx("fd00::/122"), NextHop: nh6},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("advertisements\n got %v\nwant %v", got, want)
	}
	// Without an IPv6 next hop, IPv6 prefixes are not announced.
	if got := desiredAdvertisements("h1", nh4, netip.Addr{}, local, testBlocks(), true, nil, nil); len(got) != 2 {
		t.Errorf("without IPv6 next hop: %v", got)
	}
	// advertiseBlocks off: each local address instead of the blocks.
	got = desiredAdvertisements("h1", nh4, nh6, local, testBlocks(), false, nil, nil)
	want = []bgp.Advertisement{{Prefix: pfx("10.244.1.1/32"), NextHop: nh4}, {Prefix: pfx("10.244.2.9/32"), NextHop: nh4}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("advertiseBlocks=false\n got %v\nwant %v", got, want)
	}
	// Service ranges from every node, and the communities on everything.
	cs := []uint32{64512<<16 | 100}
	got = desiredAdvertisements("h1", nh4, nh6, local, testBlocks(), false, []netip.Prefix{pfx("10.96.0.0/12"), pfx("fd00:96::/112")}, cs)
	want = []bgp.Advertisement{
		{Prefix: pfx("10.96.0.0/12"), NextHop: nh4, Communities: cs},
		{Prefix: pfx("10.244.1.1/32"), NextHop: nh4, Communities: cs},
		{Prefix: pfx("10.244.2.9/32"), NextHop: nh4, Communities: cs},
		{Prefix: pfx("fd00:96::/112"), NextHop: nh6, Communities: cs},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("services and communities\n got %v\nwant %v", got, want)
	}
}

func TestLearnedRoutesNeverOverrideOwn(t *testing.T) {
	own := []routes.Route{
		{Dst: pfx("10.244.1.0/26"), Type: routes.RouteBlackhole},
		{Dst: pfx("10.244.1.1/32"), Type: routes.RouteDevice, LinkName: "cxa"},
	}
	learned := map[netip.Prefix][]netip.Addr{
		pfx("0.0.0.0/0"):     {addr("198.18.0.253")},                   // ToR default: covering, installed
		pfx("10.244.1.0/26"): {addr("198.18.0.2")},                     // our own block: skipped
		pfx("10.244.1.1/32"): {addr("198.18.0.2")},                     // our own workload: skipped
		pfx("10.244.1.2/32"): {addr("198.18.0.2")},                     // borrowed by h2 from our block: installed
		pfx("10.244.3.0/26"): {addr("198.18.0.3"), addr("198.18.0.4")}, // ECMP
		pfx("10.244.4.0/26"): {addr("198.18.0.1")},                     // next hop is ourselves: skipped
		pfx("10.244.5.0/26"): {},                                       // withdrawn
	}
	got := learnedRoutes(maps.All(learned), own, []netip.Addr{addr("198.18.0.1")})
	// The table keys routes by destination: the order is not part of it.
	sort.Slice(got, func(i, j int) bool { return prefixLess(got[i].Dst, got[j].Dst) })
	var dsts []netip.Prefix
	for _, r := range got {
		dsts = append(dsts, r.Dst)
		if r.Type != routes.RouteGateway {
			t.Errorf("%v is not a gateway route", r)
		}
	}
	want := []netip.Prefix{pfx("0.0.0.0/0"), pfx("10.244.1.2/32"), pfx("10.244.3.0/26")}
	if !reflect.DeepEqual(dsts, want) {
		t.Errorf("installed %v, want %v", dsts, want)
	}
	if len(got[2].NextHops) != 2 {
		t.Errorf("ECMP next hops lost: %v", got[2])
	}
}
