package bgp

import (
	"testing"

	api "github.com/osrg/gobgp/v4/api"
)

// A dual-stack speaker configures both families on every session; a peer
// that negotiated only one (an IPv4 session to a ToR with an ipv4 channel
// only) must not have the other family's would-be advertisements and
// End-of-RIB counted.
func TestFillStatusCountsNegotiatedFamiliesOnly(t *testing.T) {
	v4 := apiFamily(IPv4Unicast)
	v6 := apiFamily(IPv6Unicast)
	mp := func(f *api.Family) *api.Capability {
		return &api.Capability{Cap: &api.Capability_MultiProtocol{MultiProtocol: &api.MultiProtocolCapability{Family: f}}}
	}
	afi := func(f *api.Family, received, advertised uint64, grReceived bool) *api.AfiSafi {
		return &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: f, Enabled: true},
			State:             &api.AfiSafiState{Family: f, Enabled: true, Received: received, Accepted: received, Advertised: advertised},
			MpGracefulRestart: &api.MpGracefulRestart{State: &api.MpGracefulRestartState{Received: grReceived}},
		}
	}
	peer := func(caps ...*api.Capability) *api.Peer {
		return &api.Peer{
			State:           &api.PeerState{SessionState: api.PeerState_SESSION_STATE_ESTABLISHED, RemoteCap: caps},
			GracefulRestart: &api.GracefulRestart{Enabled: true},
			// 3 IPv4 prefixes; the IPv6 family the one prefix GoBGP
			// would send if the peer had negotiated it.
			AfiSafis: []*api.AfiSafi{afi(v4, 1, 3, true), afi(v6, 0, 1, false)},
		}
	}
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
		if st.PrefixesAdvertised != c.want || st.PrefixesReceived != 1 {
			t.Errorf("%s: advertised %d, received %d; want %d and 1", c.name, st.PrefixesAdvertised, st.PrefixesReceived, c.want)
		}
	}
}
