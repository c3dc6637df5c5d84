package agent

import (
	"context"
	"net/netip"
	"runtime"
	"sort"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/calyx-net/calyx/bgp"
	apipb "github.com/calyx-net/calyx/cni/api"
	"github.com/calyx-net/calyx/internal/version"
)

// statusServer answers calyxctl's node status and bgp routes.
type statusServer struct {
	apipb.UnimplementedAgentServer
	a *Agent
}

var peerTypes = map[bgp.PeerType]apipb.BGPPeerType{
	bgp.PeerMesh:      apipb.BGPPeerType_BGP_PEER_TYPE_MESH,
	bgp.PeerReflector: apipb.BGPPeerType_BGP_PEER_TYPE_REFLECTOR,
	bgp.PeerRRClient:  apipb.BGPPeerType_BGP_PEER_TYPE_CLIENT,
	bgp.PeerExternal:  apipb.BGPPeerType_BGP_PEER_TYPE_EXTERNAL,
}

var sessionStates = map[bgp.SessionState]apipb.BGPSessionState{
	bgp.StateIdle:        apipb.BGPSessionState_BGP_SESSION_STATE_IDLE,
	bgp.StateConnect:     apipb.BGPSessionState_BGP_SESSION_STATE_CONNECT,
	bgp.StateActive:      apipb.BGPSessionState_BGP_SESSION_STATE_ACTIVE,
	bgp.StateOpenSent:    apipb.BGPSessionState_BGP_SESSION_STATE_OPENSENT,
	bgp.StateOpenConfirm: apipb.BGPSessionState_BGP_SESSION_STATE_OPENCONFIRM,
	bgp.StateEstablished: apipb.BGPSessionState_BGP_SESSION_STATE_ESTABLISHED,
}

func (s *statusServer) NodeStatus(ctx context.Context, _ *apipb.NodeStatusRequest) (*apipb.NodeStatusReply, error) {
	a := s.a
	a.mu.Lock()
	started := a.bgpStarted
	asn := a.state.bgpSpec().EffectiveASNumber()
	if n := a.state.nodes[a.node]; n != nil && n.Spec.ASNumber != 0 {
		asn = n.Spec.ASNumber
	}
	a.mu.Unlock()
	reply := &apipb.NodeStatusReply{
		NodeName: a.node, NodeAddress: a.nodeIP.String(), AsNumber: asn,
		AgentVersion: version.String("calyx-agent"), DatastoreInSync: a.isSynced(),
		Ready: a.isSynced() && a.datastoreUp() && a.policy.Ready() == nil, StartedAt: a.startedAt.Unix(),
	}
	if !started {
		return reply, nil
	}
	peers, err := a.speaker.PeerStatus(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading BGP peers: %v", err)
	}
	for _, p := range peers {
		ps := &apipb.BGPPeerStatus{
			Address: p.Address.String(), Type: peerTypes[p.Type], AsNumber: p.ASN, State: sessionStates[p.State],
			PrefixesReceived: p.PrefixesReceived, PrefixesAdvertised: p.PrefixesAdvertised, Name: p.Description,
			BfdState: p.BFD, LastError: p.Reason,
		}
		if !p.Since.IsZero() {
			ps.Since = p.Since.Unix()
		}
		reply.BgpPeers = append(reply.BgpPeers, ps)
	}
	sort.Slice(reply.BgpPeers, func(i, j int) bool { return reply.BgpPeers[i].Address < reply.BgpPeers[j].Address })
	return reply, nil
}

func (s *statusServer) BGPRoutes(ctx context.Context, req *apipb.BGPRoutesRequest) (*apipb.BGPRoutesReply, error) {
	a := s.a
	a.mu.Lock()
	started := a.bgpStarted
	a.mu.Unlock()
	if !started {
		return nil, status.Error(codes.Unavailable, "the BGP speaker has not started yet (datastore not in sync)")
	}
	var filter netip.Prefix
	if req.Prefix != "" {
		var err error
		if filter, err = netip.ParsePrefix(req.Prefix); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "prefix %q is not a CIDR", req.Prefix)
		}
	}
	rib, err := a.speaker.RIB(ctx)
	if err != nil {
		return nil, status.Errorf(codes.Unavailable, "reading the BGP RIB: %v", err)
	}
	reply := &apipb.BGPRoutesReply{}
	for _, e := range rib {
		if filter.IsValid() && !filter.Overlaps(e.Prefix) {
			continue
		}
		r := &apipb.BGPRoute{Prefix: e.Prefix.String(), Local: e.Local, Best: e.Best, AsPath: e.ASPath}
		if e.NextHop.IsValid() {
			r.NextHops = []string{e.NextHop.String()}
		}
		if e.Peer.IsValid() {
			r.Peer = e.Peer.String()
		}
		if !e.Since.IsZero() {
			r.AgeSeconds = int64(time.Since(e.Since).Seconds())
		}
		reply.Routes = append(reply.Routes, r)
	}
	return reply, nil
}

// SetLogLevel changes the level of every log line from now on; it lasts
// until the agent restarts (--log-level sets the level at start).
func (s *statusServer) SetLogLevel(_ context.Context, req *apipb.SetLogLevelRequest) (*apipb.SetLogLevelReply, error) {
	lv := s.a.opts.level
	if lv == nil {
		return nil, status.Error(codes.FailedPrecondition, "this agent's log level cannot be changed at runtime")
	}
	prev := lv.Level()
	if req.GetLevel() != "" {
		l, err := ParseLogLevel(req.GetLevel())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "log level %q: %v", req.GetLevel(), err)
		}
		lv.Set(l)
		if l != prev {
			s.a.log.Warn("log level changed at runtime", "from", LevelName(prev), "to", LevelName(l))
		}
	}
	return &apipb.SetLogLevelReply{Previous: LevelName(prev), Level: LevelName(lv.Level())}, nil
}

func (s *statusServer) Version(context.Context, *apipb.VersionRequest) (*apipb.VersionReply, error) {
	return &apipb.VersionReply{Version: version.Version, Commit: version.CommitID(), GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}, nil
}
