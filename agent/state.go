package agent

import (
	"net/netip"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/ipam"
)

// clusterState is the agent's typed view of the datastore. Agent.mu guards
// it: the syncer's callback writes it; the dataplane loop, the CNI
// handlers and the status RPCs read it.
type clusterState struct {
	// node is this agent's node: only what concerns it needs a recompute.
	node       string
	bgpConfig  *datastore.BGPConfig
	ipamConfig *datastore.IPAMConfig
	nodes      map[string]*datastore.Node
	peers      map[string]*datastore.BGPPeer
	filters    map[string]*datastore.BGPFilter
	pools      map[string]*datastore.IPPool
	endpoints  map[string]*datastore.WorkloadEndpoint // this node's only
	policies   map[string]*datastore.Policy
	blocks     map[netip.Prefix]*ipam.Block
	inSync     bool
}

func newClusterState(node string) *clusterState {
	return &clusterState{
		node:      node,
		nodes:     map[string]*datastore.Node{},
		peers:     map[string]*datastore.BGPPeer{},
		filters:   map[string]*datastore.BGPFilter{},
		pools:     map[string]*datastore.IPPool{},
		endpoints: map[string]*datastore.WorkloadEndpoint{},
		policies:  map[string]*datastore.Policy{},
		blocks:    map[netip.Prefix]*ipam.Block{},
	}
}

// changes says which parts of the state an event batch touched, so the
// agent recomputes only what depends on them.
type changes struct {
	bgp       bool // nodes, peers, BGP config: the peer set
	blocks    bool // IPAM blocks: blackholes and advertisements
	endpoints bool // this node's workload endpoints: routes, advertisements
	policy    bool // policies and pools: policy dataplane
	inSync    bool // the syncer reached (or re-reached) in-sync
}

func (c changes) any() bool { return c.bgp || c.blocks || c.endpoints || c.policy || c.inSync }

// apply folds one syncer event into the state.
func (s *clusterState) apply(ev datastore.Event, ch *changes) {
	if ev.Type == datastore.EventInSync {
		s.inSync = true
		ch.inSync = true
		return
	}
	val := ev.Value
	if ev.Type == datastore.EventDelete {
		val = ev.Prev
	}
	deleted := ev.Type == datastore.EventDelete
	switch v := val.(type) {
	case *datastore.BGPConfig:
		s.bgpConfig = pick(deleted, v)
		ch.bgp, ch.blocks = true, true // advertiseBlocks lives here
	case *datastore.IPAMConfig:
		s.ipamConfig = pick(deleted, v)
	case *datastore.Node:
		setOrDelete(s.nodes, v.Metadata.Name, v, deleted)
		ch.bgp = true
	case *datastore.BGPPeer:
		setOrDelete(s.peers, v.Metadata.Name, v, deleted)
		ch.bgp = true
	case *datastore.BGPFilter:
		setOrDelete(s.filters, v.Metadata.Name, v, deleted)
		ch.bgp = true
	case *datastore.IPPool:
		setOrDelete(s.pools, v.Metadata.Name, v, deleted)
		ch.policy = true // natOutgoing and the all-pools set
		ch.bgp = true    // import safety
	case *datastore.WorkloadEndpoint:
		// Only this node's endpoints are kept here. Another node's
		// changes nothing of this node's routes or advertisements (its
		// route comes over BGP); it feeds policy alone, which keeps what
		// it needs of it and has its own wake-up. In a cluster of N nodes
		// every change reaches every agent: recomputing for each would
		// cost N recomputes per CNI ADD, and keeping each whole ~1 KiB.
		name := v.Metadata.Name
		_, was := s.endpoints[name]
		local := !deleted && v.Spec.Node == s.node
		setOrDelete(s.endpoints, name, v, !local)
		if was || local || v.Spec.Node == s.node {
			ch.endpoints = true
		}
	case *ipam.Block:
		setOrDelete(s.blocks, v.Prefix, v, deleted)
		// Only the node's own blocks (blackholes, advertisements) and the
		// addresses it borrowed from others' (advertised as /32s) matter;
		// another node allocating in its own block does not.
		if s.concerns(v) || (ev.Type == datastore.EventUpdate && s.concerns(ev.Prev)) {
			ch.blocks = true
		}
	case *datastore.Policy:
		setOrDelete(s.policies, v.Metadata.Name, v, deleted)
		ch.policy = true
	}
}

// concerns reports whether a block is this node's or lends it addresses.
func (s *clusterState) concerns(v any) bool {
	b, ok := v.(*ipam.Block)
	if !ok || b == nil {
		return false
	}
	if b.Affinity == s.node {
		return true
	}
	for _, a := range b.Allocations {
		if a.Borrowed && a.Node == s.node {
			return true
		}
	}
	return false
}

func pick[T any](deleted bool, v *T) *T {
	if deleted {
		return nil
	}
	return v
}

func setOrDelete[K comparable, V any](m map[K]V, k K, v V, deleted bool) {
	if deleted {
		delete(m, k)
	} else {
		m[k] = v
	}
}

// bgpSpec is the BGPConfig spec, or nil (defaults) when there is none.
func (s *clusterState) bgpSpec() *datastore.BGPConfigSpec {
	if s.bgpConfig == nil {
		return nil
	}
	return &s.bgpConfig.Spec
}

// agentResourceSource follows every resource kind, but the syncer keeps
// nothing of workload endpoints for their next event: this node's are in
// clusterState.endpoints and policy keeps what it needs of the others;
// a second full copy of 100k other nodes' endpoints would cost ~1 KiB
// each. withPrev stands in for what was not kept.
func agentResourceSource() datastore.Source {
	src := datastore.ResourceSource()
	src.Keep = func(v any) any {
		if _, ok := v.(*datastore.WorkloadEndpoint); ok {
			return nil
		}
		return v
	}
	return src
}

// withPrev gives an endpoint's update or delete the Prev the syncer did
// not keep: a stub with the endpoint's name (from the key), which is all
// that the consumers of a Prev endpoint read.
func withPrev(ev datastore.Event) datastore.Event {
	if ev.Prev != nil || (ev.Type != datastore.EventUpdate && ev.Type != datastore.EventDelete) {
		return ev
	}
	if kind, name, ok := datastore.ParseKey(ev.Key); ok && kind == datastore.KindWorkloadEndpoint {
		r, _ := datastore.NewResource(kind)
		r.GetMeta().Name = name
		ev.Prev = r
	}
	return ev
}
