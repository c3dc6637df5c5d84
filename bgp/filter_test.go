package bgp

import (
	"net/netip"
	"testing"
)

func TestFilterRuleMatches(t *testing.T) {
	in := FilterRule{Op: MatchIn, CIDR: pfx("10.244.0.0/16"), MinLen: 24, MaxLen: 28}
	for _, tc := range []struct {
		r    FilterRule
		p    string
		want bool
	}{
		{in, "10.244.1.0/24", true},
		{in, "10.244.1.16/28", true},
		{in, "10.244.1.1/32", false}, // longer than max
		{in, "10.244.0.0/16", false}, // shorter than min
		{in, "10.245.0.0/24", false}, // outside
		{in, "10.0.0.0/8", false},    // covering, not inside
		{FilterRule{Op: MatchNotIn, CIDR: in.CIDR, MinLen: 24, MaxLen: 28}, "10.244.1.1/32", true},
		{FilterRule{Op: MatchNotIn, CIDR: in.CIDR, MinLen: 24, MaxLen: 28}, "10.244.1.0/24", false},
		{FilterRule{Op: MatchEqual, CIDR: pfx("0.0.0.0/0")}, "0.0.0.0/0", true},
		{FilterRule{Op: MatchEqual, CIDR: pfx("0.0.0.0/0")}, "10.0.0.0/8", false},
		{FilterRule{Op: MatchNotEqual, CIDR: pfx("0.0.0.0/0")}, "10.0.0.0/8", true},
		{FilterRule{Op: MatchAll}, "192.0.2.0/24", true},
	} {
		if got := tc.r.Matches(pfx(tc.p)); got != tc.want {
			t.Errorf("%+v matches %s = %v, want %v", tc.r, tc.p, got, tc.want)
		}
	}
}

func TestPolicyAccepts(t *testing.T) {
	pol := Policy{
		PoolPrefixes:    []netip.Prefix{pfx("10.244.0.0/16")},
		ServicePrefixes: []netip.Prefix{pfx("10.96.0.0/12")},
		Filters: map[string]Filter{
			"no-long": {ImportV4: []FilterRule{{Op: MatchIn, CIDR: pfx("0.0.0.0/0"), MinLen: 25, MaxLen: 32}}},
			"default-only": {ImportV4: []FilterRule{
				{Accept: true, Op: MatchEqual, CIDR: pfx("0.0.0.0/0")},
				{Op: MatchAll},
			}},
		},
	}
	tor := &Peer{Type: PeerExternal, Filters: []string{"no-long", "default-only"}}
	mesh := &Peer{Type: PeerMesh}
	for _, tc := range []struct {
		peer *Peer
		dir  Direction
		p    string
		want bool
	}{
		// Import safety, external: nothing inside a pool, covering is fine.
		{tor, Import, "10.244.1.0/26", false},
		{tor, Import, "10.244.0.0/16", false},
		{tor, Import, "0.0.0.0/0", true},
		// Filters in order: the first matching rule decides.
		{tor, Import, "203.0.113.0/25", false}, // no-long
		{tor, Import, "203.0.113.0/24", false}, // default-only's catch-all
		// Cluster peers: pools and services only.
		{mesh, Import, "10.244.1.0/26", true},
		{mesh, Import, "10.96.0.10/32", true},
		{mesh, Import, "10.0.0.0/8", false},
		{mesh, Import, "0.0.0.0/0", false},
		// Export: no safety, no filters here.
		{mesh, Export, "10.0.0.0/8", true},
		{tor, Export, "10.244.1.0/26", true},
		// A missing filter rejects everything.
		{&Peer{Type: PeerExternal, Filters: []string{"nope"}}, Import, "0.0.0.0/0", false},
		{&Peer{Type: PeerExternal, Filters: []string{"nope"}}, Export, "10.244.1.0/26", false},
	} {
		if got := pol.Accepts(tc.peer, tc.dir, pfx(tc.p)); got != tc.want {
			t.Errorf("%v %d %s = %v, want %v", tc.peer.Type, tc.dir, tc.p, got, tc.want)
		}
	}
}
