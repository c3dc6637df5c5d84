package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/calyx-net/calyx/datastore"
)

// endpoint is a workload endpoint as the model needs it.
type endpoint struct {
	name   string
	local  bool
	ifname string // local endpoints only
	// own are the endpoint's own labels, packed; prof the labels of its
	// profiles, in order (m.profiles' maps, nil for one not there): what
	// selectors see is own with prof's applied over it (Get).
	own  labelSet
	prof []map[string]string
	// profiles are the Profiles whose labels it inherits.
	profiles []string
	ports    []datastore.EndpointPort // named ports
	addrs    []netip.Prefix           // host prefixes, sorted
	// policies are the names of the policies whose selector matches this
	// (local) endpoint, whatever their direction.
	policies map[string]struct{}
}

type pool struct {
	cidr netip.Prefix
	masq bool
}

// model holds the desired state, the selector index and what changed since
// the last refresh. It is not safe for concurrent use; Dataplane locks it.
type model struct {
	cfg       *Config
	families  []Family
	policies  map[string]*compiledPolicy
	endpoints map[string]*endpoint
	ifaces    map[string]string // local interface name -> endpoint name
	pools     []pool
	// selSets and netSets are the sets the rules of active policies use
	// (see setrefs.go): a policy selecting no local endpoint holds none.
	selSets  map[string]*selSet    // by selector UniqueID
	netSets  map[string]*netSetRef // by set name
	portSets map[string]*portSet   // by portSetID
	// profiles are the labels each Profile applies. (No index of the
	// endpoints naming each: a namespace's labels change rarely, and a
	// scan of 100k endpoints takes milliseconds, where the index took
	// ~30 bytes per endpoint.)
	profiles map[string]map[string]string
	sels     selectorCache
	// policyUse counts the local endpoints each policy selects: only
	// policies in use on this node (active) get chains and sets.
	policyUse map[string]int
	// refsHeld is, per active policy, the compiled version whose rules'
	// set references are counted in selSets and netSets.
	refsHeld map[string]*compiledPolicy
	// selected holds the local interfaces whose endpoint some policy
	// selects: only they get cx-fw-/cx-tw- chains and a dispatch entry.
	// Every other local endpoint is open and lives in the open sets.
	selected map[string]struct{}

	dirtyPolicies map[string]struct{}
	dirtyIfaces   map[string]struct{}
	dirtySelSets  map[string]struct{}
	dirtyNetSets  map[string]struct{}
	dirtyPortSets map[string]struct{}
	dispatchDirty bool
	poolsDirty    bool
	openDirty     bool

	want wantState
}

// wantState is the rendered desired state.
type wantState struct {
	chains map[Family]map[Table]map[string]*Chain
	sets   map[string]*IPSet
	setGen uint64
}

func newModel(cfg *Config) *model {
	m := &model{
		cfg:           cfg,
		families:      []Family{V4},
		policies:      map[string]*compiledPolicy{},
		endpoints:     map[string]*endpoint{},
		ifaces:        map[string]string{},
		selSets:       map[string]*selSet{},
		netSets:       map[string]*netSetRef{},
		portSets:      map[string]*portSet{},
		profiles:      map[string]map[string]string{},
		dirtyPortSets: map[string]struct{}{},
		policyUse:     map[string]int{},
		refsHeld:      map[string]*compiledPolicy{},
		selected:      map[string]struct{}{},
		dirtyPolicies: map[string]struct{}{},
		dirtyIfaces:   map[string]struct{}{},
		dirtySelSets:  map[string]struct{}{},
		dirtyNetSets:  map[string]struct{}{},
		dispatchDirty: true,
		poolsDirty:    true,
		openDirty:     true,
		want: wantState{
			chains: map[Family]map[Table]map[string]*Chain{},
			sets:   map[string]*IPSet{},
		},
	}
	if cfg.IPv6 {
		m.families = append(m.families, V6)
	}
	for _, f := range m.families {
		byTable := map[Table]map[string]*Chain{}
		for t, chains := range renderStatic(cfg, f) {
			byTable[t] = map[string]*Chain{}
			for _, c := range chains {
				byTable[t][c.Name] = c
			}
		}
		m.want.chains[f] = byTable
	}
	return m
}

// ---- policies ----------------------------------------------------------------

func (m *model) setPolicy(p *datastore.Policy) error {
	cp, err := compilePolicy(p, &m.sels)
	if err != nil {
		return err
	}
	old := m.policies[cp.name]
	m.policies[cp.name] = cp
	// Marked dirty, the policy's set references follow at the next
	// refresh (syncSetRefs), once it is known whether it is active.
	m.dirtyPolicies[cp.name] = struct{}{}
	// Which endpoints' chains change: only when what decides "applies to
	// whom, in which order" changed. A change of rules alone rewrites the
	// policy's own chains and nothing else.
	if old != nil && old.selector.String() == cp.selector.String() && old.order == cp.order && old.applies == cp.applies {
		return nil
	}
	reordered := old != nil && (old.order != cp.order || old.applies != cp.applies)
	for _, ep := range m.endpoints {
		if !ep.local {
			continue
		}
		_, was := ep.policies[cp.name]
		now := cp.selector.EvaluateLabels(ep)
		switch {
		case was != now:
			if now {
				ep.policies[cp.name] = struct{}{}
				m.usePolicy(cp.name, +1)
			} else {
				delete(ep.policies, cp.name)
				m.usePolicy(cp.name, -1)
			}
			m.dirtyIfaces[ep.ifname] = struct{}{}
		case now && reordered:
			m.dirtyIfaces[ep.ifname] = struct{}{}
		}
	}
	return nil
}

func (m *model) deletePolicy(name string) {
	old := m.policies[name]
	if old == nil {
		return
	}
	delete(m.policies, name)
	m.dirtyPolicies[name] = struct{}{} // its set references go at the next refresh
	for _, ep := range m.endpoints {
		if _, ok := ep.policies[name]; ok {
			delete(ep.policies, name)
			m.dirtyIfaces[ep.ifname] = struct{}{}
		}
	}
	delete(m.policyUse, name)
}

// usePolicy counts a local endpoint more or less for a policy; its chains
// and the sets its rules use appear and go when the count leaves or
// reaches zero.
func (m *model) usePolicy(name string, delta int) {
	before := m.policyUse[name]
	after := before + delta
	if after <= 0 {
		delete(m.policyUse, name)
	} else {
		m.policyUse[name] = after
	}
	if (before > 0) != (after > 0) {
		m.dirtyPolicies[name] = struct{}{}
	}
}

// ---- endpoints ---------------------------------------------------------------

func (m *model) setEndpoint(w *datastore.WorkloadEndpoint) error {
	name := w.Metadata.Name
	if name == "" {
		return fmt.Errorf("workload endpoint without a name")
	}
	ep := &endpoint{
		name:     name,
		local:    w.Spec.Node == m.cfg.NodeName,
		own:      packLabels(w.Metadata.Labels),
		profiles: slices.Clone(w.Spec.Profiles),
		ports:    slices.Clone(w.Spec.Ports),
	}
	ep.prof = m.profileLabels(ep.profiles)
	for _, s := range w.Spec.IPNetworks {
		p, err := parsePrefix(s)
		if err != nil || !p.IsSingleIP() {
			return fmt.Errorf("workload endpoint %q: ipNetworks: %q is not a single address", name, s)
		}
		ep.addrs = append(ep.addrs, p)
	}
	slices.SortFunc(ep.addrs, comparePrefix)
	ep.addrs = slices.Compact(ep.addrs)
	if ep.local {
		ep.ifname = w.Spec.InterfaceName
		if err := m.cfg.checkInterfaceName(ep.ifname); err != nil {
			return fmt.Errorf("workload endpoint %q: %w", name, err)
		}
		if other, ok := m.ifaces[ep.ifname]; ok && other != name {
			return fmt.Errorf("workload endpoint %q: interface %s already belongs to endpoint %q", name, ep.ifname, other)
		}
	}
	m.putEndpoint(ep)
	return nil
}

// Get is a label as selectors see it: the last of the endpoint's profiles
// that has it wins (a pod cannot pose as another namespace), else its own.
func (ep *endpoint) Get(key string) (string, bool) {
	for i := len(ep.prof) - 1; i >= 0; i-- {
		if v, ok := ep.prof[i][key]; ok {
			return v, true
		}
	}
	return ep.own.get(key)
}

// profileLabels are the label maps of the named profiles, in order.
func (m *model) profileLabels(names []string) []map[string]string {
	if len(names) == 0 {
		return nil
	}
	out := make([]map[string]string, len(names))
	for i, p := range names {
		out[i] = m.profiles[p]
	}
	return out
}

// setProfile stores a Profile's labels and re-evaluates the endpoints
// that inherit them: one write per namespace label change, not one per
// endpoint.
func (m *model) setProfile(name string, labels map[string]string) {
	if old, ok := m.profiles[name]; ok && maps.Equal(old, labels) {
		return
	}
	if labels == nil {
		delete(m.profiles, name)
	} else {
		m.profiles[name] = maps.Clone(labels)
	}
	var users []*endpoint
	for _, ep := range m.endpoints {
		if slices.Contains(ep.profiles, name) {
			users = append(users, ep)
		}
	}
	for _, old := range users {
		ep := *old
		ep.prof = m.profileLabels(ep.profiles)
		ep.policies = nil
		m.putEndpoint(&ep)
	}
}

// putEndpoint puts a checked endpoint in place of the one of its name.
func (m *model) putEndpoint(ep *endpoint) {
	name := ep.name
	old := m.endpoints[name]
	m.endpoints[name] = ep
	m.updatePortSets(old, ep)
	addrsChanged := old == nil || !equalPrefixes(old.addrs, ep.addrs)
	if ep.local || (old != nil && old.local) {
		m.openDirty = true
	}

	// Only the selectors of active policies' rules are indexed: an endpoint
	// anywhere in the cluster costs this node nothing for the others.
	for id, ss := range m.selSets {
		_, was := ss.members[name]
		now := ss.sel.EvaluateLabels(ep)
		if was != now {
			if now {
				ss.members[name] = struct{}{}
			} else {
				delete(ss.members, name)
			}
			m.dirtySelSets[id] = struct{}{}
		} else if now && addrsChanged {
			m.dirtySelSets[id] = struct{}{}
		}
	}

	if old != nil {
		for pname := range old.policies {
			m.usePolicy(pname, -1)
		}
	}
	if old != nil && old.local && (!ep.local || old.ifname != ep.ifname) {
		delete(m.ifaces, old.ifname)
		m.dirtyIfaces[old.ifname] = struct{}{}
	}
	if !ep.local {
		return
	}
	if old == nil || !old.local || old.ifname != ep.ifname {
		m.ifaces[ep.ifname] = name
		m.dirtyIfaces[ep.ifname] = struct{}{}
	}
	ep.policies = map[string]struct{}{}
	for pname, cp := range m.policies {
		if cp.selector.EvaluateLabels(ep) {
			ep.policies[pname] = struct{}{}
			m.usePolicy(pname, +1)
		}
	}
	if old == nil || !maps.Equal(old.policies, ep.policies) {
		m.dirtyIfaces[ep.ifname] = struct{}{}
	}
}

func (m *model) deleteEndpoint(name string) {
	old := m.endpoints[name]
	if old == nil {
		return
	}
	delete(m.endpoints, name)
	m.updatePortSets(old, nil)
	for id, ss := range m.selSets {
		if _, ok := ss.members[name]; ok {
			delete(ss.members, name)
			m.dirtySelSets[id] = struct{}{}
		}
	}
	for pname := range old.policies {
		m.usePolicy(pname, -1)
	}
	if old.local {
		delete(m.ifaces, old.ifname)
		m.dirtyIfaces[old.ifname] = struct{}{}
	}
}

// ---- pools -------------------------------------------------------------------

func (m *model) setPools(pools []*datastore.IPPool) error {
	var out []pool
	for _, p := range pools {
		pr, err := netip.ParsePrefix(p.Spec.CIDR)
		if err != nil {
			return fmt.Errorf("IP pool %q: cidr %q: %w", p.Metadata.Name, p.Spec.CIDR, err)
		}
		out = append(out, pool{cidr: pr.Masked(), masq: p.Spec.NATOutgoing})
	}
	m.pools = out
	m.poolsDirty = true
	return nil
}

// ---- refresh: dirty model -> rendered desired state ----------------------------

// refresh re-renders what changed since the last call into m.want. Sets
// and the chains that use them change in the same refresh, so one Apply
// creates and fills a set before the chain that refers to it and deletes
// the chain before the set.
func (m *model) refresh() {
	m.syncSetRefs()
	for ifname := range m.dirtyIfaces {
		_, was := m.selected[ifname]
		now := m.ifaceSelected(ifname)
		if now {
			m.selected[ifname] = struct{}{}
		} else {
			delete(m.selected, ifname)
		}
		if was != now {
			m.dispatchDirty = true
		}
		m.openDirty = true
	}
	for _, f := range m.families {
		filter := m.want.chains[f][TableFilter]
		for name := range m.dirtyPolicies {
			cp := m.policies[name]
			for _, dir := range []direction{ingress, egress} {
				cname := policyChainName(name, dir)
				if cp == nil || !cp.applies[dir] || m.policyUse[name] == 0 {
					delete(filter, cname)
					continue
				}
				filter[cname] = renderPolicyChain(m.cfg, cp, dir, f)
			}
		}
		for ifname := range m.dirtyIfaces {
			_, selected := m.selected[ifname]
			for _, dir := range []direction{ingress, egress} {
				cname := endpointChainName(ifname, dir)
				if !selected {
					delete(filter, cname) // gone, or open: the open sets cover it
					continue
				}
				ep := m.endpoints[m.ifaces[ifname]]
				filter[cname] = renderEndpointChain(m.cfg, ifname, dir, m.endpointPolicies(ep, dir))
			}
		}
		if m.dispatchDirty {
			for name := range filter {
				if isDispatchChain(name) {
					delete(filter, name)
				}
			}
			ifaces := sortedIfaces(slices.Collect(maps.Keys(m.selected)))
			for _, dir := range []direction{ingress, egress} {
				for _, c := range renderDispatch(m.cfg, f, ifaces, dir) {
					filter[c.Name] = c
				}
			}
		}
	}
	for id := range m.dirtySelSets {
		ss := m.selSets[id]
		for _, f := range m.families {
			name := selectorSetName(id, f)
			if ss == nil || ss.refs[f] == 0 {
				delete(m.want.sets, name) // no rule of an active policy uses it in f
				continue
			}
			members := map[SetMember]struct{}{}
			for epName := range ss.members {
				for _, a := range m.endpoints[epName].addrs {
					if prefixFamily(a) == f {
						members[netMember(a)] = struct{}{}
					}
				}
			}
			m.putSet(name, f, setTypeNet, members)
		}
	}
	m.renderPortSets()
	for name := range m.dirtyNetSets {
		ns := m.netSets[name]
		if ns == nil {
			delete(m.want.sets, name)
			continue
		}
		members := map[SetMember]struct{}{}
		for _, p := range ns.nets {
			members[netMember(p)] = struct{}{}
		}
		m.putSet(name, ns.family, setTypeNet, members)
	}
	if m.poolsDirty {
		for _, f := range m.families {
			all, masq := map[SetMember]struct{}{}, map[SetMember]struct{}{}
			for _, p := range m.pools {
				if prefixFamily(p.cidr) != f {
					continue
				}
				all[netMember(p.cidr)] = struct{}{}
				if p.masq {
					masq[netMember(p.cidr)] = struct{}{}
				}
			}
			m.putSet(familySetName(setPoolsAll, f), f, setTypeNet, all)
			m.putSet(familySetName(setPoolsMasq, f), f, setTypeNet, masq)
		}
	}
	if m.openDirty {
		for _, f := range m.families {
			m.putSet(familySetName(setOpenWL, f), f, setTypeNetIface, m.openMembers(f))
		}
	}
	clear(m.dirtyPolicies)
	clear(m.dirtyIfaces)
	clear(m.dirtySelSets)
	clear(m.dirtyNetSets)
	m.dispatchDirty, m.poolsDirty, m.openDirty = false, false, false
}

// putSet stores a set's members, bumping its generation only when they
// changed.
func (m *model) putSet(name string, f Family, typ string, members map[SetMember]struct{}) {
	if old := m.want.sets[name]; old != nil && maps.Equal(old.Members, members) {
		return
	}
	m.want.setGen++
	m.want.sets[name] = &IPSet{Name: name, Family: f, Type: typ, Members: members, gen: m.want.setGen}
}

// ifaceSelected reports whether a local interface's endpoint is selected by
// at least one policy, in either direction.
func (m *model) ifaceSelected(ifname string) bool {
	epName, ok := m.ifaces[ifname]
	if !ok {
		return false
	}
	for pname := range m.endpoints[epName].policies {
		if cp := m.policies[pname]; cp != nil && (cp.applies[ingress] || cp.applies[egress]) {
			return true
		}
	}
	return false
}

// linkScopesV6 are the IPv6 addresses besides its own that an open
// endpoint's traffic may carry on its interface: link-local sources (to
// the host) and link-local or multicast destinations (from the host, e.g.
// neighbour solicitations when the host's traffic is policed). Its former
// per-interface chain let them through; the open entries must as well.
var linkScopesV6 = []netip.Prefix{netip.MustParsePrefix("fe80::/10"), netip.MustParsePrefix("ff00::/8")}

// openMembers lists the (address, interface) entries of every local
// endpoint that no policy selects, in one family.
func (m *model) openMembers(f Family) map[SetMember]struct{} {
	members := map[SetMember]struct{}{}
	for ifname, epName := range m.ifaces {
		if _, sel := m.selected[ifname]; sel {
			continue
		}
		for _, mb := range openEntries(m.endpoints[epName], f) {
			members[mb] = struct{}{}
		}
	}
	return members
}

// openEntries are one open local endpoint's entries in the open set of f.
func openEntries(ep *endpoint, f Family) []SetMember {
	var out []SetMember
	for _, a := range ep.addrs {
		if prefixFamily(a) == f {
			out = append(out, SetMember{Net: a, Iface: ep.ifname})
		}
	}
	if f == V6 {
		for _, p := range linkScopesV6 {
			out = append(out, SetMember{Net: p, Iface: ep.ifname})
		}
	}
	return out
}

// endpointPolicies lists, in order, the policies applying to a local
// endpoint in one direction.
func (m *model) endpointPolicies(ep *endpoint, dir direction) []string {
	ps := make([]*compiledPolicy, 0, len(ep.policies))
	for name := range ep.policies {
		ps = append(ps, m.policies[name])
	}
	return sortedPolicies(ps, dir)
}

func isDispatchChain(name string) bool {
	return hasPrefix(name, chainFromDisp) || hasPrefix(name, chainToDisp)
}

func hasPrefix(s, p string) bool { return len(s) >= len(p) && s[:len(p)] == p }

func equalPrefixes(a, b []netip.Prefix) bool { return slices.Equal(a, b) }
