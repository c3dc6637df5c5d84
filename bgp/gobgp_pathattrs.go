package bgp

import (
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
)

// pathPrefix is the unicast prefix of a GoBGP path; ok is false for other
// NLRI types and for End-of-RIB markers (no NLRI).
func pathPrefix(p *api.Path) (netip.Prefix, bool) {
	if p.GetNlri() == nil {
		return netip.Prefix{}, false
	}
	if _, ok := familyFromAPI(p.GetFamily()); !ok {
		return netip.Prefix{}, false
	}
	var n api.IPAddressPrefix
	if err := p.Nlri.UnmarshalTo(&n); err != nil {
		return netip.Prefix{}, false
	}
	a, err := netip.ParseAddr(n.Prefix)
	if err != nil {
		return netip.Prefix{}, false
	}
	pfx, err := a.Unmap().Prefix(int(n.PrefixLen))
	if err != nil {
		return netip.Prefix{}, false
	}
	return pfx, true
}

// pathSource is the peer a path came from; invalid for paths this speaker
// originated (GoBGP prints their missing source address as "<nil>").
func pathSource(p *api.Path) netip.Addr {
	a, err := netip.ParseAddr(p.GetNeighborIp())
	if err != nil || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

// pathAttrs is what Calyx reads from a path's attributes.
type pathAttrs struct {
	nextHop      netip.Addr
	originatorID string
	asPath       []uint32
	asPathLen    int // as best-path selection counts it (a set counts one)
	localPref    uint32
	origin       uint32
	med          uint32
}

// readAttrs decodes only the attributes Calyx uses; the rest stay packed.
// With full=false it stops at the next hop and originator ID, which is all
// the learned-route path needs.
func readAttrs(p *api.Path, full bool) pathAttrs {
	at := pathAttrs{localPref: 100}
	for _, a := range p.GetPattrs() {
		switch {
		case a.MessageIs((*api.NextHopAttribute)(nil)):
			var v api.NextHopAttribute
			if a.UnmarshalTo(&v) == nil {
				at.nextHop = parseNextHop(v.NextHop)
			}
		case a.MessageIs((*api.MpReachNLRIAttribute)(nil)):
			var v api.MpReachNLRIAttribute
			if a.UnmarshalTo(&v) == nil && len(v.NextHops) > 0 {
				// The first is the global address; a second would be
				// link-local (RFC 2545), useless off the link.
				at.nextHop = parseNextHop(v.NextHops[0])
			}
		case a.MessageIs((*api.OriginatorIdAttribute)(nil)):
			var v api.OriginatorIdAttribute
			if a.UnmarshalTo(&v) == nil {
				at.originatorID = v.Id
			}
		case !full:
		case a.MessageIs((*api.AsPathAttribute)(nil)):
			var v api.AsPathAttribute
			if a.UnmarshalTo(&v) == nil {
				for _, seg := range v.Segments {
					at.asPath = append(at.asPath, seg.Numbers...)
					switch seg.Type {
					case api.AsSegment_AS_SEQUENCE:
						at.asPathLen += len(seg.Numbers)
					case api.AsSegment_AS_SET:
						at.asPathLen++
					}
				}
			}
		case a.MessageIs((*api.LocalPrefAttribute)(nil)):
			var v api.LocalPrefAttribute
			if a.UnmarshalTo(&v) == nil {
				at.localPref = v.LocalPref
			}
		case a.MessageIs((*api.OriginAttribute)(nil)):
			var v api.OriginAttribute
			if a.UnmarshalTo(&v) == nil {
				at.origin = v.Origin
			}
		case a.MessageIs((*api.MultiExitDiscAttribute)(nil)):
			var v api.MultiExitDiscAttribute
			if a.UnmarshalTo(&v) == nil {
				at.med = v.Med
			}
		}
	}
	return at
}

func parseNextHop(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}
