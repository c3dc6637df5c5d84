package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	gobgp "github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

var sessionStates = map[api.PeerState_SessionState]SessionState{
	api.PeerState_SESSION_STATE_IDLE:        StateIdle,
	api.PeerState_SESSION_STATE_CONNECT:     StateConnect,
	api.PeerState_SESSION_STATE_ACTIVE:      StateActive,
	api.PeerState_SESSION_STATE_OPENSENT:    StateOpenSent,
	api.PeerState_SESSION_STATE_OPENCONFIRM: StateOpenConfirm,
	api.PeerState_SESSION_STATE_ESTABLISHED: StateEstablished,
}

// PeerStatus asks GoBGP for the sessions without EnableAdvertised: with
// it, ListPeer runs every path of the RIB through each peer's export
// policy on GoBGP's main loop (about half a second of CPU per peer with
// 100k prefixes, BGP processing stalled meanwhile), which a Prometheus
// scrape every few seconds cannot pay. Received and accepted come from
// GoBGP's Adj-RIB-In count and accepted counter, through peerCache;
// advertised is counted here, from the node's own announcements (see
// originatedTo).
func (b *goBGP) PeerStatus(ctx context.Context) ([]PeerStatus, error) {
	b.mu.Lock()
	srv, err := b.serverLocked()
	peers := make([]Peer, 0, len(b.peers))
	for _, p := range b.peers {
		peers = append(peers, p)
	}
	own := make([]netip.Prefix, 0, len(b.advs))
	for p := range b.advs {
		own = append(own, p)
	}
	pol := b.policy
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("bgp peer status: %w", err)
	}
	got, err := b.peerList.list(ctx, srv)
	if err != nil {
		return nil, fmt.Errorf("bgp peer status: %w", err)
	}
	slices.SortFunc(peers, func(a, b Peer) int { return a.Address.Compare(b.Address) })
	out := make([]PeerStatus, 0, len(peers))
	for _, p := range peers {
		st := PeerStatus{Address: p.Address, Type: p.Type, ASN: p.ASN, Description: p.Description, State: StateUnknown}
		if ap := got[p.Address]; ap != nil {
			fillStatus(&st, ap)
			if st.State == StateEstablished {
				st.PrefixesAdvertised = originatedTo(&pol, &p, own, remoteFamilies(ap))
			}
		}
		out = append(out, st)
	}
	return out, nil
}

// peerCache holds GoBGP's peer list. ListPeer counts each established
// peer's Adj-RIB-In by walking it, copying every destination (0.2-0.3 s of
// CPU at 100k prefixes, on GoBGP's main loop, which stalls BGP meanwhile).
// So a list that cost more than minCachedCost is reused for up to
// peerCacheCostFactor times what it cost (at most maxPeerCacheAge) unless
// something changed since: every peer event of GoBGP's, every best-path
// event (a subscriber's watch) and every SetPeers moves the generation on.
// Session states are never stale; only the counts of paths that changed
// no best path (refused by import policy, or not best) may lag, and only
// in a large table. In a steady large table listing costs at most about
// 1% of a core; a small one is listed afresh.
type peerCache struct {
	gen atomic.Uint64

	mu    sync.Mutex // held across a listing: concurrent callers share it
	peers map[netip.Addr]*api.Peer
	atGen uint64
	at    time.Time
	took  time.Duration
}

const (
	minCachedCost       = 50 * time.Millisecond
	peerCacheCostFactor = 100
	maxPeerCacheAge     = 30 * time.Second
)

// invalidate makes the next list ask GoBGP.
func (c *peerCache) invalidate() { c.gen.Add(1) }

// list returns the peers by address. The messages are shared: read only.
func (c *peerCache) list(ctx context.Context, srv *server.BgpServer) (map[netip.Addr]*api.Peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	gen := c.gen.Load()
	if c.peers != nil && c.atGen == gen && c.took >= minCachedCost && time.Since(c.at) < min(peerCacheCostFactor*c.took, maxPeerCacheAge) {
		return c.peers, nil
	}
	start := time.Now()
	got := map[netip.Addr]*api.Peer{}
	err := srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
			got[a.Unmap()] = p
		}
	})
	if err != nil {
		return nil, err
	}
	c.peers, c.atGen, c.at, c.took = got, gen, time.Now(), time.Since(start)
	return got, nil
}

// originatedTo counts the node's own announcements (blocks, service
// ranges, workload /32s) that the peer gets: of a family the session
// negotiated, passing the peer's export filters. Routes a reflector
// passes on are not among them.
func originatedTo(pol *Policy, peer *Peer, own []netip.Prefix, families map[Family]bool) uint64 {
	n := uint64(0)
	for _, p := range own {
		if families[familyOf(p)] && pol.Accepts(peer, Export, p) {
			n++
		}
	}
	return n
}

var bfdStates = map[api.BfdSessionState]string{
	api.BfdSessionState_BFD_SESSION_STATE_UP:         "up",
	api.BfdSessionState_BFD_SESSION_STATE_DOWN:       "down",
	api.BfdSessionState_BFD_SESSION_STATE_INIT:       "init",
	api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN: "admin-down",
}

func fillStatus(st *PeerStatus, ap *api.Peer) {
	if s, ok := sessionStates[ap.GetState().GetSessionState()]; ok {
		st.State = s
	}
	if ap.GetBfd().GetEnabled() {
		st.BFD = bfdStates[ap.GetState().GetBfdState().GetSessionState()]
		if st.BFD == "" {
			st.BFD = "down"
		}
	}
	switch {
	case ap.GetState().GetAdminState() == api.PeerState_ADMIN_STATE_PFX_CT:
		st.MaxPrefixesReached = true
		limit := uint32(0)
		for _, af := range ap.GetAfiSafis() {
			limit = max(limit, af.GetPrefixLimits().GetMaxPrefixes())
		}
		st.Reason = fmt.Sprintf("maximum prefixes (%d) exceeded: session shut down until maxPrefixes or the peer changes", limit)
	case st.State != StateEstablished:
		st.Reason = ap.GetState().GetDisconnectMessage()
	}
	timers := ap.GetTimers().GetState()
	since := timers.GetDowntime()
	if st.State == StateEstablished {
		since = timers.GetUptime()
		st.RemoteRouterID = ap.GetState().GetRouterId()
	}
	if since != nil && since.GetSeconds() != 0 {
		st.Since = since.AsTime()
	}
	remote := remoteFamilies(ap)
	for _, af := range ap.GetAfiSafis() {
		// GoBGP reports every configured family, the ones the peer did
		// not negotiate too (a dual-stack node's IPv4-only session to a
		// ToR).
		if f, ok := familyFromAPI(af.GetConfig().GetFamily()); ok && st.State == StateEstablished && !remote[f] {
			continue
		}
		gr := af.GetMpGracefulRestart().GetState()
		negotiated := gr.GetReceived() && ap.GetGracefulRestart().GetEnabled()
		if negotiated && st.State == StateEstablished {
			st.GracefulRestart = true
		}
		s := af.GetState()
		st.PrefixesReceived += s.GetReceived()
		st.PrefixesAccepted += s.GetAccepted()
	}
}

// remoteFamilies are the families the peer announced in its OPEN
// (multiprotocol capabilities); a peer that announced none runs IPv4
// unicast only (RFC 4760).
func remoteFamilies(ap *api.Peer) map[Family]bool {
	out := map[Family]bool{}
	announced := false
	for _, c := range ap.GetState().GetRemoteCap() {
		mp := c.GetMultiProtocol()
		if mp == nil {
			continue
		}
		announced = true
		if f, ok := familyFromAPI(mp.GetFamily()); ok {
			out[f] = true
		}
	}
	if !announced {
		out[IPv4Unicast] = true
	}
	return out
}

func (b *goBGP) RIB(ctx context.Context) ([]RIBEntry, error) {
	b.mu.Lock()
	srv, err := b.serverLocked()
	families := b.global.families()
	localAS := b.global.ASN
	b.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("bgp rib: %w", err)
	}
	var out []RIBEntry
	for _, f := range families {
		err := srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: nativeFamily(f)},
			func(_ gobgp.NLRI, paths []*apiutil.Path) { out = append(out, destinationEntries(paths, localAS)...) })
		if err != nil {
			return nil, fmt.Errorf("bgp rib %s: %w", f, err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("bgp rib: %w", err)
		}
	}
	slices.SortStableFunc(out, func(a, b RIBEntry) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, nil
}

// destinationEntries lists a destination's paths. GoBGP sorts them best
// first; the ones ranking equal to the best are its ECMP set (ListPath's
// own Best flag marks only the first).
func destinationEntries(paths []*apiutil.Path, localAS uint32) []RIBEntry {
	var out []RIBEntry
	var best pathRank
	for i, p := range paths {
		pfx, ok := pathPrefix(p)
		if !ok {
			continue
		}
		at := readAttrs(p)
		src := p.PeerAddress.Unmap()
		rank := pathRank{
			local: !src.IsValid(), ibgp: p.PeerASN == localAS && p.PeerASN != 0,
			localPref: at.localPref, asPathLen: at.asPathLen, origin: at.origin, med: at.med,
		}
		if i == 0 {
			best = rank
		}
		e := RIBEntry{
			Prefix:      pfx,
			NextHop:     at.nextHop,
			Peer:        src,
			Local:       !src.IsValid(),
			Best:        !p.Withdrawal && !p.IsNexthopInvalid && (i == 0 || rank == best),
			Stale:       p.Stale,
			ASPath:      withoutExternalMark(at.asPath, localAS, src.IsValid() && !rank.ibgp),
			Communities: at.communities,
		}
		if p.Age > 0 {
			e.Since = time.Unix(p.Age, 0)
		}
		out = append(out, e)
	}
	return out
}

// pathRank holds what GoBGP's multipath comparison looks at (table.Path
// Compare): two paths of equal rank share the traffic.
type pathRank struct {
	local, ibgp bool
	localPref   uint32
	asPathLen   int
	origin      uint8
	med         uint32
}
