// Package bgp is Calyx's BGP speaker: it peers with the other nodes (full
// mesh or route reflectors) and with external routers such as a top-of-rack
// switch, advertises this node's prefixes and reports the best paths it
// learns so that the agent can program them into the kernel.
//
// The agent talks only to the Speaker interface. It always hands over the
// whole desired state (MetalLB style): SetPeers with every peer the node
// should have, SetAdvertisements with every prefix it should announce; the
// speaker diffs against what it runs and changes only the difference.
//
// NewGoBGP is the implementation, an embedded GoBGP v4 server driven
// through its native (protobuf-free) path API. Nothing of GoBGP leaks
// through the interface. bgpfake is a recording fake for unit tests of
// other packages.
//
// DesiredPeers and GlobalFor turn datastore objects into the speaker's
// configuration; they are pure functions. docs/bgp.md describes topologies,
// graceful restart and how to peer a ToR router.
package bgp
