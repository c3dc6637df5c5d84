package bgp

import (
	"context"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

const exportPolicyName = "calyx-no-transit"

// installExportPolicy keeps the node from being a transit router: paths
// learned over eBGP (from the ToR, or from a node of another AS) are never
// passed on. What remains is what the node originates and, on a route
// reflector, what it reflects between iBGP peers (GoBGP applies the iBGP
// split-horizon rules itself).
func installExportPolicy(ctx context.Context, srv *server.BgpServer) error {
	err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{
		Name: exportPolicyName,
		Statements: []*api.Statement{{
			Name:       exportPolicyName + "-external",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_EXTERNAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_REJECT},
		}},
	}})
	if err != nil {
		return err
	}
	return srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_EXPORT,
		Policies:      []*api.Policy{{Name: exportPolicyName}},
		DefaultAction: api.RouteAction_ACCEPT,
	}})
}
