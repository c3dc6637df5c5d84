package policy

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/selector"
)

// direction is the side of a workload a rule guards.
type direction uint8

const (
	ingress direction = iota // to the workload
	egress                   // from the workload
)

func (d direction) String() string {
	if d == ingress {
		return "ingress"
	}
	return "egress"
}

// compiledPolicy is a Policy with its selectors parsed and its addresses
// and ports checked, ready to render and to evaluate.
type compiledPolicy struct {
	name     string
	order    float64 // +Inf when unset, so it sorts after every set order
	selector *selector.Selector
	applies  [2]bool // by direction: the policy's effective types
	rules    [2][]compiledRule
}

type compiledRule struct {
	action    datastore.Action
	proto     int // -1: any protocol
	ipVersion int // 0: both
	icmpType  int // -1: any
	icmpCode  int // -1: any
	src, dst  compiledEntity
}

type compiledEntity struct {
	sel, notSel    *selector.Selector
	nets, notNets  []netip.Prefix
	ports, notPort []datastore.Port // numbers and ranges
	// named and notNamed are named ports: each matches the (address,
	// port) pairs of the endpoints that give the name a number (a
	// hash:ip,port set per selector, protocol and name; see portsets.go).
	named, notNamed []string
}

// selectorCache reuses parsed selectors: thousands of rules tend to repeat
// a few selectors. Parsed selectors are immutable, so sharing is safe.
type selectorCache struct {
	m map[string]*selector.Selector
}

// selectorCacheMax bounds the cache; past it, it starts over.
const selectorCacheMax = 8192

func (c *selectorCache) parse(s string) (*selector.Selector, error) {
	if sel, ok := c.m[s]; ok {
		return sel, nil
	}
	sel, err := selector.Parse(s)
	if err != nil {
		return nil, err
	}
	if c.m == nil || len(c.m) >= selectorCacheMax {
		c.m = map[string]*selector.Selector{}
	}
	c.m[s] = sel
	return sel, nil
}

// policyLess orders policies as they apply: set orders first, lowest first,
// then unset ones; ties by name.
func policyLess(a, b *compiledPolicy) int {
	if a.order != b.order {
		if a.order < b.order {
			return -1
		}
		return 1
	}
	return strings.Compare(a.name, b.name)
}

// compilePolicy checks and parses a policy. It refuses what it could not
// render faithfully: a policy is all or nothing, never partly enforced.
func compilePolicy(p *datastore.Policy, sels *selectorCache) (*compiledPolicy, error) {
	name := p.Metadata.Name
	if name == "" {
		return nil, fmt.Errorf("policy without a name")
	}
	cp := &compiledPolicy{name: name, order: math.Inf(1)}
	if o := p.Spec.Order; o != nil {
		if math.IsNaN(*o) || math.IsInf(*o, 0) {
			return nil, fmt.Errorf("policy %q: order must be a finite number", name)
		}
		cp.order = *o
	}
	sel, err := sels.parse(p.Spec.Selector)
	if err != nil {
		return nil, fmt.Errorf("policy %q: spec.selector: %w", name, err)
	}
	cp.selector = sel
	cp.applies[ingress] = p.Spec.AppliesTo(datastore.PolicyTypeIngress)
	cp.applies[egress] = p.Spec.AppliesTo(datastore.PolicyTypeEgress)
	for _, t := range p.Spec.Types {
		if t != datastore.PolicyTypeIngress && t != datastore.PolicyTypeEgress {
			return nil, fmt.Errorf("policy %q: spec.types: %q is not Ingress or Egress", name, t)
		}
	}
	for dir, rules := range [2][]datastore.Rule{p.Spec.Ingress, p.Spec.Egress} {
		if len(rules) > 0 && !cp.applies[dir] {
			return nil, fmt.Errorf("policy %q: spec.%s has rules but types does not include it", name, direction(dir))
		}
		for i := range rules {
			cr, err := compileRule(&rules[i], sels)
			if err != nil {
				return nil, fmt.Errorf("policy %q: spec.%s[%d]: %w", name, direction(dir), i, err)
			}
			cp.rules[dir] = append(cp.rules[dir], cr)
		}
	}
	return cp, nil
}

func compileRule(r *datastore.Rule, sels *selectorCache) (compiledRule, error) {
	cr := compiledRule{action: r.Action, proto: -1, ipVersion: r.IPVersion, icmpType: -1, icmpCode: -1}
	switch r.Action {
	case datastore.ActionAllow, datastore.ActionDeny, datastore.ActionLog, datastore.ActionPass:
	default:
		return cr, fmt.Errorf("action %q is not Allow, Deny, Log or Pass", r.Action)
	}
	if r.IPVersion != 0 && r.IPVersion != 4 && r.IPVersion != 6 {
		return cr, fmt.Errorf("ipVersion %d is not 4 or 6", r.IPVersion)
	}
	if r.Protocol != nil {
		cr.proto = int(r.Protocol.Number())
		if cr.proto == 0 {
			return cr, fmt.Errorf("protocol 0 is not a protocol")
		}
	}
	hasPorts := len(r.Source.Ports)+len(r.Source.NotPorts)+len(r.Destination.Ports)+len(r.Destination.NotPorts) > 0
	if hasPorts && !protoHasPorts(cr.proto) {
		return cr, fmt.Errorf("ports need protocol tcp, udp or sctp")
	}
	if r.ICMP != nil {
		if cr.proto != protoICMP && cr.proto != protoICMPv6 {
			return cr, fmt.Errorf("icmp needs protocol icmp or icmpv6")
		}
		if t := r.ICMP.Type; t != nil {
			if *t < 0 || *t > 254 {
				return cr, fmt.Errorf("icmp.type %d is out of range (0-254)", *t)
			}
			cr.icmpType = *t
		}
		if c := r.ICMP.Code; c != nil {
			if cr.icmpType < 0 {
				return cr, fmt.Errorf("icmp.code needs icmp.type")
			}
			if *c < 0 || *c > 255 {
				return cr, fmt.Errorf("icmp.code %d is out of range (0-255)", *c)
			}
			cr.icmpCode = *c
		}
	}
	var err error
	if cr.src, err = compileEntity(&r.Source, sels); err != nil {
		return cr, fmt.Errorf("source: %w", err)
	}
	if cr.dst, err = compileEntity(&r.Destination, sels); err != nil {
		return cr, fmt.Errorf("destination: %w", err)
	}
	return cr, nil
}

const (
	protoICMP   = 1
	protoTCP    = 6
	protoUDP    = 17
	protoICMPv6 = 58
	protoSCTP   = 132
)

func protoHasPorts(p int) bool { return p == protoTCP || p == protoUDP || p == protoSCTP }

func compileEntity(e *datastore.EntityRule, sels *selectorCache) (compiledEntity, error) {
	var ce compiledEntity
	var err error
	if e.Selector != "" {
		if ce.sel, err = sels.parse(e.Selector); err != nil {
			return ce, fmt.Errorf("selector: %w", err)
		}
	}
	if e.NotSelector != "" {
		if ce.notSel, err = sels.parse(e.NotSelector); err != nil {
			return ce, fmt.Errorf("notSelector: %w", err)
		}
	}
	if ce.nets, err = parseNets(e.Nets); err != nil {
		return ce, fmt.Errorf("nets: %w", err)
	}
	if ce.notNets, err = parseNets(e.NotNets); err != nil {
		return ce, fmt.Errorf("notNets: %w", err)
	}
	for _, ports := range [][]datastore.Port{e.Ports, e.NotPorts} {
		for _, p := range ports {
			if p.IsNamed() {
				if err := datastore.ValidatePortName(p.Name); err != nil {
					return ce, err
				}
			} else if p.MinPort > p.MaxPort {
				return ce, fmt.Errorf("port range %s: start is above end", p)
			}
		}
	}
	ce.ports, ce.named = splitNamed(e.Ports)
	ce.notPort, ce.notNamed = splitNamed(e.NotPorts)
	return ce, nil
}

// splitNamed separates numbered ports from named ones (sorted, unique).
func splitNamed(ports []datastore.Port) (numbered []datastore.Port, named []string) {
	for _, p := range ports {
		if p.IsNamed() {
			named = append(named, p.Name)
		} else {
			numbered = append(numbered, p)
		}
	}
	slices.Sort(named)
	return numbered, slices.Compact(named)
}

// parseNets accepts CIDRs or bare addresses, masks host bits away (the
// kernel would) and sorts and de-duplicates, so that equal lists render the
// same and share a set.
func parseNets(in []string) ([]netip.Prefix, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		p, err := parsePrefix(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, comparePrefix)
	out = slices.Compact(out)
	// A /0 covers its whole family, and ipset hash:net cannot hold one: keep
	// it alone, so it renders inline ("-s 0.0.0.0/0") and never in a set.
	for _, f := range []Family{V4, V6} {
		if slices.ContainsFunc(out, func(p netip.Prefix) bool { return p.Bits() == 0 && prefixFamily(p) == f }) {
			out = slices.DeleteFunc(out, func(p netip.Prefix) bool { return prefixFamily(p) == f && p.Bits() != 0 })
		}
	}
	return out, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR", s)
	}
	if p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("%q: IPv4-mapped IPv6 prefixes are not supported", s)
	}
	return p.Masked(), nil
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func prefixFamily(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return V4
	}
	return V6
}

// netsOf returns the prefixes of one family.
func netsOf(nets []netip.Prefix, f Family) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range nets {
		if prefixFamily(p) == f {
			out = append(out, p)
		}
	}
	return out
}

// selectors lists every selector the rule reads (for the set index).
func (r *compiledRule) selectors() []*selector.Selector {
	var out []*selector.Selector
	for _, s := range []*selector.Selector{r.src.sel, r.src.notSel, r.dst.sel, r.dst.notSel} {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

// inFamily reports whether the rule can match packets of family f at all.
func (r *compiledRule) inFamily(f Family) bool {
	if r.ipVersion != 0 && Family(r.ipVersion) != f {
		return false
	}
	if (r.proto == protoICMP && f == V6) || (r.proto == protoICMPv6 && f == V4) {
		return false
	}
	for _, e := range []*compiledEntity{&r.src, &r.dst} {
		// Positive nets of the other family only cannot match, nor can
		// anything when a notNet is the whole family.
		if len(e.nets) > 0 && len(netsOf(e.nets, f)) == 0 {
			return false
		}
		if slices.ContainsFunc(netsOf(e.notNets, f), func(p netip.Prefix) bool { return p.Bits() == 0 }) {
			return false
		}
	}
	return true
}

// netMatch is how one side's nets (or notNets) of one family render:
// nothing, one CIDR inline (-s/-d), or a hash:net set.
type netMatch struct {
	nets   []netip.Prefix
	inline bool
}

func (n netMatch) needsSet() bool { return len(n.nets) > 0 && !n.inline }

// entityNets decides how an entity's nets render in a family. iptables
// takes one -s (-d) per rule, so only one of nets and notNets can be inline.
func entityNets(e *compiledEntity, f Family) (pos, neg netMatch) {
	pos.nets, neg.nets = netsOf(e.nets, f), netsOf(e.notNets, f)
	pos.inline = len(pos.nets) == 1
	neg.inline = len(neg.nets) == 1 && !pos.inline
	return pos, neg
}
