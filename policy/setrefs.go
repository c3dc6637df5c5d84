package policy

import (
	"net/netip"

	"github.com/calyx-net/calyx/datastore/selector"
)

// A rule's sets (cx-s-<selector>, cx-n-<nets>) exist only while the rule is
// rendered: while its policy is active on this node (selects at least one
// local endpoint) and only in the families the rule can match. Inactive
// policies cost this node no set, no set write and no selector
// evaluation, however large the cluster.

// selSet is the membership of one rule selector: which endpoints it
// matches. Its set in family f holds their addresses of f, and exists
// while refs[f] > 0.
type selSet struct {
	sel     *selector.Selector
	refs    map[Family]int // rules of active policies using it, by family
	members map[string]struct{}
}

// netSetRef is a CIDR list used by rules with more than one net.
type netSetRef struct {
	family Family
	nets   []netip.Prefix
	refs   int
}

// syncSetRefs makes the set references held for each changed policy follow
// whether it is active now, and which version of it is. Every new
// reference is counted before any old one is dropped, so a set that stays
// in use (the same selector in the new version of a policy, or in another
// policy that becomes active as this one stops) is never torn down and
// filled again.
func (m *model) syncSetRefs() {
	var drop []*compiledPolicy
	for name := range m.dirtyPolicies {
		var want *compiledPolicy
		if m.policyUse[name] > 0 {
			want = m.policies[name]
		}
		held := m.refsHeld[name]
		if want == held {
			continue
		}
		if want != nil {
			m.addRefs(want)
			m.refsHeld[name] = want
		} else {
			delete(m.refsHeld, name)
		}
		if held != nil {
			drop = append(drop, held)
		}
	}
	for _, cp := range drop {
		m.dropRefs(cp)
	}
}

// addRefs counts the sets an active policy's rules use, creating (and
// filling, from every endpoint known) the ones that are new.
func (m *model) addRefs(cp *compiledPolicy) {
	forEachRule(cp, func(r *compiledRule) {
		for _, f := range m.families {
			if !r.inFamily(f) {
				continue // not rendered in f: no set
			}
			for _, s := range r.selectors() {
				id := s.UniqueID()
				ss := m.selSets[id]
				if ss == nil {
					ss = &selSet{sel: s, refs: map[Family]int{}, members: map[string]struct{}{}}
					for _, ep := range m.endpoints {
						if s.EvaluateLabels(ep) {
							ss.members[ep.name] = struct{}{}
						}
					}
					m.selSets[id] = ss
				}
				if ss.refs[f] == 0 {
					m.dirtySelSets[id] = struct{}{}
				}
				ss.refs[f]++
			}
			m.addPortRefs(r, f)
		}
		forEachNetSet(r, m.families, func(f Family, nets []netip.Prefix) {
			name := netSetName(netsKey(nets), f)
			ns := m.netSets[name]
			if ns == nil {
				ns = &netSetRef{family: f, nets: nets}
				m.netSets[name] = ns
				m.dirtyNetSets[name] = struct{}{}
			}
			ns.refs++
		})
	})
}

// dropRefs undoes addRefs for a policy version that is no longer active.
func (m *model) dropRefs(cp *compiledPolicy) {
	forEachRule(cp, func(r *compiledRule) {
		for _, f := range m.families {
			if !r.inFamily(f) {
				continue
			}
			for _, s := range r.selectors() {
				id := s.UniqueID()
				ss := m.selSets[id]
				if ss == nil {
					continue
				}
				if ss.refs[f]--; ss.refs[f] <= 0 {
					delete(ss.refs, f)
					m.dirtySelSets[id] = struct{}{}
				}
				if len(ss.refs) == 0 {
					delete(m.selSets, id) // no longer indexed: endpoint changes skip it
				}
			}
			m.dropPortRefs(r, f)
		}
		forEachNetSet(r, m.families, func(f Family, nets []netip.Prefix) {
			name := netSetName(netsKey(nets), f)
			if ns := m.netSets[name]; ns != nil {
				if ns.refs--; ns.refs <= 0 {
					delete(m.netSets, name)
					m.dirtyNetSets[name] = struct{}{}
				}
			}
		})
	})
}

// forEachNetSet calls fn for every CIDR list of the rule that renders as a
// set, by family.
func forEachNetSet(r *compiledRule, families []Family, fn func(f Family, nets []netip.Prefix)) {
	for _, f := range families {
		if !r.inFamily(f) {
			continue // not rendered in f: no set
		}
		for _, e := range []*compiledEntity{&r.src, &r.dst} {
			pos, neg := entityNets(e, f)
			for _, n := range []netMatch{pos, neg} {
				if n.needsSet() {
					fn(f, n.nets)
				}
			}
		}
	}
}

func forEachRule(cp *compiledPolicy, fn func(r *compiledRule)) {
	for dir := range cp.rules {
		for i := range cp.rules[dir] {
			fn(&cp.rules[dir][i])
		}
	}
}
