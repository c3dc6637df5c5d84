package bgp

import (
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/anypb"
)

// Decoding of GoBGP's best-path events on the learned-route path. GoBGP
// reports one event per changed destination, each path packed as protobuf
// Any messages; a 100k-prefix table is 100k events. Reading the few fields
// needed straight from the wire form, and folding each event into the
// caller's map, keeps that path free of reflection and of per-event maps.

// wireField returns the first occurrence of field num in a marshalled
// message: its bytes (length-delimited) or its value (varint).
func wireField(b []byte, num protowire.Number) (data []byte, v uint64, ok bool) {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return nil, 0, false
		}
		b = b[l:]
		switch typ {
		case protowire.BytesType:
			d, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return nil, 0, false
			}
			if n == num {
				return d, 0, true
			}
			b = b[l:]
		case protowire.VarintType:
			x, l := protowire.ConsumeVarint(b)
			if l < 0 {
				return nil, 0, false
			}
			if n == num {
				return nil, x, true
			}
			b = b[l:]
		default:
			l := protowire.ConsumeFieldValue(n, typ, b)
			if l < 0 {
				return nil, 0, false
			}
			b = b[l:]
		}
	}
	return nil, 0, false
}

func parseAddrBytes(b []byte) netip.Addr {
	a, ok := parseAddr(b)
	if !ok || a.IsUnspecified() {
		return netip.Addr{}
	}
	return a.Unmap()
}

// parseAddr reads an address from its text; dotted IPv4, the common case,
// without making a string of it first.
func parseAddr(b []byte) (netip.Addr, bool) {
	var v4 [4]byte
	i, n, digits := 0, 0, 0
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9' && digits < 3 && (digits == 0 || n != 0): // no leading zeros
			n = n*10 + int(c-'0')
			digits++
		case c == '.' && digits > 0 && i < 3 && n <= 255:
			v4[i] = byte(n)
			i, n, digits = i+1, 0, 0
		default:
			a, err := netip.ParseAddr(string(b))
			return a, err == nil
		}
	}
	if i != 3 || digits == 0 || n > 255 {
		a, err := netip.ParseAddr(string(b))
		return a, err == nil
	}
	v4[3] = byte(n)
	return netip.AddrFrom4(v4), true
}

// wirePrefix reads an IPAddressPrefix NLRI.
func wirePrefix(nlri *anypb.Any) (netip.Prefix, bool) {
	if nlri == nil || !nlri.MessageIs((*api.IPAddressPrefix)(nil)) {
		return netip.Prefix{}, false
	}
	_, bits, _ := wireField(nlri.GetValue(), 1)
	s, _, ok := wireField(nlri.GetValue(), 2)
	if !ok {
		return netip.Prefix{}, false
	}
	a, ok := parseAddr(s)
	if !ok {
		return netip.Prefix{}, false
	}
	p, err := a.Unmap().Prefix(int(bits))
	return p, err == nil
}

// wireNextHop reads the next hop and the originator ID of a path.
func wireNextHop(p *api.Path) (nextHop netip.Addr, originatorID []byte) {
	for _, a := range p.GetPattrs() {
		switch {
		case a.MessageIs((*api.NextHopAttribute)(nil)):
			if s, _, ok := wireField(a.GetValue(), 1); ok {
				nextHop = parseAddrBytes(s)
			}
		case a.MessageIs((*api.MpReachNLRIAttribute)(nil)):
			// The first is the global address; a second would be
			// link-local (RFC 2545), useless off the link.
			if s, _, ok := wireField(a.GetValue(), 2); ok {
				nextHop = parseAddrBytes(s)
			}
		case a.MessageIs((*api.OriginatorIdAttribute)(nil)):
			originatorID, _, _ = wireField(a.GetValue(), 1)
		}
	}
	return nextHop, originatorID
}

// hopSets hands out shared, read-only next-hop slices: most prefixes have
// the same one or few next hops, and a slice per prefix would cost 100k
// small allocations (and their memory in every map that keeps them).
type hopSets struct {
	one map[netip.Addr][]netip.Addr
}

// maxHopSets bounds the cache; past it, it starts again.
const maxHopSets = 4096

func (h *hopSets) get(hops []netip.Addr) []netip.Addr {
	if len(hops) != 1 {
		return slices.Clone(hops)
	}
	if s, ok := h.one[hops[0]]; ok {
		return s
	}
	if h.one == nil || len(h.one) >= maxHopSets {
		h.one = make(map[netip.Addr][]netip.Addr)
	}
	s := []netip.Addr{hops[0]}
	h.one[hops[0]] = s
	return s
}

// destGroup is what one event says about one destination.
type destGroup struct {
	prefix netip.Prefix
	hops   []netip.Addr
	own    bool
}

// bestPathDecoder folds best-path events into a map of prefix to next
// hops. Its buffers are reused from event to event; it is not safe for
// concurrent use.
type bestPathDecoder struct {
	routerID string
	sets     hopSets
	groups   []destGroup
	index    map[netip.Prefix]int // for events with many destinations
}

// merge folds one event into into. The event carries, for each destination
// that changed, all of its ECMP best paths, or one withdrawn path. A nil
// value means the prefix is not learned: withdrawn, or originated by this
// node (GoBGP always prefers its own path, so then no learned path is in
// the set), or reflected back to us with our router ID as originator.
// Later events supersede earlier ones.
func (d *bestPathDecoder) merge(into map[netip.Prefix][]netip.Addr, paths []*api.Path) {
	d.groups = d.groups[:0]
	clear(d.index)
	for _, p := range paths {
		if _, ok := familyFromAPI(p.GetFamily()); !ok {
			continue
		}
		pfx, ok := wirePrefix(p.GetNlri())
		if !ok {
			continue
		}
		g := d.group(pfx)
		if p.IsWithdraw || g.own {
			continue
		}
		nh, originator := wireNextHop(p)
		if !pathSource(p).IsValid() || string(originator) == d.routerID {
			g.own = true
			continue
		}
		if nh.IsValid() && !slices.Contains(g.hops, nh) {
			g.hops = append(g.hops, nh)
		}
	}
	for i := range d.groups {
		g := &d.groups[i]
		if g.own || len(g.hops) == 0 {
			into[g.prefix] = nil
			continue
		}
		slices.SortFunc(g.hops, netip.Addr.Compare)
		into[g.prefix] = d.sets.get(g.hops)
	}
	// Keep the groups' hop buffers for the next event, unless an event
	// with many destinations (the watch's first, the whole table) made
	// them large.
	if len(d.groups) > 64 {
		d.groups, d.index = nil, nil
	}
}

// group finds or adds the destination's group in this event.
func (d *bestPathDecoder) group(pfx netip.Prefix) *destGroup {
	if d.index != nil {
		if i, ok := d.index[pfx]; ok {
			return &d.groups[i]
		}
	} else {
		for i := range d.groups {
			if d.groups[i].prefix == pfx {
				return &d.groups[i]
			}
		}
	}
	if len(d.groups) < cap(d.groups) {
		d.groups = d.groups[:len(d.groups)+1]
		g := &d.groups[len(d.groups)-1]
		g.prefix, g.hops, g.own = pfx, g.hops[:0], false
	} else {
		d.groups = append(d.groups, destGroup{prefix: pfx})
	}
	i := len(d.groups) - 1
	if d.index == nil && len(d.groups) > 8 {
		d.index = make(map[netip.Prefix]int, 2*len(d.groups))
		for j := range d.groups {
			d.index[d.groups[j].prefix] = j
		}
	} else if d.index != nil {
		d.index[pfx] = i
	}
	return &d.groups[i]
}

// bestPathsToRoutes decodes the paths of one event on their own.
func bestPathsToRoutes(paths []*api.Path, routerID string) map[netip.Prefix][]netip.Addr {
	out := make(map[netip.Prefix][]netip.Addr, len(paths))
	d := bestPathDecoder{routerID: routerID}
	d.merge(out, paths)
	return out
}
