package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

func (b *goBGP) SetPeers(ctx context.Context, peers []Peer) error {
	want := make(map[netip.Addr]Peer, len(peers))
	var errs []error
	for _, p := range peers {
		p.Address = p.Address.Unmap()
		if err := p.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		if _, dup := want[p.Address]; dup {
			errs = append(errs, fmt.Errorf("peer %s: listed twice; keeping the first", p.Address))
			continue
		}
		want[p.Address] = p
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	srv, err := b.serverLocked()
	if err != nil {
		return fmt.Errorf("bgp set peers: %w", err)
	}
	// Peers added while the initial sync runs announce the restart state
	// (R bit, and F bit in GoBGP): peers keep our old routes until our
	// End-of-RIB, and GoBGP defers its own updates until theirs.
	localRestarting := b.global.GracefulRestart.Enabled && !b.sync.isDone()

	// The policy learns about the new peers before their sessions exist.
	wantList := make([]Peer, 0, len(want))
	for _, w := range want {
		wantList = append(wantList, w)
	}
	if err := b.applyPolicyLocked(ctx, wantList); err != nil {
		errs = append(errs, err)
	}

	for addr, have := range b.peers {
		w, keep := want[addr]
		if keep && sameSession(have, w) {
			continue
		}
		if err := srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("peer %s: delete: %w", addr, err))
			continue
		}
		delete(b.peers, addr)
		b.log.Info("bgp peer removed", "peer", addr, "as", have.ASN, "type", have.Type, "reconfigured", keep)
	}
	for addr, w := range want {
		if _, ok := b.peers[addr]; ok {
			b.peers[addr] = w // at most Type, Description or Filters changed
			continue
		}
		if err := srv.AddPeer(ctx, &api.AddPeerRequest{Peer: b.apiPeer(w, localRestarting)}); err != nil {
			errs = append(errs, fmt.Errorf("peer %s (AS %d): add: %w", hostPort(addr, w.port()), w.ASN, err))
			continue
		}
		b.peers[addr] = w
		b.log.Info("bgp peer added", "peer", hostPort(addr, w.port()), "as", w.ASN, "type", w.Type,
			"rrClient", w.RouteReflectorClient, "md5", w.Password != "", "description", w.Description)
	}
	b.peerList.invalidate()
	b.sync.peersChanged(b.peerAddrsLocked())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("bgp set peers: %w", err)
	}
	return nil
}

// sameSession reports whether two peers need the same session. Type and
// Description only inform users: a node turning into a reflector changes
// its peers' Type without changing any BGP setting of theirs.
func sameSession(a, b Peer) bool {
	a.Description, b.Description = "", ""
	a.Type, b.Type = 0, 0
	a.Filters, b.Filters = nil, nil // policy, not session settings
	return reflect.DeepEqual(a, b)
}

func (b *goBGP) peerAddrsLocked() []netip.Addr {
	out := make([]netip.Addr, 0, len(b.peers))
	for a := range b.peers {
		out = append(out, a)
	}
	return out
}

// apiPeer renders a Peer for GoBGP. Graceful restart is negotiated for the
// families the speaker runs and no others.
func (b *goBGP) apiPeer(p Peer, localRestarting bool) *api.Peer {
	gr := b.global.GracefulRestart
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.ASN,
			AuthPassword:    p.Password,
			Description:     p.Description,
		},
		Transport: &api.Transport{RemotePort: uint32(p.port()), PassiveMode: p.Passive},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: uint64(connectRetry / time.Second),
		}},
	}
	if p.LocalAddress.IsValid() {
		ap.Transport.LocalAddress = p.LocalAddress.String()
	}
	for _, f := range b.global.families() {
		ap.AfiSafis = append(ap.AfiSafis, &api.AfiSafi{
			Config:            &api.AfiSafiConfig{Family: apiFamily(f), Enabled: true},
			MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: gr.Enabled}},
		})
	}
	if gr.Enabled {
		rt := uint32(b.global.restartTime() / time.Second)
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     rt,
			DeferralTime:    rt,
			LocalRestarting: localRestarting,
		}
	}
	if p.BFD.Enabled {
		us := uint32(p.BFD.Interval / time.Microsecond)
		ap.Bfd = &api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: us, RequiredMinimumReceive: us,
			DetectionMultiplier: uint32(p.BFD.Multiplier)}
	}
	if p.MaxPrefixes > 0 {
		for _, af := range ap.AfiSafis {
			af.PrefixLimits = &api.PrefixLimit{Family: af.Config.Family, MaxPrefixes: p.MaxPrefixes}
		}
	}
	if p.RouteReflectorClient {
		ap.RouteReflector = &api.RouteReflector{
			RouteReflectorClient:    true,
			RouteReflectorClusterId: p.RRClusterID,
		}
	}
	return ap
}

func apiFamily(f Family) *api.Family {
	if f == IPv6Unicast {
		return &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
	}
	return &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
}

func nativeFamily(f Family) gobgp.Family {
	if f == IPv6Unicast {
		return gobgp.RF_IPv6_UC
	}
	return gobgp.RF_IPv4_UC
}

func familyFromNative(f gobgp.Family) (Family, bool) {
	switch f {
	case gobgp.RF_IPv4_UC:
		return IPv4Unicast, true
	case gobgp.RF_IPv6_UC:
		return IPv6Unicast, true
	}
	return 0, false
}

// familyFromAPI maps GoBGP's family back; ok is false for families the
// speaker does not run.
func familyFromAPI(f *api.Family) (Family, bool) {
	if f.GetSafi() != api.Family_SAFI_UNICAST {
		return 0, false
	}
	switch f.GetAfi() {
	case api.Family_AFI_IP:
		return IPv4Unicast, true
	case api.Family_AFI_IP6:
		return IPv6Unicast, true
	}
	return 0, false
}
