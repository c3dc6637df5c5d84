package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/calyx-net/calyx/internal/testutil"
)

// GoBGP's rendering of the policy decides as Policy.Accepts does: node A
// learns from a ToR T (external, with filters) and a mesh peer M, and T
// learns what A exports, each exactly the prefixes the reference
// evaluation accepts; a changed policy re-evaluates the routes held, and a
// missing filter shuts the peer out both ways. Speakers on loopback: no
// root needed.
func TestGoBGPPolicyMatchesReference(t *testing.T) {
	n := loopbackNet(3)
	port := freePort(t, n...)
	fams := []Family{IPv4Unicast, IPv6Unicast}
	a := startSpeaker(t, n[0], port, speakerOpts{families: fams})
	tor := startSpeaker(t, n[1], port, speakerOpts{asn: 65000, families: fams, policy: &Policy{}})
	m := startSpeaker(t, n[2], port, speakerOpts{families: fams, policy: &Policy{}})

	pol := Policy{
		PoolPrefixes:    []netip.Prefix{pfx("10.244.0.0/16"), pfx("fd00:10:244::/48")},
		ServicePrefixes: []netip.Prefix{pfx("10.96.0.0/12")},
		Filters: map[string]Filter{
			"f1": {
				ImportV4: []FilterRule{
					{Op: MatchIn, CIDR: pfx("203.0.113.0/24"), MinLen: 25, MaxLen: 32},
					{Accept: true, Op: MatchEqual, CIDR: pfx("203.0.113.0/24")},
				},
				ImportV6: []FilterRule{{Op: MatchNotIn, CIDR: pfx("2001:db8::/32"), MinLen: 32, MaxLen: 128}},
				ExportV4: []FilterRule{
					{Op: MatchEqual, CIDR: pfx("10.244.6.0/26")},
					{Accept: true, Op: MatchIn, CIDR: pfx("10.244.0.0/16"), MinLen: 26, MaxLen: 26},
				},
			},
			"f2": {
				ImportV4: []FilterRule{
					{Accept: true, Op: MatchEqual, CIDR: pfx("0.0.0.0/0")},
					{Op: MatchIn, CIDR: pfx("198.51.100.0/22"), MinLen: 22, MaxLen: 32},
					{Accept: true, Op: MatchNotEqual, CIDR: pfx("192.0.2.0/25")},
				},
				ExportV4: []FilterRule{{Accept: true, Op: MatchIn, CIDR: pfx("10.96.0.0/12"), MinLen: 12, MaxLen: 32}, {Op: MatchAll}},
			},
		},
	}
	torPeer := a.peerTo(tor, PeerExternal)
	torPeer.Filters = []string{"f1", "f2"}
	meshPeer := a.peerTo(m, PeerMesh)
	if err := a.SetPolicy(context.Background(), pol); err != nil {
		t.Fatal(err)
	}
	a.setPeers(t, torPeer, meshPeer)
	tor.setPeers(t, tor.peerTo(a, PeerExternal))
	m.setPeers(t, m.peerTo(a, PeerMesh))

	advs := func(s *testSpeaker, v6hop string, ps ...string) []netip.Prefix {
		var out []Advertisement
		var list []netip.Prefix
		for _, p := range ps {
			nh := s.addr
			if pfx(p).Addr().Is6() {
				nh = ip(v6hop)
			}
			out = append(out, Advertisement{Prefix: pfx(p), NextHop: nh})
			list = append(list, pfx(p))
		}
		s.advertise(t, out...)
		return list
	}
	fromTor := advs(tor, "2001:db8::2", "0.0.0.0/0", "10.0.0.0/8", "10.244.0.0/16", "10.244.7.0/26", "10.244.7.5/32",
		"203.0.113.0/24", "203.0.113.0/25", "203.0.113.7/32", "198.51.100.0/24", "192.0.2.0/24", "192.0.2.0/25",
		"100.64.0.0/10", "2001:db8:1::/48", "2001:db9::/32", "fd00:10:244:7::/64")
	fromMesh := advs(m, "fd00::3", "10.244.8.0/26", "10.244.0.0/16", "10.96.0.10/32", "172.16.0.0/16", "10.243.0.0/26",
		"fd00:10:244:8::/64", "2001:db8:2::/48")
	own := advs(a, "fd00::1", "10.244.5.0/26", "10.244.6.0/26", "10.244.5.3/32", "10.96.0.0/12", "fd00:10:244:5::/64")

	expect := func(pol *Policy) (learnedA, learnedT []netip.Prefix) {
		for _, p := range fromTor {
			if pol.Accepts(&torPeer, Import, p) {
				learnedA = append(learnedA, p)
			}
		}
		var viaMesh []netip.Prefix
		for _, p := range fromMesh {
			if pol.Accepts(&meshPeer, Import, p) && !slices.Contains(learnedA, p) {
				learnedA = append(learnedA, p)
				viaMesh = append(viaMesh, p)
			}
		}
		// A passes its own prefixes and iBGP-learned ones to the ToR,
		// never eBGP-learned ones; the ToR's own prefixes are not learned.
		for _, p := range append(slices.Clone(own), viaMesh...) {
			if pol.Accepts(&torPeer, Export, p) && !slices.Contains(fromTor, p) {
				learnedT = append(learnedT, p)
			}
		}
		return learnedA, learnedT
	}
	check := func(what string, pol *Policy) {
		t.Helper()
		wantA, wantT := expect(pol)
		testutil.Eventually(t, 20*time.Second, what+": A learns what the reference accepts", func() error {
			return samePrefixes(a.subscribed(), wantA)
		})
		testutil.Eventually(t, 20*time.Second, what+": the ToR learns what the reference exports", func() error {
			return samePrefixes(tor.subscribed(), wantT)
		})
	}
	check("initial", &pol)

	// A change of filter: re-evaluated without a session reset.
	since := func() time.Time {
		st, err := a.peerState(tor.addr)
		if err != nil {
			t.Fatal(err)
		}
		return st.Since
	}
	up := since()
	f1 := pol.Filters["f1"]
	f1.ImportV4 = f1.ImportV4[1:]
	f1.ExportV4 = []FilterRule{{Op: MatchEqual, CIDR: pfx("10.244.5.0/26")}, {Accept: true, Op: MatchAll}}
	pol.Filters = map[string]Filter{"f1": f1, "f2": pol.Filters["f2"]}
	if err := a.SetPolicy(context.Background(), pol); err != nil {
		t.Fatal(err)
	}
	check("changed filter", &pol)
	if !since().Equal(up) {
		t.Error("the ToR session was reset for a policy change")
	}

	// A filter name that does not exist: nothing in, nothing out.
	torPeer.Filters = []string{"f1", "nope"}
	if err := a.SetPeers(context.Background(), []Peer{torPeer, meshPeer}); err == nil {
		t.Error("SetPeers with a missing filter reported no error")
	}
	check("missing filter", &pol)
	if got := fmt.Sprint(tor.subscribed()); got != "map[]" {
		t.Errorf("the ToR still learns %s", got)
	}
}

func samePrefixes(got map[netip.Prefix][]netip.Addr, want []netip.Prefix) error {
	var missing, extra []netip.Prefix
	for _, p := range want {
		if _, ok := got[p]; !ok {
			missing = append(missing, p)
		}
	}
	for p := range got {
		if !slices.Contains(want, p) {
			extra = append(extra, p)
		}
	}
	if len(missing)+len(extra) > 0 {
		return fmt.Errorf("missing %v, unexpected %v", missing, extra)
	}
	return nil
}
