package datastore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// The BGP additions to BGPConfig and BGPPeer (BFD, services, communities)
// and the BGPFilter kind, with their validation.

// BFDSpec turns on BFD (RFC 5880, single hop) for a session: the peer is
// declared down after multiplier intervals without a packet.
type BFDSpec struct {
	Enabled bool `json:"enabled,omitempty"`
	// IntervalMs is the transmit and receive interval (default 300).
	IntervalMs int `json:"intervalMs,omitempty"`
	// Multiplier is the number of missed intervals (default 3).
	Multiplier int `json:"multiplier,omitempty"`
}

const (
	DefaultBFDIntervalMs = 300
	DefaultBFDMultiplier = 3
	minBFDIntervalMs     = 50
	maxBFDIntervalMs     = 60000
	minBFDMultiplier     = 2
	maxBFDMultiplier     = 255
)

// On reports whether BFD is enabled (a nil spec is off).
func (b *BFDSpec) On() bool { return b != nil && b.Enabled }

// Interval is the configured interval in milliseconds or the default.
func (b *BFDSpec) Interval() int {
	if b == nil || b.IntervalMs == 0 {
		return DefaultBFDIntervalMs
	}
	return b.IntervalMs
}

// Mult is the configured multiplier or the default.
func (b *BFDSpec) Mult() int {
	if b == nil || b.Multiplier == 0 {
		return DefaultBFDMultiplier
	}
	return b.Multiplier
}

func (b *BFDSpec) validate(v *validator, path string) {
	if b == nil {
		return
	}
	if b.IntervalMs != 0 && (b.IntervalMs < minBFDIntervalMs || b.IntervalMs > maxBFDIntervalMs) {
		v.add(path+".intervalMs", "%d is out of range (%d-%d)", b.IntervalMs, minBFDIntervalMs, maxBFDIntervalMs)
	}
	if b.Multiplier != 0 && (b.Multiplier < minBFDMultiplier || b.Multiplier > maxBFDMultiplier) {
		v.add(path+".multiplier", "%d is out of range (%d-%d)", b.Multiplier, minBFDMultiplier, maxBFDMultiplier)
	}
}

func (v *validator) md5Password(field, s string) {
	if len(s) > 80 {
		v.add(field, "is %d characters; TCP MD5 keys are at most 80", len(s))
	}
}

// ServiceCIDR is a range of service addresses the nodes announce.
type ServiceCIDR struct {
	CIDR string `json:"cidr"`
}

func (v *validator) serviceCIDRs(path string, cs []ServiceCIDR) {
	for i, c := range cs {
		v.cidr(fmt.Sprintf("%s[%d].cidr", path, i), c.CIDR)
	}
}

// ServicePrefixes is every advertised service range of the spec, parsed
// (validation keeps bad ones out of etcd; any that slipped through are
// skipped).
func (s *BGPConfigSpec) ServicePrefixes() []netip.Prefix {
	if s == nil {
		return nil
	}
	var out []netip.Prefix
	for _, list := range [][]ServiceCIDR{s.ServiceClusterIPs, s.ServiceExternalIPs, s.ServiceLoadBalancerIPs} {
		for _, c := range list {
			if p, err := netip.ParsePrefix(c.CIDR); err == nil && p == p.Masked() {
				out = append(out, p)
			}
		}
	}
	return out
}

// ParseCommunity reads a standard community (RFC 1997) written "AS:value".
func ParseCommunity(s string) (uint32, error) {
	hi, lo, ok := strings.Cut(s, ":")
	a, err1 := strconv.ParseUint(hi, 10, 16)
	b, err2 := strconv.ParseUint(lo, 10, 16)
	if !ok || err1 != nil || err2 != nil {
		return 0, fmt.Errorf("%q is not a community (want AS:value, both 0-65535, e.g. 64512:100)", s)
	}
	return uint32(a)<<16 | uint32(b), nil
}

// ---- BGPFilter ----------------------------------------------------------

// BGPFilter is an ordered list of import and export rules per address
// family, as Calico's. A BGPPeer applies the filters it names, in order:
// the first rule that matches a prefix decides; a prefix no rule matches
// is accepted.
type BGPFilter struct {
	TypeMeta `json:",inline"`
	Metadata Metadata      `json:"metadata"`
	Spec     BGPFilterSpec `json:"spec"`
}

type BGPFilterSpec struct {
	ImportV4 []BGPFilterRule `json:"importV4,omitempty"`
	ExportV4 []BGPFilterRule `json:"exportV4,omitempty"`
	ImportV6 []BGPFilterRule `json:"importV6,omitempty"`
	ExportV6 []BGPFilterRule `json:"exportV6,omitempty"`
}

// BGPFilterRule matches prefixes against cidr with matchOperator; without
// cidr it matches every prefix of its family.
type BGPFilterRule struct {
	Action        string `json:"action"`
	MatchOperator string `json:"matchOperator,omitempty"`
	CIDR          string `json:"cidr,omitempty"`
	// PrefixLength limits In and NotIn to prefixes of these lengths
	// (default: cidr's length to 32 or 128).
	PrefixLength *BGPFilterPrefixLength `json:"prefixLength,omitempty"`
}

type BGPFilterPrefixLength struct {
	Min int `json:"min,omitempty"`
	Max int `json:"max,omitempty"`
}

const (
	FilterAccept = "Accept"
	FilterReject = "Reject"

	MatchIn       = "In"
	MatchNotIn    = "NotIn"
	MatchEqual    = "Equal"
	MatchNotEqual = "NotEqual"
)

func (f *BGPFilter) GetMeta() *Metadata { return &f.Metadata }

func (f *BGPFilter) validateSpec(v *validator) {
	s := &f.Spec
	for _, l := range []struct {
		name  string
		rules []BGPFilterRule
		v6    bool
	}{{"importV4", s.ImportV4, false}, {"exportV4", s.ExportV4, false}, {"importV6", s.ImportV6, true}, {"exportV6", s.ExportV6, true}} {
		for i := range l.rules {
			l.rules[i].validate(v, fmt.Sprintf("spec.%s[%d]", l.name, i), l.v6)
		}
	}
}

func (r *BGPFilterRule) validate(v *validator, path string, v6 bool) {
	switch r.Action {
	case FilterAccept, FilterReject:
	case "":
		v.add(path+".action", "is required (Accept or Reject)")
	default:
		v.add(path+".action", "%q is not an action (Accept or Reject)", r.Action)
	}
	switch r.MatchOperator {
	case MatchIn, MatchNotIn, MatchEqual, MatchNotEqual:
		if r.CIDR == "" {
			v.add(path+".cidr", "is required with matchOperator %s", r.MatchOperator)
		}
	case "":
		if r.CIDR != "" {
			v.add(path+".matchOperator", "is required with cidr (In, NotIn, Equal or NotEqual)")
		}
		if r.PrefixLength != nil {
			v.add(path+".prefixLength", "needs cidr and matchOperator In or NotIn")
		}
		return
	default:
		v.add(path+".matchOperator", "%q is not an operator (In, NotIn, Equal or NotEqual)", r.MatchOperator)
	}
	if r.CIDR == "" {
		return
	}
	p, ok := v.cidr(path+".cidr", r.CIDR)
	if !ok {
		return
	}
	if p.Addr().Is6() != v6 {
		want := "IPv4"
		if v6 {
			want = "IPv6"
		}
		v.add(path+".cidr", "%s is not an %s prefix (the list is for %s)", p, want, want)
		return
	}
	if r.PrefixLength == nil {
		return
	}
	if r.MatchOperator == MatchEqual || r.MatchOperator == MatchNotEqual {
		v.add(path+".prefixLength", "only goes with matchOperator In or NotIn (%s compares the prefix itself)", r.MatchOperator)
		return
	}
	lo, hi := r.PrefixLength.Range(p)
	if lo < p.Bits() || lo > p.Addr().BitLen() {
		v.add(path+".prefixLength.min", "%d is out of range for %s (%d-%d)", lo, p, p.Bits(), p.Addr().BitLen())
	}
	if hi < p.Bits() || hi > p.Addr().BitLen() {
		v.add(path+".prefixLength.max", "%d is out of range for %s (%d-%d)", hi, p, p.Bits(), p.Addr().BitLen())
	}
	if lo > hi {
		v.add(path+".prefixLength", "min %d is greater than max %d", lo, hi)
	}
}

// Range is the prefix lengths that In/NotIn cover for cidr p: the
// configured ones, or p's own length to the longest possible.
func (l *BGPFilterPrefixLength) Range(p netip.Prefix) (lo, hi int) {
	lo, hi = p.Bits(), p.Addr().BitLen()
	if l != nil && l.Min != 0 {
		lo = l.Min
	}
	if l != nil && l.Max != 0 {
		hi = l.Max
	}
	return lo, hi
}

// ValidateFilterRefs reports every BGPPeer filter name that is not one of
// filters.
func ValidateFilterRefs(peers []*BGPPeer, filters map[string]bool) error {
	var problems []string
	for _, p := range peers {
		for i, f := range p.Spec.Filters {
			if !filters[f] {
				problems = append(problems, fmt.Sprintf("%s: spec.filters[%d]: BGPFilter %q does not exist", Describe(p), i, f))
			}
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// checkFilterRefs refuses BGPPeers naming a BGPFilter that is neither
// stored nor among rs.
func (c *Client) checkFilterRefs(ctx context.Context, rs []Resource) error {
	var peers []*BGPPeer
	names := map[string]bool{}
	for _, r := range rs {
		switch v := r.(type) {
		case *BGPPeer:
			if len(v.Spec.Filters) > 0 {
				peers = append(peers, v)
			}
		case *BGPFilter:
			names[v.Metadata.Name] = true
		}
	}
	if len(peers) == 0 {
		return nil
	}
	stored, _, err := c.List(ctx, KindBGPFilter)
	if err != nil {
		return err
	}
	for _, r := range stored {
		names[r.GetMeta().Name] = true
	}
	return ValidateFilterRefs(peers, names)
}
