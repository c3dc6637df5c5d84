package routes

import (
	"cmp"
	"encoding/binary"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/calyx-net/calyx/internal/pfxmap"
)

// nextHop is one gateway of a kernel route; linkIndex 0 means "any".
type nextHop struct {
	gw        netip.Addr
	linkIndex int
}

// kroute is the comparable kernel shape of one route, built either from a
// desired Route (after resolving its interface) or from a route read from
// the kernel. Only the fields that decide forwarding are compared. The
// fields are ordered to pack: a table's kernel view holds one per route.
type kroute struct {
	src       netip.Addr
	hops      []nextHop // sorted
	linkIndex int       // output interface of a device route
	priority  int       // kernel metric; only used to delete exactly that route
	typ       uint8     // unix.RTN_UNICAST or unix.RTN_BLACKHOLE
	scope     netlink.Scope
	onlink    bool
}

// newKernelView makes an empty kernel view, packed as the desired set is.
func newKernelView() *pfxmap.Map[kroute] { return pfxmap.New(kernelKey, nil) }

// kernelKey encodes a kernel route for sharing; a kroute's hops are
// replaced, never modified, so none is copied.
func kernelKey(dst []byte, k kroute) []byte {
	onlink := byte(0)
	if k.onlink {
		onlink = 1
	}
	dst = append(dst, k.typ, byte(k.scope), onlink)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(k.linkIndex))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(k.priority))
	dst = pfxmap.AppendAddr(dst, k.src)
	for _, h := range k.hops {
		dst = pfxmap.AppendAddr(dst, h.gw)
		dst = binary.LittleEndian.AppendUint32(dst, uint32(h.linkIndex))
	}
	return dst
}

// wantKernel builds the kernel shape of a valid desired route whose
// interface (if any) resolved to linkIndex.
func wantKernel(r Route, linkIndex int) kroute {
	k := kroute{typ: unix.RTN_UNICAST, scope: netlink.SCOPE_UNIVERSE, src: r.Src}
	switch r.Type {
	case RouteDevice:
		k.scope = netlink.SCOPE_LINK
		k.linkIndex = linkIndex
	case RouteBlackhole:
		k.typ = unix.RTN_BLACKHOLE
	case RouteGateway:
		k.onlink = r.LinkName != ""
		k.hops = make([]nextHop, len(r.NextHops))
		for i, gw := range r.NextHops {
			k.hops[i] = nextHop{gw: gw, linkIndex: linkIndex}
		}
		sortHops(k.hops)
	}
	return k
}

// haveKernel converts a route read from the kernel.
func haveKernel(nr *netlink.Route) (netip.Prefix, kroute, bool) {
	dst, ok := prefixFromIPNet(nr.Dst, nr.Family)
	if !ok {
		return netip.Prefix{}, kroute{}, false
	}
	k := kroute{
		typ:       uint8(nr.Type),
		scope:     nr.Scope,
		linkIndex: nr.LinkIndex,
		priority:  nr.Priority,
	}
	k.src = addrFromIP(nr.Src, nr.Family)
	switch {
	case len(nr.MultiPath) > 0:
		k.linkIndex = 0
		for _, nh := range nr.MultiPath {
			gw := addrFromIP(nh.Gw, nr.Family)
			k.hops = append(k.hops, nextHop{gw: gw, linkIndex: nh.LinkIndex})
		}
		sortHops(k.hops)
	case nr.Gw != nil:
		gw := addrFromIP(nr.Gw, nr.Family)
		k.hops = []nextHop{{gw: gw, linkIndex: nr.LinkIndex}}
		k.linkIndex = 0
	}
	return dst, k, true
}

// sameForwarding reports whether the kernel route have forwards as want
// does. IPv6 has no route scopes and puts blackholes on lo, so scope and
// the blackhole's interface are not compared there.
func sameForwarding(want, have kroute, is4 bool) bool {
	if want.typ != have.typ || want.src != have.src {
		return false
	}
	if is4 && want.scope != have.scope {
		return false
	}
	if want.typ == unix.RTN_BLACKHOLE {
		return true
	}
	if len(want.hops) != len(have.hops) {
		return false
	}
	if len(want.hops) == 0 {
		return want.linkIndex == have.linkIndex
	}
	for i := range want.hops {
		if want.hops[i].gw != have.hops[i].gw {
			return false
		}
		if want.hops[i].linkIndex != 0 && want.hops[i].linkIndex != have.hops[i].linkIndex {
			return false
		}
	}
	return true
}

// usesLink reports whether the route goes out through ifindex.
func (k kroute) usesLink(ifindex int) bool {
	if k.typ == unix.RTN_BLACKHOLE {
		return false
	}
	if k.linkIndex == ifindex {
		return true
	}
	for _, h := range k.hops {
		if h.linkIndex == ifindex {
			return true
		}
	}
	return false
}

// toNetlink builds the netlink library's request for writing k at dst (the
// table writes through routeWriter; this is the reference for benchmarks).
func toNetlink(dst netip.Prefix, k kroute, table, protocol int) *netlink.Route {
	nr := &netlink.Route{
		Dst:      ipNetFromPrefix(dst),
		Table:    table,
		Protocol: netlink.RouteProtocol(protocol),
		Type:     int(k.typ),
		Scope:    k.scope,
		Src:      ipFromAddr(k.src),
	}
	var flags int
	if k.onlink {
		flags = int(netlink.FLAG_ONLINK)
	}
	switch {
	case len(k.hops) == 1:
		nr.Gw = ipFromAddr(k.hops[0].gw)
		nr.LinkIndex = k.hops[0].linkIndex
		nr.Flags = flags
	case len(k.hops) > 1:
		for _, h := range k.hops {
			nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{
				LinkIndex: h.linkIndex,
				Gw:        ipFromAddr(h.gw),
				Flags:     flags,
			})
		}
	default:
		nr.LinkIndex = k.linkIndex
	}
	return nr
}

func sortHops(h []nextHop) {
	slices.SortFunc(h, func(a, b nextHop) int {
		if c := a.gw.Compare(b.gw); c != 0 {
			return c
		}
		return cmp.Compare(a.linkIndex, b.linkIndex)
	})
}

func prefixFromIPNet(n *net.IPNet, family int) (netip.Prefix, bool) {
	if n == nil {
		switch family {
		case unix.AF_INET:
			return netip.PrefixFrom(netip.IPv4Unspecified(), 0), true
		case unix.AF_INET6:
			return netip.PrefixFrom(netip.IPv6Unspecified(), 0), true
		}
		return netip.Prefix{}, false
	}
	a := addrFromIP(n.IP, family)
	if !a.IsValid() {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(a, ones), true
}

// addrFromIP converts a kernel address; only an IPv4 route's addresses are
// unmapped, so an IPv6 route to ::ffff:0:0/96 stays IPv6.
func addrFromIP(ip net.IP, family int) netip.Addr {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}
	}
	if family == unix.AF_INET {
		return a.Unmap()
	}
	return a
}

func ipFromAddr(a netip.Addr) net.IP {
	if !a.IsValid() {
		return nil
	}
	return a.AsSlice()
}

func ipNetFromPrefix(p netip.Prefix) *net.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)}
}
