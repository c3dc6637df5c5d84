package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/calyx-net/calyx/datastore"
	"github.com/calyx-net/calyx/datastore/selector"
)

// DesiredPeers computes the sessions node self should run, from the
// cluster's nodes, BGPPeer resources and BGPConfig. It is pure: same input,
// same output, sorted by address.
//
// Node-to-node sessions follow one rule:
//
//   - Some node has routeReflectorClusterID (it is a reflector): reflector
//     topology, whatever nodeToNodeMesh says. A reflector peers with every
//     other reflector (plain iBGP) and with every other node as its route
//     reflector client, using its own cluster ID. A non-reflector peers with
//     every reflector and with no other node.
//   - No reflector and nodeToNodeMesh true (the default): full mesh, one
//     session with every other node.
//   - No reflector and nodeToNodeMesh false: no node-to-node sessions; the
//     nodes peer only with external BGPPeers (typically the ToR).
//
// A node's AS is its own asNumber or else BGPConfig's; two nodes of
// different AS therefore run eBGP, and reflection then does not apply to
// that pair (a reflector client must be iBGP). Node-to-node sessions use
// BGPConfig's listenPort and the node's address as the source.
//
// A BGPPeer applies to self when it names self in node, or its nodeSelector
// matches self's labels, or it sets neither. Its session is eBGP or iBGP by
// comparing its asNumber with self's. BGPPeers with an unparsable address
// or selector are skipped (validation rejects them when they are applied).
// When two candidates share an address, a node session wins over a BGPPeer
// and, among BGPPeers, the first by name; self's own address is never a peer.
func DesiredPeers(self *datastore.Node, nodes []*datastore.Node, peers []*datastore.BGPPeer, cfg *datastore.BGPConfigSpec) []Peer {
	if self == nil {
		return nil
	}
	selfV4, selfV6 := nodeAddresses(self)
	taken := map[netip.Addr]bool{}
	if selfV4.IsValid() {
		taken[selfV4] = true
	}
	if selfV6.IsValid() {
		taken[selfV6] = true
	}
	var out []Peer
	add := func(p Peer) {
		if !p.Address.IsValid() || taken[p.Address] {
			return
		}
		taken[p.Address] = true
		if p.Address.Is4() {
			p.LocalAddress = selfV4
		} else {
			p.LocalAddress = selfV6
		}
		out = append(out, p)
	}

	for _, p := range nodePeers(self, nodes, cfg) {
		add(p)
	}
	for _, bp := range sortedBGPPeers(peers) {
		if !bgpPeerApplies(bp, self) {
			continue
		}
		addr, err := netip.ParseAddr(bp.Spec.PeerIP)
		if err != nil || addr.Zone() != "" {
			continue
		}
		add(Peer{
			Address:     addr,
			ASN:         bp.Spec.ASNumber,
			Type:        PeerExternal,
			Password:    bp.Spec.Password,
			Description: "bgppeer " + bp.Metadata.Name,
			BFD:         bfdFrom(bp.Spec.BFD),
			MaxPrefixes: bp.Spec.MaxPrefixes,
			Filters:     slices.Clone(bp.Spec.Filters),
		})
	}
	slices.SortFunc(out, func(a, b Peer) int { return a.Address.Compare(b.Address) })
	return out
}

// nodePeers lists the node-to-node sessions of self (see DesiredPeers).
func nodePeers(self *datastore.Node, nodes []*datastore.Node, cfg *datastore.BGPConfigSpec) []Peer {
	selfAS := nodeAS(self, cfg)
	selfV4, _ := nodeAddresses(self)
	port := cfg.EffectiveListenPort()
	if port == DefaultPort {
		port = 0
	}
	var password string
	var bfd BFD
	if cfg != nil {
		password, bfd = cfg.NodeToNodePassword, bfdFrom(cfg.BFD)
	}
	others := make([]*datastore.Node, 0, len(nodes))
	reflectors := 0
	for _, n := range nodes {
		if n == nil {
			continue
		}
		if isReflector(n) {
			reflectors++
		}
		if n.Metadata.Name == self.Metadata.Name {
			continue
		}
		others = append(others, n)
	}
	if isReflector(self) && !containsNode(nodes, self.Metadata.Name) {
		reflectors++
	}
	slices.SortFunc(others, func(a, b *datastore.Node) int { return cmp.Compare(a.Metadata.Name, b.Metadata.Name) })

	var out []Peer
	for _, n := range others {
		addr, _ := nodeAddresses(n)
		if !addr.IsValid() {
			continue
		}
		// Of two nodes, the one with the higher address waits for the
		// other to connect (as Calico's mesh does); with a password both
		// dial, since TCP MD5 cannot be set on GoBGP's listening socket
		// on every kernel (see docs/bgp.md).
		p := Peer{Address: addr, ASN: nodeAS(n, cfg), Port: port, Description: "node " + n.Metadata.Name,
			Passive:  password == "" && selfV4.IsValid() && addr.Less(selfV4),
			Password: password, BFD: bfd}
		switch {
		case reflectors == 0 && cfg.MeshEnabled():
			p.Type = PeerMesh
		case reflectors == 0:
			continue
		case isReflector(n):
			p.Type = PeerReflector
		case isReflector(self):
			p.Type = PeerRRClient
			if p.ASN == selfAS {
				p.RouteReflectorClient = true
				p.RRClusterID = self.Spec.RouteReflectorClusterID
			}
		default:
			continue // two clients never peer directly
		}
		out = append(out, p)
	}
	return out
}

func containsNode(nodes []*datastore.Node, name string) bool {
	for _, n := range nodes {
		if n != nil && n.Metadata.Name == name {
			return true
		}
	}
	return false
}

func isReflector(n *datastore.Node) bool { return n.Spec.RouteReflectorClusterID != "" }

// nodeAS is the node's own AS or the cluster default.
func nodeAS(n *datastore.Node, cfg *datastore.BGPConfigSpec) uint32 {
	if n.Spec.ASNumber != 0 {
		return n.Spec.ASNumber
	}
	return cfg.EffectiveASNumber()
}

// nodeAddresses parses the node's IPv4 and IPv6 addresses; either may be
// invalid. A CIDR ("10.0.0.1/24") is accepted for the address.
func nodeAddresses(n *datastore.Node) (v4, v6 netip.Addr) {
	return parseHostAddr(n.Spec.Address), parseHostAddr(n.Spec.IPv6Address)
}

func parseHostAddr(s string) netip.Addr {
	if s == "" {
		return netip.Addr{}
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Addr{}
		}
		return p.Addr()
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}
	}
	return a.Unmap()
}

func sortedBGPPeers(peers []*datastore.BGPPeer) []*datastore.BGPPeer {
	out := make([]*datastore.BGPPeer, 0, len(peers))
	for _, p := range peers {
		if p != nil {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b *datastore.BGPPeer) int { return cmp.Compare(a.Metadata.Name, b.Metadata.Name) })
	return out
}

// bgpPeerApplies reports whether the BGPPeer selects node self. With both
// node and nodeSelector set (validation forbids it), both must match.
func bgpPeerApplies(bp *datastore.BGPPeer, self *datastore.Node) bool {
	if bp.Spec.Node != "" && bp.Spec.Node != self.Metadata.Name {
		return false
	}
	if bp.Spec.NodeSelector != "" {
		sel, err := selector.Parse(bp.Spec.NodeSelector)
		if err != nil || !sel.Evaluate(self.Metadata.Labels) {
			return false
		}
	}
	return true
}

// GlobalFor computes the speaker's global configuration for node self: AS
// from the node or BGPConfig, router ID from the node's routerID or
// address, graceful restart from BGPConfig, and IPv6 unicast besides IPv4
// when the node has an IPv6 address. The listen port is portFlag (the
// agent's --bgp-port) unless that is 0 or the default 179, in which case
// BGPConfig's listenPort decides. The result is validated.
func GlobalFor(self *datastore.Node, cfg *datastore.BGPConfigSpec, portFlag int) (Global, error) {
	if self == nil {
		return Global{}, fmt.Errorf("no node given")
	}
	v4, v6 := nodeAddresses(self)
	rid := v4
	if self.Spec.RouterID != "" {
		rid = parseHostAddr(self.Spec.RouterID)
	}
	port := portFlag
	if port == 0 || port == DefaultPort {
		port = cfg.EffectiveListenPort()
	}
	g := Global{
		ASN:        nodeAS(self, cfg),
		RouterID:   rid,
		ListenPort: port,
		GracefulRestart: GracefulRestart{
			Enabled:     cfg.GracefulRestartEnabled(),
			RestartTime: time.Duration(cfg.GracefulRestartTime()) * time.Second,
		},
		Families: []Family{IPv4Unicast},
	}
	if v6.IsValid() {
		g.Families = append(g.Families, IPv6Unicast)
	}
	if err := g.Validate(); err != nil {
		return Global{}, fmt.Errorf("node %s: %w", self.Metadata.Name, err)
	}
	return g, nil
}

// PolicyFor computes the speaker's policy: the pools and advertised
// service ranges for import safety, and the BGPFilters. A filter that does
// not resolve is left out (peers naming it then reject everything) and
// reported.
func PolicyFor(pools []*datastore.IPPool, cfg *datastore.BGPConfigSpec, filters []*datastore.BGPFilter) (Policy, error) {
	pol := Policy{ServicePrefixes: cfg.ServicePrefixes(), Filters: map[string]Filter{}}
	for _, p := range pools {
		if p == nil {
			continue
		}
		if pfx, err := netip.ParsePrefix(p.Spec.CIDR); err == nil {
			pol.PoolPrefixes = append(pol.PoolPrefixes, pfx.Masked())
		}
	}
	sortPrefixes(pol.PoolPrefixes)
	sortPrefixes(pol.ServicePrefixes)
	var errs []error
	for _, f := range filters {
		if f == nil {
			continue
		}
		r, err := FilterFrom(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		pol.Filters[f.Metadata.Name] = r
	}
	return pol, errors.Join(errs...)
}
