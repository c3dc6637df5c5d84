package routes

import (
	"errors"
	"fmt"
	"net/netip"
)

// RouteType says how a route forwards.
type RouteType int

const (
	// RouteDevice sends to a directly attached interface (LinkName), scope
	// link: the host route of a local workload.
	RouteDevice RouteType = iota
	// RouteBlackhole drops: the covering route of a local address block.
	RouteBlackhole
	// RouteGateway forwards to one next hop, or spreads over several
	// (ECMP) when NextHops has more than one.
	RouteGateway
)

func (t RouteType) String() string {
	switch t {
	case RouteDevice:
		return "device"
	case RouteBlackhole:
		return "blackhole"
	case RouteGateway:
		return "gateway"
	}
	return fmt.Sprintf("RouteType(%d)", int(t))
}

// Route is one desired route. A Table keys routes by Dst: one route per
// destination.
type Route struct {
	Dst  netip.Prefix
	Type RouteType
	// LinkName is the output interface: required for RouteDevice; for
	// RouteGateway it is optional and makes the next hops on-link through
	// that interface (no recursive lookup).
	LinkName string
	// NextHops are the gateways of a RouteGateway; more than one makes an
	// ECMP (multipath) route.
	NextHops []netip.Addr
	// Src is the preferred source address; optional.
	Src netip.Addr
}

func (r Route) String() string {
	s := r.Dst.String() + " " + r.Type.String()
	if r.LinkName != "" {
		s += " dev " + r.LinkName
	}
	for _, h := range r.NextHops {
		s += " via " + h.String()
	}
	if r.Src.IsValid() {
		s += " src " + r.Src.String()
	}
	return s
}

// Family selects the address families a Table manages.
type Family int

const (
	// FamilyBoth manages IPv4 and IPv6 (the zero value).
	FamilyBoth Family = iota
	FamilyV4
	FamilyV6
)

func (f Family) has4() bool { return f == FamilyBoth || f == FamilyV4 }
func (f Family) has6() bool { return f == FamilyBoth || f == FamilyV6 }

// maxIfNameLen is IFNAMSIZ minus the terminating NUL.
const maxIfNameLen = 15

// validate checks a route against the families the table manages.
func (r Route) validate(fam Family) error {
	if !r.Dst.IsValid() {
		return errors.New("route has no destination")
	}
	dst := r.Dst.Addr()
	if dst.Is4In6() {
		return fmt.Errorf("route %s: IPv4-mapped IPv6 destination, use the plain IPv4 prefix", r.Dst)
	}
	if r.Dst != r.Dst.Masked() {
		return fmt.Errorf("route %s: destination has host bits set (did you mean %s?)", r.Dst, r.Dst.Masked())
	}
	if dst.Is4() && !fam.has4() {
		return fmt.Errorf("route %s: IPv4 route in an IPv6-only table", r.Dst)
	}
	if dst.Is6() && !fam.has6() {
		return fmt.Errorf("route %s: IPv6 route in an IPv4-only table", r.Dst)
	}
	if len(r.LinkName) > maxIfNameLen {
		return fmt.Errorf("route %s: interface name %q longer than %d characters", r.Dst, r.LinkName, maxIfNameLen)
	}
	if r.Src.IsValid() && r.Src.Is4() != dst.Is4() {
		return fmt.Errorf("route %s: source %s is of the other address family", r.Dst, r.Src)
	}
	switch r.Type {
	case RouteDevice:
		if r.LinkName == "" {
			return fmt.Errorf("route %s: device route needs LinkName", r.Dst)
		}
		if len(r.NextHops) > 0 {
			return fmt.Errorf("route %s: device route cannot have next hops (use RouteGateway)", r.Dst)
		}
	case RouteBlackhole:
		if r.LinkName != "" || len(r.NextHops) > 0 {
			return fmt.Errorf("route %s: blackhole route takes no interface and no next hops", r.Dst)
		}
	case RouteGateway:
		if len(r.NextHops) == 0 {
			return fmt.Errorf("route %s: gateway route needs at least one next hop", r.Dst)
		}
		seen := make(map[netip.Addr]bool, len(r.NextHops))
		for _, h := range r.NextHops {
			switch {
			case !h.IsValid():
				return fmt.Errorf("route %s: invalid next hop", r.Dst)
			case h.Is4() != dst.Is4() || h.Is4In6():
				return fmt.Errorf("route %s: next hop %s is of the other address family", r.Dst, h)
			case seen[h]:
				return fmt.Errorf("route %s: next hop %s listed twice", r.Dst, h)
			case h.IsLinkLocalUnicast() && r.LinkName == "":
				return fmt.Errorf("route %s: link-local next hop %s needs LinkName", r.Dst, h)
			}
			seen[h] = true
		}
	default:
		return fmt.Errorf("route %s: unknown route type %d", r.Dst, int(r.Type))
	}
	return nil
}

// clone copies the route so the caller may reuse its slices.
func (r Route) clone() Route {
	if r.NextHops != nil {
		r.NextHops = append([]netip.Addr(nil), r.NextHops...)
	}
	return r
}
