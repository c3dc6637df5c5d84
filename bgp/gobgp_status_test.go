package bgp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// A dual-stack speaker configures both families on every session; a peer
// that negotiated only one (an IPv4 session to a ToR with an ipv4 channel
// only) must not have the other family's announcements counted.
func TestStatusCountsNegotiatedFamiliesOnly(t *testing.T) {
	v4 := apiFamily(IPv4Unicast)
	v6 := apiFamily(IPv6Unicast)
	mp := func(f *api.Family) *api.Capability {
		return &api.Capability{Cap: &api.Capability_MultiProtocol{MultiProtocol: &api.MultiProtocolCapability{Family: f}}}
	}
	afi := func(f *api.Family, received uint64, grReceived bool) *api.AfiSafi {
		return &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: f, Enabled: true},
			State:             &api.AfiSafiState{Family: f, Enabled: true, Received: received, Accepted: received},
			MpGracefulRestart: &api.MpGracefulRestart{State: &api.MpGracefulRestartState{Received: grReceived}},
		}
	}
	peer := func(caps ...*api.Capability) *api.Peer {
		return &api.Peer{
			State:           &api.PeerState{SessionState: api.PeerState_SESSION_STATE_ESTABLISHED, RemoteCap: caps},
			GracefulRestart: &api.GracefulRestart{Enabled: true},
			AfiSafis:        []*api.AfiSafi{afi(v4, 1, true), afi(v6, 0, false)},
		}
	}
	// 3 IPv4 announcements and 1 IPv6 one.
	own := []netip.Prefix{pfx("10.244.1.0/26"), pfx("10.244.2.0/26"), pfx("10.96.0.0/12"), pfx("fd00:10:244::/122")}
	cases := []struct {
		name string
		ap   *api.Peer
		want uint64
	}{
		{"IPv4 negotiated only", peer(mp(v4)), 3},
		{"no multiprotocol capability: IPv4 only", peer(), 3},
		{"both negotiated", peer(mp(v4), mp(v6)), 4},
	}
	for _, c := range cases {
		var st PeerStatus
		fillStatus(&st, c.ap)
		adv := originatedTo(&Policy{}, &Peer{Type: PeerExternal}, own, remoteFamilies(c.ap))
		if adv != c.want || st.PrefixesReceived != 1 || !st.GracefulRestart {
			t.Errorf("%s: advertised %d, received %d, GR %v; want %d, 1 and GR", c.name, adv, st.PrefixesReceived, st.GracefulRestart, c.want)
		}
	}
}

// A peer's export filters decide which of the node's announcements count
// as advertised to it.
func TestOriginatedToFollowsExportFilters(t *testing.T) {
	pol := &Policy{Filters: map[string]Filter{"no-svc": {ExportV4: []FilterRule{{Op: MatchIn, CIDR: pfx("10.96.0.0/12"), MinLen: 12, MaxLen: 32}}}}}
	own := []netip.Prefix{pfx("10.244.1.0/26"), pfx("10.96.0.0/12"), pfx("10.96.0.10/32")}
	fams := map[Family]bool{IPv4Unicast: true}
	if n := originatedTo(pol, &Peer{Type: PeerExternal, Filters: []string{"no-svc"}}, own, fams); n != 1 {
		t.Errorf("with an export filter rejecting the service range: %d advertised, want 1", n)
	}
	if n := originatedTo(pol, &Peer{Type: PeerExternal, Filters: []string{"missing"}}, own, fams); n != 0 {
		t.Errorf("with a missing filter (export nothing): %d advertised, want 0", n)
	}
	if n := originatedTo(pol, &Peer{Type: PeerMesh}, own, fams); n != 3 {
		t.Errorf("without filters: %d advertised, want 3", n)
	}
}

// The peer list of a large table is reused until a session changes or its
// time is up; a small table's is never reused.
func TestPeerCacheReusesOnlyCostlyLists(t *testing.T) {
	srv := server.NewBgpServer()
	go srv.Serve()
	defer srv.Stop()
	ctx := context.Background()
	held := map[netip.Addr]*api.Peer{netip.MustParseAddr("198.18.0.2"): {}}
	fill := func(c *peerCache, took, age time.Duration) {
		c.peers, c.atGen, c.took, c.at = held, c.gen.Load(), took, time.Now().Add(-age)
	}
	reused := func(c *peerCache) bool {
		got, err := c.list(ctx, srv)
		if err != nil {
			t.Fatal(err)
		}
		return len(got) == 1 // GoBGP itself has no peers
	}
	var c peerCache
	fill(&c, 300*time.Millisecond, time.Second)
	if !reused(&c) {
		t.Error("a list that cost 300 ms, taken 1 s ago, was not reused")
	}
	fill(&c, 300*time.Millisecond, time.Second)
	c.invalidate() // a session changed state
	if reused(&c) {
		t.Error("the list was reused after a peer event")
	}
	fill(&c, 20*time.Millisecond, 0)
	if reused(&c) {
		t.Error("a list that cost 20 ms was reused")
	}
	fill(&c, 300*time.Millisecond, 31*time.Second)
	if reused(&c) {
		t.Error("a list older than maxPeerCacheAge was reused")
	}
}
