package agent

import (
	"context"
	"reflect"
	"time"

	"github.com/calyx-net/calyx/bgp"
	"github.com/calyx-net/calyx/datastore"
)

// bgpDesired is what the speaker is to be told, computed under a.mu from
// the cluster state.
type bgpDesired struct {
	peers         []bgp.Peer
	policy        bgp.Policy
	policyErr     error
	advs          []bgp.Advertisement
	peersChanged  bool
	policyChanged bool
}

// desiredBGPLocked computes the speaker's peers, policy and
// advertisements; local is the node's endpoints. Peers and policy are
// handed over only when they changed.
func (a *Agent) desiredBGPLocked(local map[string]*datastore.WorkloadEndpoint) bgpDesired {
	spec := a.state.bgpSpec()
	communities, err := communitiesOf(spec)
	if err != nil {
		a.log.Error("BGPConfig communities not attached", "err", err)
	}
	d := bgpDesired{advs: desiredAdvertisements(a.node, a.nodeIP, a.nodeIP6, local, a.state.blocks, spec.BlocksAdvertised(),
		spec.ServicePrefixes(), communities)}
	if !a.bgpStarted {
		return d
	}
	d.peers = bgp.DesiredPeers(a.selfNodeLocked(), a.nodeListLocked(), a.peerListLocked(), spec)
	if !reflect.DeepEqual(d.peers, a.lastPeers) {
		d.peersChanged, a.lastPeers = true, d.peers
	}
	pools := make([]*datastore.IPPool, 0, len(a.state.pools))
	for _, p := range a.state.pools {
		pools = append(pools, p)
	}
	filters := make([]*datastore.BGPFilter, 0, len(a.state.filters))
	for _, f := range a.state.filters {
		filters = append(filters, f)
	}
	d.policy, d.policyErr = bgp.PolicyFor(pools, spec, filters)
	if !a.policySent || !reflect.DeepEqual(d.policy, a.lastPolicy) {
		d.policyChanged, a.lastPolicy, a.policySent = true, d.policy, true
	}
	return d
}

// applyBGP hands d to the speaker: the policy before the peers, so that a
// new session never runs without import safety.
func (a *Agent) applyBGP(ctx context.Context, d bgpDesired) {
	start := time.Now()
	var failed error // the last failure, for calyx_dataplane_apply_seconds{part="bgp"}
	defer func() { a.metrics.observeApply("bgp", time.Since(start), failed) }()
	if d.policyErr != nil {
		a.log.Error("BGPFilter not usable; peers naming it import and export nothing", "err", d.policyErr)
	}
	if d.policyChanged {
		if err := a.speaker.SetPolicy(ctx, d.policy); err != nil {
			a.log.Error("setting the BGP policy", "err", err)
			failed = err
		}
	}
	if d.peersChanged {
		if err := a.speaker.SetPeers(ctx, d.peers); err != nil {
			a.log.Error("setting BGP peers", "err", err)
			failed = err
		}
	}
	if err := a.speaker.SetAdvertisements(ctx, d.advs); err != nil {
		a.log.Error("setting BGP advertisements", "err", err)
		failed = err
	}
}

// communitiesOf parses BGPConfig's communities (validated on apply).
func communitiesOf(spec *datastore.BGPConfigSpec) ([]uint32, error) {
	if spec == nil {
		return nil, nil
	}
	var out []uint32
	for _, c := range spec.Communities {
		v, err := datastore.ParseCommunity(c)
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
	return out, nil
}
