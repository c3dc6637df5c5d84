package bgp

import (
	"net/netip"
	"slices"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/calyx-net/calyx/internal/pfxmap"
)

// The learned-route feed. GoBGP v4 hands best-path events over as native
// paths (no protobuf): with multipath on, the watch's first event is every
// destination's ECMP set, and each later event the paths that joined or
// left a set (a left path comes as a withdrawal). bestChange is the little
// of a path that Calyx needs; bestTable folds the changes into each
// prefix's set and says which next hops the prefix has now.

// bestChange is one path of a best-path event.
type bestChange struct {
	prefix netip.Prefix
	src    netip.Addr // the peer; invalid for paths originated here
	hop    netip.Addr
	// own: originated here, or reflected back to us with our router ID
	// as originator. A prefix whose set holds an own path is not learned.
	own      bool
	withdraw bool
}

// decodeBest appends the unicast paths of one event to into.
func decodeBest(into []bestChange, paths []*apiutil.Path, routerID netip.Addr) []bestChange {
	for _, p := range paths {
		if p.Family != gobgp.RF_IPv4_UC && p.Family != gobgp.RF_IPv6_UC {
			continue
		}
		n, ok := p.Nlri.(*gobgp.IPAddrPrefix)
		if !ok {
			continue
		}
		c := bestChange{
			prefix:   netip.PrefixFrom(n.Prefix.Addr().Unmap(), n.Prefix.Bits()),
			src:      p.PeerAddress.Unmap(),
			withdraw: p.Withdrawal,
		}
		var originator netip.Addr
		c.hop, originator = nextHopOf(p.Attrs)
		c.own = !c.src.IsValid() || (originator.IsValid() && originator == routerID)
		into = append(into, c)
	}
	return into
}

// nextHopOf reads a path's next hop and originator ID.
func nextHopOf(attrs []gobgp.PathAttributeInterface) (hop, originator netip.Addr) {
	for _, a := range attrs {
		switch v := a.(type) {
		case *gobgp.PathAttributeNextHop:
			hop = v.Value
		case *gobgp.PathAttributeMpReachNLRI:
			// Nexthop is the global address; a link-local one (RFC 2545)
			// is useless off the link.
			hop = v.Nexthop
		case *gobgp.PathAttributeOriginatorId:
			originator = v.Value
		}
	}
	if hop.IsUnspecified() {
		hop = netip.Addr{}
	}
	return hop.Unmap(), originator
}

// member is one path of a destination's best (ECMP) set, identified by
// its source (Calyx negotiates no ADD-PATH, so a peer sends one path).
type member struct {
	src, hop netip.Addr
	own      bool
}

// bestTable is every destination's best set, packed (pfxmap: 100k
// prefixes from one peer share one set). Not safe for concurrent use.
type bestTable struct {
	dests   *pfxmap.Map[[]member]
	sets    hopSets
	scratch []member // apply builds a set here; the map copies a new one
}

func newBestTable() *bestTable {
	return &bestTable{dests: pfxmap.New(memberKey, slices.Clone[[]member])}
}

// memberKey encodes a set for sharing.
func memberKey(dst []byte, ms []member) []byte {
	for _, m := range ms {
		dst = pfxmap.AppendAddr(pfxmap.AppendAddr(dst, m.src), m.hop)
		if m.own {
			dst = append(dst, 1)
		} else {
			dst = append(dst, 0)
		}
	}
	return dst
}

// apply folds one change in: a path joins (or replaces its source's) set,
// or a withdrawal takes its source's path out. Sets are shared between
// prefixes, so the new one is built aside.
func (t *bestTable) apply(c bestChange) {
	ms, _ := t.dests.Get(c.prefix)
	i := slices.IndexFunc(ms, func(m member) bool { return m.src == c.src })
	if c.withdraw && i < 0 {
		return
	}
	next := append(t.scratch[:0], ms...)
	switch {
	case c.withdraw:
		next = slices.Delete(next, i, i+1)
	case i >= 0:
		next[i] = member{src: c.src, hop: c.hop, own: c.own}
	default:
		next = append(next, member{src: c.src, hop: c.hop, own: c.own})
	}
	t.scratch = next
	if len(next) == 0 {
		t.dests.Delete(c.prefix)
		return
	}
	t.dests.Set(c.prefix, next)
}

// hops is what the prefix's set routes to: the next hops of its learned
// paths, sorted; nil when nothing is learned or when the set holds a path
// of our own (GoBGP prefers its own path, so then no learned path is
// best; and a path reflected back to us is our own).
func (t *bestTable) hops(p netip.Prefix) []netip.Addr {
	ms, _ := t.dests.Get(p)
	switch len(ms) {
	case 0:
		return nil
	case 1:
		if ms[0].own || !ms[0].hop.IsValid() {
			return nil
		}
		return t.sets.one(ms[0].hop)
	}
	var out []netip.Addr
	for _, m := range ms {
		if m.own {
			return nil
		}
		if m.hop.IsValid() && !slices.Contains(out, m.hop) {
			out = append(out, m.hop)
		}
	}
	if len(out) == 1 {
		return t.sets.one(out[0])
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// routes is every learned prefix with its next hops.
func (t *bestTable) routes() map[netip.Prefix][]netip.Addr {
	out := make(map[netip.Prefix][]netip.Addr, t.dests.Len())
	for p := range t.dests.All() {
		if h := t.hops(p); len(h) > 0 {
			out[p] = h
		}
	}
	return out
}

// hopSets hands out shared, read-only one-address slices: most prefixes
// have the same single next hop, and a slice per prefix would cost 100k
// small allocations (and their memory in every map that keeps them).
type hopSets struct {
	m map[netip.Addr][]netip.Addr
}

// maxHopSets bounds the cache; past it, it starts again.
const maxHopSets = 4096

func (h *hopSets) one(a netip.Addr) []netip.Addr {
	if s, ok := h.m[a]; ok {
		return s
	}
	if h.m == nil || len(h.m) >= maxHopSets {
		h.m = make(map[netip.Addr][]netip.Addr)
	}
	s := []netip.Addr{a}
	h.m[a] = s
	return s
}

// foldChanges applies a batch of changes to t and returns, for each prefix
// whose next hops changed, the new ones (nil: no longer learned). A
// prefix that was not learned before and is not now is left out.
func (t *bestTable) foldChanges(batch []bestChange) map[netip.Prefix][]netip.Addr {
	before := make(map[netip.Prefix][]netip.Addr, min(len(batch), 1024))
	for _, c := range batch {
		if _, seen := before[c.prefix]; !seen {
			before[c.prefix] = t.hops(c.prefix)
		}
		t.apply(c)
	}
	out := before // reused: each entry is read before it is overwritten
	for p, old := range before {
		now := t.hops(p)
		switch {
		case len(old) == 0 && len(now) == 0, slices.Equal(old, now):
			delete(out, p)
		default:
			out[p] = now
		}
	}
	return out
}
