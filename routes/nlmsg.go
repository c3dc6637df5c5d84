package routes

import (
	"encoding/binary"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Encoding and decoding of rtnetlink route messages for the table's own
// shape of a route (kroute), without going through netlink.Route: a
// 100k-route transfer makes 100k requests and hears 100k events, and the
// generic path allocates a dozen objects for each.

var ne = binary.NativeEndian

const (
	nlmsgHdrLen = unix.SizeofNlMsghdr // 16
	rtmsgLen    = unix.SizeofRtMsg    // 12
	rtattrLen   = unix.SizeofRtAttr   // 4
	rtnhLen     = unix.SizeofRtNexthop
)

func nlAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// appendAttr appends one rtattr carrying data.
func appendAttr(b []byte, typ uint16, data []byte) []byte {
	l := rtattrLen + len(data)
	b = ne.AppendUint16(b, uint16(l))
	b = ne.AppendUint16(b, typ)
	b = append(b, data...)
	for range nlAlign(l) - l {
		b = append(b, 0)
	}
	return b
}

func appendAttrU32(b []byte, typ uint16, v uint32) []byte {
	b = ne.AppendUint16(b, rtattrLen+4)
	b = ne.AppendUint16(b, typ)
	return ne.AppendUint32(b, v)
}

// appendAttrAddr appends an address attribute in the family's length.
func appendAttrAddr(b []byte, typ uint16, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return appendAttr(b, typ, v[:])
	}
	v := a.As16()
	return appendAttr(b, typ, v[:])
}

// appendRouteMsg appends one complete request: RTM_NEWROUTE writing k at
// dst (add or replace), or RTM_DELROUTE deleting exactly our route at dst
// as the kernel reported it (k then is the kernel's view: type and metric
// decide which route goes; any scope).
func appendRouteMsg(b []byte, op WriteOp, seq uint32, dst netip.Prefix, k kroute, table, protocol int) []byte {
	start := len(b)
	typ, flags := uint16(unix.RTM_NEWROUTE), uint16(unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE)
	switch op {
	case OpAdd:
		flags |= unix.NLM_F_EXCL
	case OpReplace:
		flags |= unix.NLM_F_REPLACE
	case OpDelete:
		typ, flags = unix.RTM_DELROUTE, unix.NLM_F_REQUEST|unix.NLM_F_ACK
	}
	b = ne.AppendUint32(b, 0) // length, set below
	b = ne.AppendUint16(b, typ)
	b = ne.AppendUint16(b, flags)
	b = ne.AppendUint32(b, seq)
	b = ne.AppendUint32(b, 0) // port: the kernel

	family := byte(unix.AF_INET6)
	if dst.Addr().Is4() {
		family = unix.AF_INET
	}
	rtTable := byte(unix.RT_TABLE_UNSPEC)
	if table < 256 {
		rtTable = byte(table)
	}
	scope := byte(k.scope)
	var rtFlags uint32
	if op == OpDelete {
		scope = unix.RT_SCOPE_NOWHERE
	} else if k.onlink && len(k.hops) == 1 {
		rtFlags = unix.RTNH_F_ONLINK
	}
	b = append(b, family, byte(dst.Bits()), 0, 0, rtTable, byte(protocol), scope, byte(k.typ))
	b = ne.AppendUint32(b, rtFlags)

	b = appendAttrAddr(b, unix.RTA_DST, dst.Addr())
	b = appendAttrU32(b, unix.RTA_TABLE, uint32(table))
	if op == OpDelete {
		if k.priority > 0 {
			b = appendAttrU32(b, unix.RTA_PRIORITY, uint32(k.priority))
		}
	} else {
		if k.src.IsValid() {
			b = appendAttrAddr(b, unix.RTA_PREFSRC, k.src)
		}
		switch {
		case len(k.hops) == 1:
			b = appendAttrAddr(b, unix.RTA_GATEWAY, k.hops[0].gw)
			if k.hops[0].linkIndex > 0 {
				b = appendAttrU32(b, unix.RTA_OIF, uint32(k.hops[0].linkIndex))
			}
		case len(k.hops) > 1:
			b = appendMultipath(b, k)
		case k.linkIndex > 0:
			b = appendAttrU32(b, unix.RTA_OIF, uint32(k.linkIndex))
		}
	}
	ne.PutUint32(b[start:], uint32(len(b)-start))
	return b
}

// appendMultipath appends RTA_MULTIPATH: one rtnexthop per hop, each
// followed by its gateway.
func appendMultipath(b []byte, k kroute) []byte {
	at := len(b)
	b = ne.AppendUint16(b, 0) // length, set below
	b = ne.AppendUint16(b, unix.RTA_MULTIPATH)
	var nhFlags byte
	if k.onlink {
		nhFlags = unix.RTNH_F_ONLINK
	}
	for _, h := range k.hops {
		nh := len(b)
		b = ne.AppendUint16(b, 0)
		b = append(b, nhFlags, 0)
		b = ne.AppendUint32(b, uint32(h.linkIndex))
		b = appendAttrAddr(b, unix.RTA_GATEWAY, h.gw)
		ne.PutUint16(b[nh:], uint16(len(b)-nh))
	}
	ne.PutUint16(b[at:], uint16(len(b)-at))
	return b
}

// routeHeader is the part of a route message that decides whether the
// table cares about it, read before anything else is decoded.
type routeHeader struct {
	family   int
	table    int
	protocol int
}

// parseRouteHeader reads the rtmsg and the RTA_TABLE attribute (which
// overrides rtm_table for tables above 255).
func parseRouteHeader(m []byte) (routeHeader, bool) {
	if len(m) < rtmsgLen {
		return routeHeader{}, false
	}
	h := routeHeader{family: int(m[0]), table: int(m[4]), protocol: int(m[5])}
	if h.table == unix.RT_TABLE_UNSPEC || h.table == unix.RT_TABLE_COMPAT {
		for typ, data := range routeAttrs(m[rtmsgLen:]) {
			if typ == unix.RTA_TABLE && len(data) >= 4 {
				h.table = int(ne.Uint32(data))
			}
		}
	}
	return h, true
}

// routeAttrs iterates over a run of rtattrs.
func routeAttrs(b []byte) func(yield func(uint16, []byte) bool) {
	return func(yield func(uint16, []byte) bool) {
		for len(b) >= rtattrLen {
			l := int(ne.Uint16(b))
			if l < rtattrLen || l > len(b) {
				return
			}
			if !yield(ne.Uint16(b[2:])&^unix.NLA_F_NESTED, b[rtattrLen:l]) {
				return
			}
			b = b[min(nlAlign(l), len(b)):]
		}
	}
}

// parseRouteMsg decodes the body of an RTM_NEWROUTE/RTM_DELROUTE message
// (after the nlmsghdr) into the kernel shape, as haveKernel does for a
// netlink.Route.
func parseRouteMsg(m []byte) (netip.Prefix, kroute, bool) {
	if len(m) < rtmsgLen {
		return netip.Prefix{}, kroute{}, false
	}
	family, dstLen := int(m[0]), int(m[1])
	k := kroute{typ: m[7], scope: netlink.Scope(m[6])}
	dst := netip.Addr{}
	var gw netip.Addr
	oif := 0
	var multipath []byte
	for typ, data := range routeAttrs(m[rtmsgLen:]) {
		switch typ {
		case unix.RTA_DST:
			dst = addrFromBytes(data, family)
		case unix.RTA_GATEWAY:
			gw = addrFromBytes(data, family)
		case unix.RTA_OIF:
			if len(data) >= 4 {
				oif = int(ne.Uint32(data))
			}
		case unix.RTA_PRIORITY:
			if len(data) >= 4 {
				k.priority = int(ne.Uint32(data))
			}
		case unix.RTA_PREFSRC:
			k.src = addrFromBytes(data, family)
		case unix.RTA_MULTIPATH:
			multipath = data
		}
	}
	if !dst.IsValid() {
		switch family {
		case unix.AF_INET:
			dst = netip.IPv4Unspecified()
		case unix.AF_INET6:
			dst = netip.IPv6Unspecified()
		default:
			return netip.Prefix{}, kroute{}, false
		}
	}
	p, err := dst.Prefix(dstLen)
	if err != nil {
		return netip.Prefix{}, kroute{}, false
	}
	switch {
	case multipath != nil:
		for len(multipath) >= rtnhLen {
			l := int(ne.Uint16(multipath))
			if l < rtnhLen || l > len(multipath) {
				break
			}
			h := nextHop{linkIndex: int(int32(ne.Uint32(multipath[4:])))}
			for typ, data := range routeAttrs(multipath[rtnhLen:l]) {
				if typ == unix.RTA_GATEWAY {
					h.gw = addrFromBytes(data, family)
				}
			}
			k.hops = append(k.hops, h)
			multipath = multipath[min(nlAlign(l), len(multipath)):]
		}
		sortHops(k.hops)
	case gw.IsValid():
		k.hops = []nextHop{{gw: gw, linkIndex: oif}}
	default:
		k.linkIndex = oif
	}
	return p, k, true
}

// addrFromBytes reads an address attribute; as addrFromIP, an IPv4
// route's addresses are plain IPv4.
func addrFromBytes(b []byte, family int) netip.Addr {
	switch {
	case len(b) == 4:
		return netip.AddrFrom4([4]byte(b))
	case len(b) == 16:
		a := netip.AddrFrom16([16]byte(b))
		if family == unix.AF_INET {
			return a.Unmap()
		}
		return a
	}
	return netip.Addr{}
}
