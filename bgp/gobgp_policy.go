package bgp

import (
	"context"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
)

const (
	exportPolicyName = "calyx-no-transit"
	importPolicyName = "calyx-mark-external"
)

// installPolicies keeps the node from being a transit router: paths
// learned over eBGP (from the ToR, or from a node of another AS) are never
// passed on. What remains is what the node originates and, on a route
// reflector, what it reflects between iBGP peers (GoBGP applies the iBGP
// split-horizon rules itself).
//
// An export policy alone stops the announcements but not the withdrawals:
// GoBGP keeps no Adj-RIB-Out and lets every withdrawal through policy, so
// each prefix a ToR withdraws would be withdrawn again towards every mesh
// peer, which never had it (100k UPDATEs to each for a 100k-prefix table).
// So on import, paths from eBGP peers get the node's own AS prepended: a
// peer of that AS (every iBGP peer) would see its own AS in the path, and
// GoBGP's loop check then drops the path and, since a withdrawal carries
// the attributes of the path it withdraws, its withdrawal too, before any
// message is built. The mark adds one to the length of every eBGP path
// alike, so it changes no choice between them, and an iBGP path (a node's
// block, AS path empty) stays shorter than any eBGP path as before. A path
// from a peer can never carry our AS otherwise (GoBGP drops such paths on
// receipt), so RIB strips the mark unambiguously.
func installPolicies(ctx context.Context, srv *server.BgpServer, asn uint32) error {
	err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: exportPolicyName,
		Statements: []*api.Statement{{
			Name:       exportPolicyName + "-external",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_EXTERNAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT},
		}},
	}})
	if err != nil {
		return err
	}
	err = srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies:      []*api.Policy{{Name: exportPolicyName}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}})
	if err != nil {
		return err
	}
	err = srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: importPolicyName,
		Statements: []*api.Statement{{
			Name:       importPolicyName + "-external",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_EXTERNAL},
			Actions: &api.Actions{
				RouteAction: api.RouteAction_ROUTE_ACTION_UNSPECIFIED,
				AsPrepend:   &api.AsPrependAction{Asn: asn, Repeat: 1},
			},
		}},
	}})
	if err != nil {
		return err
	}
	return srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies:      []*api.Policy{{Name: importPolicyName}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}})
}

// withoutExternalMark is a learned path's AS path as its peer sent it: the
// own AS that the import policy put in front taken off again.
func withoutExternalMark(asPath []uint32, localAS uint32, learned bool) []uint32 {
	if learned && len(asPath) > 0 && asPath[0] == localAS {
		return asPath[1:]
	}
	return asPath
}
