package bgp

import (
	"testing"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"
)

// A dual-stack speaker configures both families on every session; a peer
// that negotiated only one (an IPv4 session to a ToR with an ipv4 channel
// only) must not have the other family's would-be advertisements and
// End-of-RIB counted.
func TestFillStatusCountsNegotiatedFamiliesOnly(t *testing.T) {
	v4 := apiFamily(IPv4Unicast)
	v6 := apiFamily(IPv6Unicast)
	mp := func(f *api.Family) *anypb.Any {
		a, err := anypb.New(&api.MultiProtocolCapability{Family: f})
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	afi := func(f *api.Family, received, advertised uint64, grReceived bool) *api.AfiSafi {
		return &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: f, Enabled: true},
			State:             &api.AfiSafiState{Family: f, Enabled: true, Received: received, Accepted: received, Advertised: advertised},
			MpGracefulRestart: &api.MpGracefulRestart{State: &api.MpGracefulRestartState{Received: grReceived}},
		}
	}
	peer := func(caps ...*anypb.Any) *api.Peer {
		return &api.Peer{
			State:           &api.PeerState{SessionState: api.PeerState_ESTABLISHED, RemoteCap: caps},
			GracefulRestart: &api.GracefulRestart{Enabled: true},
			// 3 IPv4 prefixes plus End-of-RIB; the IPv6 family only the
			// End-of-RIB GoBGP would send.
			AfiSafis: []*api.AfiSafi{afi(v4, 1, 4, true), afi(v6, 0, 1, false)},
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
