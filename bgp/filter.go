package bgp

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/calyx-net/calyx/datastore"
)

// What a node takes from its peers and gives them. Import safety is fixed:
// routes from external peers inside an IP pool are refused (workload
// addresses are announced only by the nodes that own them), and cluster
// peers (mesh, reflectors, their clients) may only announce prefixes inside
// the pools or the advertised service ranges. On top, each peer applies
// the BGPFilters it names, in order. Policy.Accepts is the reference
// evaluation; the GoBGP speaker renders the same as GoBGP policies
// (gobgp_policy.go), and a test holds the two to each other.

// Policy is the import and export policy of the speaker.
type Policy struct {
	// PoolPrefixes are the IP pools.
	PoolPrefixes []netip.Prefix
	// ServicePrefixes are the advertised service ranges.
	ServicePrefixes []netip.Prefix
	// Filters are the BGPFilters by name; peers refer to them in
	// Peer.Filters. A name that is missing here makes the peer's import
	// and export reject everything (fail closed) until it appears.
	Filters map[string]Filter
}

// Direction is import (from the peer) or export (to the peer).
type Direction uint8

const (
	Import Direction = iota + 1
	Export
)

// MatchOp is how a filter rule compares a prefix with its CIDR.
type MatchOp uint8

const (
	MatchAll      MatchOp = iota // no CIDR: every prefix of the family
	MatchIn                      // inside the CIDR, length within the range
	MatchNotIn                   // not In
	MatchEqual                   // the CIDR itself
	MatchNotEqual                // anything but the CIDR
)

// FilterRule is one rule of a BGPFilter.
type FilterRule struct {
	Accept bool
	Op     MatchOp
	CIDR   netip.Prefix
	// MinLen and MaxLen bound the prefix length for In and NotIn.
	MinLen, MaxLen int
}

// Matches reports whether the rule applies to p (p of the rule's family).
func (r FilterRule) Matches(p netip.Prefix) bool {
	in := func() bool {
		return r.CIDR.Bits() <= p.Bits() && r.CIDR.Contains(p.Addr()) && p.Bits() >= r.MinLen && p.Bits() <= r.MaxLen
	}
	switch r.Op {
	case MatchIn:
		return in()
	case MatchNotIn:
		return !in()
	case MatchEqual:
		return p == r.CIDR
	case MatchNotEqual:
		return p != r.CIDR
	}
	return true
}

// Filter is a resolved BGPFilter.
type Filter struct {
	ImportV4, ExportV4, ImportV6, ExportV6 []FilterRule
}

func (f *Filter) rules(dir Direction, v6 bool) []FilterRule {
	switch {
	case dir == Import && !v6:
		return f.ImportV4
	case dir == Import:
		return f.ImportV6
	case !v6:
		return f.ExportV4
	}
	return f.ExportV6
}

// FilterFrom resolves a BGPFilter resource (validated: anything that does
// not parse is an error).
func FilterFrom(r *datastore.BGPFilter) (Filter, error) {
	conv := func(list []datastore.BGPFilterRule, what string) ([]FilterRule, error) {
		out := make([]FilterRule, 0, len(list))
		for i, x := range list {
			r := FilterRule{Accept: x.Action == datastore.FilterAccept}
			if x.CIDR != "" {
				p, err := netip.ParsePrefix(x.CIDR)
				if err != nil || p != p.Masked() {
					return nil, fmt.Errorf("spec.%s[%d].cidr %q is not a CIDR", what, i, x.CIDR)
				}
				r.CIDR = p
				r.MinLen, r.MaxLen = x.PrefixLength.Range(p)
				switch x.MatchOperator {
				case datastore.MatchIn:
					r.Op = MatchIn
				case datastore.MatchNotIn:
					r.Op = MatchNotIn
				case datastore.MatchEqual:
					r.Op = MatchEqual
				case datastore.MatchNotEqual:
					r.Op = MatchNotEqual
				default:
					return nil, fmt.Errorf("spec.%s[%d]: unknown matchOperator %q", what, i, x.MatchOperator)
				}
			}
			out = append(out, r)
		}
		return out, nil
	}
	var f Filter
	var err error
	for _, l := range []struct {
		dst  *[]FilterRule
		src  []datastore.BGPFilterRule
		name string
	}{{&f.ImportV4, r.Spec.ImportV4, "importV4"}, {&f.ExportV4, r.Spec.ExportV4, "exportV4"},
		{&f.ImportV6, r.Spec.ImportV6, "importV6"}, {&f.ExportV6, r.Spec.ExportV6, "exportV6"}} {
		if *l.dst, err = conv(l.src, l.name); err != nil {
			return Filter{}, fmt.Errorf("BGPFilter %q: %w", r.Metadata.Name, err)
		}
	}
	return f, nil
}

// insideAny reports whether p lies within one of the prefixes (equal or
// more specific).
func insideAny(p netip.Prefix, in []netip.Prefix) bool {
	for _, c := range in {
		if c.Addr().Is4() == p.Addr().Is4() && c.Bits() <= p.Bits() && c.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// isCluster reports whether the peer is another node (its routes are
// workload and service routes) rather than an external router.
func (p *Peer) isCluster() bool { return p.Type != PeerExternal }

// Accepts reports whether a prefix passes the policy from (Import) or to
// (Export) the peer: import safety first, then the peer's filters in order,
// the first matching rule deciding; no match accepts.
func (pol *Policy) Accepts(peer *Peer, dir Direction, p netip.Prefix) bool {
	if dir == Import {
		if !peer.isCluster() && insideAny(p, pol.PoolPrefixes) {
			return false
		}
		if peer.isCluster() && !insideAny(p, pol.PoolPrefixes) && !insideAny(p, pol.ServicePrefixes) {
			return false
		}
	}
	if len(pol.missingFilters(peer)) > 0 {
		return false // fail closed
	}
	for _, name := range peer.Filters {
		f := pol.Filters[name]
		for _, r := range f.rules(dir, p.Addr().Is6()) {
			if r.Matches(p) {
				return r.Accept
			}
		}
	}
	return true
}

// missingFilters lists the peer's filter names that the policy lacks.
func (pol *Policy) missingFilters(peer *Peer) []string {
	var out []string
	for _, n := range peer.Filters {
		if _, ok := pol.Filters[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// BFD is the BFD setting of a session.
type BFD struct {
	Enabled    bool
	Interval   time.Duration // transmit and receive
	Multiplier int
}

// bfdFrom turns a BFD spec into the speaker's setting.
func bfdFrom(s *datastore.BFDSpec) BFD {
	if !s.On() {
		return BFD{}
	}
	return BFD{Enabled: true, Interval: time.Duration(s.Interval()) * time.Millisecond, Multiplier: s.Mult()}
}
