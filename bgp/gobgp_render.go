package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// The dynamic part of the GoBGP policies: import safety and the peers'
// BGPFilters (Policy.Accepts says what they mean). They are rendered as
// one import and one export policy of generation N, with defined sets
// named after it; a change installs generation N+1, points the global
// assignments at it, deletes generation N and has GoBGP re-evaluate what
// it holds (soft reset in and out), so that no moment runs without the
// safety statements.

// rendered is one generation's GoBGP objects.
type rendered struct {
	sets     []*api.DefinedSet
	imp, exp *api.Policy
}

type renderer struct {
	gen int
	r   rendered
	n   int // name counter
}

func (x *renderer) name(kind string) string {
	x.n++
	return fmt.Sprintf("calyx-g%d-%s-%d", x.gen, kind, x.n)
}

func (x *renderer) neighborSet(addrs []netip.Addr) string {
	name := x.name("nbr")
	list := make([]string, len(addrs))
	for i, a := range addrs {
		list[i] = netip.PrefixFrom(a, a.BitLen()).String()
	}
	x.r.sets = append(x.r.sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: name, List: list})
	return name
}

// prefixSet holds prefixes of one family with their length ranges.
func (x *renderer) prefixSet(ps []netip.Prefix, lo, hi func(netip.Prefix) int) string {
	name := x.name("pfx")
	out := make([]*api.Prefix, len(ps))
	for i, p := range ps {
		out[i] = &api.Prefix{IpPrefix: p.String(), MaskLengthMin: uint32(lo(p)), MaskLengthMax: uint32(hi(p))}
	}
	x.r.sets = append(x.r.sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name, Prefixes: out})
	return name
}

func ownLen(p netip.Prefix) int  { return p.Bits() }
func longest(p netip.Prefix) int { return p.Addr().BitLen() }
func familyPrefixes(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			out = append(out, p)
		}
	}
	return out
}

func (x *renderer) stmt(pol *api.Policy, c *api.Conditions, accept bool) {
	a := api.RouteAction_ROUTE_ACTION_REJECT
	if accept {
		a = api.RouteAction_ROUTE_ACTION_ACCEPT
	}
	pol.Statements = append(pol.Statements, &api.Statement{Name: x.name("st"), Conditions: c, Actions: &api.Actions{RouteAction: a}})
}

func matchAny(name string) *api.MatchSet {
	return &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: name}
}
func matchInvert(name string) *api.MatchSet {
	return &api.MatchSet{Type: api.MatchSet_TYPE_INVERT, Name: name}
}

// render builds generation gen for the peers and the policy. The returned
// error lists peers whose filters are missing (they reject everything).
func render(gen int, pol *Policy, peers []Peer) (rendered, error) {
	x := &renderer{gen: gen}
	x.r.imp = &api.Policy{Name: fmt.Sprintf("calyx-g%d-import", gen)}
	x.r.exp = &api.Policy{Name: fmt.Sprintf("calyx-g%d-export", gen)}
	var external, cluster []netip.Addr
	for _, p := range peers {
		if p.isCluster() {
			cluster = append(cluster, p.Address)
		} else {
			external = append(external, p.Address)
		}
	}
	allowed := append(slices.Clone(pol.PoolPrefixes), pol.ServicePrefixes...)
	for _, v6 := range []bool{false, true} {
		fam := []*api.Family{apiFamily(IPv4Unicast)}
		if v6 {
			fam = []*api.Family{apiFamily(IPv6Unicast)}
		}
		if pools := familyPrefixes(pol.PoolPrefixes, v6); len(external) > 0 && len(pools) > 0 {
			x.stmt(x.r.imp, &api.Conditions{NeighborSet: matchAny(x.neighborSet(external)),
				PrefixSet: matchAny(x.prefixSet(pools, ownLen, longest))}, false)
		}
		if len(cluster) > 0 {
			c := &api.Conditions{NeighborSet: matchAny(x.neighborSet(cluster)), AfiSafiIn: fam}
			if ok := familyPrefixes(allowed, v6); len(ok) > 0 {
				c.PrefixSet = matchInvert(x.prefixSet(ok, ownLen, longest))
			}
			x.stmt(x.r.imp, c, false)
		}
	}
	var missing []string
	for _, p := range peers {
		if len(p.Filters) == 0 {
			continue
		}
		nbr := matchAny(x.neighborSet([]netip.Addr{p.Address}))
		if m := pol.missingFilters(&p); len(m) > 0 {
			missing = append(missing, fmt.Sprintf("peer %s: BGPFilter %s not found: importing and exporting nothing", p.Address, strings.Join(m, ", ")))
			x.stmt(x.r.imp, &api.Conditions{NeighborSet: nbr}, false)
			x.stmt(x.r.exp, &api.Conditions{NeighborSet: nbr}, false)
			continue
		}
		for _, name := range p.Filters {
			f := pol.Filters[name]
			for _, dir := range []Direction{Import, Export} {
				target := x.r.imp
				if dir == Export {
					target = x.r.exp
				}
				for _, v6 := range []bool{false, true} {
					fam := IPv4Unicast
					if v6 {
						fam = IPv6Unicast
					}
					for _, rule := range f.rules(dir, v6) {
						x.stmt(target, x.ruleConditions(nbr, fam, rule), rule.Accept)
					}
				}
			}
		}
	}
	return x.r, errors.Join(errorsOf(missing)...)
}

func errorsOf(msgs []string) []error {
	out := make([]error, len(msgs))
	for i, m := range msgs {
		out[i] = errors.New(m)
	}
	return out
}

// ruleConditions renders one filter rule: In is the CIDR with the length
// range, Equal the CIDR at its own length; NotIn and NotEqual invert them.
// GoBGP's prefix match is false for a path of the other family, inverted
// or not, and AfiSafiIn keeps a rule without CIDR to its family.
func (x *renderer) ruleConditions(nbr *api.MatchSet, fam Family, r FilterRule) *api.Conditions {
	c := &api.Conditions{NeighborSet: nbr, AfiSafiIn: []*api.Family{apiFamily(fam)}}
	lo, hi := func(netip.Prefix) int { return r.MinLen }, func(netip.Prefix) int { return r.MaxLen }
	switch r.Op {
	case MatchIn:
		c.PrefixSet = matchAny(x.prefixSet([]netip.Prefix{r.CIDR}, lo, hi))
	case MatchNotIn:
		c.PrefixSet = matchInvert(x.prefixSet([]netip.Prefix{r.CIDR}, lo, hi))
	case MatchEqual:
		c.PrefixSet = matchAny(x.prefixSet([]netip.Prefix{r.CIDR}, ownLen, ownLen))
	case MatchNotEqual:
		c.PrefixSet = matchInvert(x.prefixSet([]netip.Prefix{r.CIDR}, ownLen, ownLen))
	}
	return c
}

// policyKey identifies what the policy part of a rendering depends on;
// peerKey what one peer's part does.
func policyKey(pol *Policy) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%v|%v|", pol.PoolPrefixes, pol.ServicePrefixes)
	names := make([]string, 0, len(pol.Filters))
	for n := range pol.Filters {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%v;", n, pol.Filters[n])
	}
	return b.String()
}

func peerKey(p *Peer) string { return fmt.Sprintf("%v %v", p.isCluster(), p.Filters) }

// install puts generation gen in place of the previous one (if any) and
// has GoBGP re-evaluate every path against it.
func install(ctx context.Context, srv *server.BgpServer, r, prev *rendered) error {
	for _, s := range r.sets {
		if err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: s}); err != nil {
			return fmt.Errorf("defined set %s: %w", s.Name, err)
		}
	}
	for _, p := range []*api.Policy{r.imp, r.exp} {
		if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: p}); err != nil {
			return fmt.Errorf("policy %s: %w", p.Name, err)
		}
	}
	if err := assign(ctx, srv, r); err != nil {
		return err
	}
	if prev != nil {
		for _, p := range []*api.Policy{prev.imp, prev.exp} {
			if err := srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: p.Name}, All: true}); err != nil {
				return fmt.Errorf("deleting policy %s: %w", p.Name, err)
			}
		}
		for _, s := range prev.sets {
			if err := srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{DefinedType: s.DefinedType, Name: s.Name}, All: true}); err != nil {
				return fmt.Errorf("deleting defined set %s: %w", s.Name, err)
			}
		}
	}
	return nil
}

// assign points the global import and export assignments at the static
// policies followed by r's.
func assign(ctx context.Context, srv *server.BgpServer, r *rendered) error {
	for _, a := range []struct {
		dir    api.PolicyDirection
		static string
		dyn    *api.Policy
	}{
		{api.PolicyDirection_POLICY_DIRECTION_IMPORT, importPolicyName, r.imp},
		{api.PolicyDirection_POLICY_DIRECTION_EXPORT, exportPolicyName, r.exp},
	} {
		err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          "global",
			Direction:     a.dir,
			Policies:      []*api.Policy{{Name: a.static}, {Name: a.dyn.Name}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
		}})
		if err != nil {
			return fmt.Errorf("assigning %s: %w", a.dyn.Name, err)
		}
	}
	return nil
}

func (b *goBGP) SetPolicy(ctx context.Context, pol Policy) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if _, err := b.serverLocked(); err != nil {
		return fmt.Errorf("bgp set policy: %w", err)
	}
	pol.PoolPrefixes = slices.Clone(pol.PoolPrefixes)
	pol.ServicePrefixes = slices.Clone(pol.ServicePrefixes)
	sortPrefixes(pol.PoolPrefixes)
	sortPrefixes(pol.ServicePrefixes)
	b.policy = pol
	peers := make([]Peer, 0, len(b.peers))
	for _, p := range b.peers {
		peers = append(peers, p)
	}
	if err := b.applyPolicyLocked(ctx, peers); err != nil {
		return fmt.Errorf("bgp set policy: %w", err)
	}
	return nil
}

func sortPrefixes(ps []netip.Prefix) {
	slices.SortFunc(ps, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
}

// applyPolicyLocked renders the policy for peers (the sessions that are to
// exist) and, if that changed anything, installs it and has GoBGP
// re-evaluate: every peer when the pools, services or filters changed,
// else the peers whose own part changed. A peer that is new needs none: its
// session starts after the policy knows it.
func (b *goBGP) applyPolicyLocked(ctx context.Context, peers []Peer) error {
	slices.SortFunc(peers, func(x, y Peer) int { return x.Address.Compare(y.Address) })
	pk := policyKey(&b.policy)
	keys := make(map[netip.Addr]string, len(peers))
	var changed []netip.Addr
	for i := range peers {
		k := peerKey(&peers[i])
		keys[peers[i].Address] = k
		if old, had := b.peerDone[peers[i].Address]; had && old != k {
			changed = append(changed, peers[i].Address)
		}
	}
	same := b.rend != nil && pk == b.policyDone && len(keys) == len(b.peerDone) && len(changed) == 0
	if same {
		for a := range keys {
			if _, ok := b.peerDone[a]; !ok {
				same = false
				break
			}
		}
	}
	if same {
		return nil
	}
	r, missing := render(b.gen+1, &b.policy, peers)
	if err := install(ctx, b.srv, &r, b.rend); err != nil {
		return err
	}
	all := b.rend != nil && pk != b.policyDone
	b.gen++
	b.rend, b.policyDone, b.peerDone = &r, pk, keys
	switch {
	case all && len(peers) > 0:
		changed = []netip.Addr{{}}
	case all:
		changed = nil
	}
	for _, a := range changed {
		addr := "all"
		if a.IsValid() {
			addr = a.String()
		}
		err := b.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr, Soft: true, Direction: api.ResetPeerRequest_DIRECTION_BOTH})
		if err != nil {
			b.log.Warn("bgp: re-evaluating routes against the new policy", "peer", addr, "err", err)
		}
	}
	b.log.Debug("bgp policy installed", "generation", b.gen, "peers", len(peers), "reevaluated", len(changed))
	if missing != nil {
		b.log.Error("bgp: peers name BGPFilters that do not exist", "err", missing)
	}
	return missing
}
