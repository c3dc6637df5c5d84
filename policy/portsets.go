package policy

import (
	"strconv"

	"github.com/calyx-net/calyx/datastore/selector"
)

// A named port in a rule ("http") stands for a different number on each
// endpoint, so it cannot render as a port match. It renders as a
// hash:ip,port set (cx-p-<id>, v6 cx-p6-<id>) of the (address,
// protocol:port) pairs of every endpoint that the rule's selector on that
// side matches (every endpoint when the side has none) and whose
// spec.ports gives the name a number for the rule's protocol. A packet
// matches when its address and port on that side are such a pair: for an
// ingress rule, the local endpoint's own number for the name; for an egress
// rule, the number of the peer it goes to. Like the selector sets, a port
// set exists only while a rule of an active policy uses it.

// portSet is the membership of one (selector, protocol, name).
type portSet struct {
	sel     *selector.Selector // nil: every endpoint
	proto   int
	name    string
	refs    map[Family]int
	members map[string]uint16 // endpoint name -> its port number for the name
}

// portSetID names a (selector, protocol, name) stably across restarts.
func portSetID(sel *selector.Selector, proto int, name string) string {
	s := "all()"
	if sel != nil {
		s = sel.String()
	}
	return shortID(strconv.Itoa(proto)+"/"+name+"/"+s, 20)
}

func portSetName(id string, f Family) string { return familySetName("cx-p-"+id, f) }

// numberOf is the endpoint's port for the set, if the set includes it.
func (ps *portSet) numberOf(ep *endpoint) (uint16, bool) {
	if ps.sel != nil && !ps.sel.EvaluateLabels(ep) {
		return 0, false
	}
	for _, p := range ep.ports {
		if p.Name == ps.name && int(p.Protocol.Number()) == ps.proto {
			return p.Port, true
		}
	}
	return 0, false
}

// forEachNamedPort calls fn for each named port of the rule with the
// selector of its side and the set direction it matches on.
func forEachNamedPort(r *compiledRule, fn func(sel *selector.Selector, name, dirs string, negate bool)) {
	for _, side := range []struct {
		e    *compiledEntity
		dirs string
	}{{&r.src, "src,src"}, {&r.dst, "dst,dst"}} {
		for _, n := range side.e.named {
			fn(side.e.sel, n, side.dirs, false)
		}
		for _, n := range side.e.notNamed {
			fn(side.e.sel, n, side.dirs, true)
		}
	}
}

// addPortRefs counts the port sets of one rule in the families it renders
// in, creating (and filling from every endpoint known) the new ones.
func (m *model) addPortRefs(r *compiledRule, f Family) {
	forEachNamedPort(r, func(sel *selector.Selector, name, _ string, _ bool) {
		id := portSetID(sel, r.proto, name)
		ps := m.portSets[id]
		if ps == nil {
			ps = &portSet{sel: sel, proto: r.proto, name: name, refs: map[Family]int{}, members: map[string]uint16{}}
			for _, ep := range m.endpoints {
				if n, ok := ps.numberOf(ep); ok {
					ps.members[ep.name] = n
				}
			}
			m.portSets[id] = ps
		}
		if ps.refs[f] == 0 {
			m.dirtyPortSets[id] = struct{}{}
		}
		ps.refs[f]++
	})
}

func (m *model) dropPortRefs(r *compiledRule, f Family) {
	forEachNamedPort(r, func(sel *selector.Selector, name, _ string, _ bool) {
		id := portSetID(sel, r.proto, name)
		ps := m.portSets[id]
		if ps == nil {
			return
		}
		if ps.refs[f]--; ps.refs[f] <= 0 {
			delete(ps.refs, f)
			m.dirtyPortSets[id] = struct{}{}
		}
		if len(ps.refs) == 0 {
			delete(m.portSets, id)
		}
	})
}

// updatePortSets follows one endpoint's change (old or ep may be nil) in
// the port sets.
func (m *model) updatePortSets(old, ep *endpoint) {
	for id, ps := range m.portSets {
		name := ""
		if ep != nil {
			name = ep.name
		} else if old != nil {
			name = old.name
		}
		was, wasIn := ps.members[name]
		var now uint16
		nowIn := false
		if ep != nil {
			now, nowIn = ps.numberOf(ep)
		}
		switch {
		case nowIn:
			ps.members[name] = now
		default:
			delete(ps.members, name)
		}
		addrsChanged := old == nil || ep == nil || !equalPrefixes(old.addrs, ep.addrs)
		if wasIn != nowIn || was != now || (nowIn && addrsChanged) {
			m.dirtyPortSets[id] = struct{}{}
		}
	}
}

// renderPortSets writes the dirty port sets into the desired state.
func (m *model) renderPortSets() {
	for id := range m.dirtyPortSets {
		ps := m.portSets[id]
		for _, f := range m.families {
			name := portSetName(id, f)
			if ps == nil || ps.refs[f] == 0 {
				delete(m.want.sets, name)
				continue
			}
			members := map[SetMember]struct{}{}
			for epName, port := range ps.members {
				for _, a := range m.endpoints[epName].addrs {
					if prefixFamily(a) == f {
						members[SetMember{Net: a, Proto: uint8(ps.proto), Port: port}] = struct{}{}
					}
				}
			}
			m.putSet(name, f, setTypeIPPort, members)
		}
	}
	clear(m.dirtyPortSets)
}
