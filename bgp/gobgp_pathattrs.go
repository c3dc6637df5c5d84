package bgp

import (
	"net/netip"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// pathPrefix is the unicast prefix of a GoBGP path; ok is false for other
// NLRI types.
func pathPrefix(p *apiutil.Path) (netip.Prefix, bool) {
	if p.Family != gobgp.RF_IPv4_UC && p.Family != gobgp.RF_IPv6_UC {
		return netip.Prefix{}, false
	}
	n, ok := p.Nlri.(*gobgp.IPAddrPrefix)
	if !ok {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(n.Prefix.Addr().Unmap(), n.Prefix.Bits()), true
}

// pathAttrs is what the RIB listing reads from a path's attributes.
type pathAttrs struct {
	nextHop     netip.Addr
	asPath      []uint32
	asPathLen   int // as best-path selection counts it (a set counts one)
	localPref   uint32
	origin      uint8
	med         uint32
	communities []uint32
}

func readAttrs(p *apiutil.Path) pathAttrs {
	at := pathAttrs{localPref: 100}
	at.nextHop, _ = nextHopOf(p.Attrs)
	for _, a := range p.Attrs {
		switch v := a.(type) {
		case *gobgp.PathAttributeAsPath:
			for _, seg := range v.Value {
				at.asPath = append(at.asPath, seg.GetAS()...)
				if seg.GetType() == gobgp.BGP_ASPATH_ATTR_TYPE_SET {
					at.asPathLen++
				} else {
					at.asPathLen += len(seg.GetAS())
				}
			}
		case *gobgp.PathAttributeLocalPref:
			at.localPref = v.Value
		case *gobgp.PathAttributeOrigin:
			at.origin = v.Value
		case *gobgp.PathAttributeMultiExitDisc:
			at.med = v.Value
		case *gobgp.PathAttributeCommunities:
			at.communities = v.Value
		}
	}
	return at
}
