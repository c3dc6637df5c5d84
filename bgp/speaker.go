package bgp

import (
	"context"
	"net/netip"
)

// Speaker is an embedded BGP speaker. Every setter takes the full desired
// state; calling it twice with the same state changes nothing.
type Speaker interface {
	// Start configures the global BGP settings and starts listening. It is
	// called once; the other methods fail (or wait, for Subscribe) until then.
	Start(ctx context.Context, g Global) error

	// SetPeers makes the running sessions match peers: new ones are added,
	// changed ones reset with the new settings, missing ones removed. Peers
	// are identified by Address.
	SetPeers(ctx context.Context, peers []Peer) error

	// SetPolicy sets the import and export policy: import safety from the
	// pools and service ranges, and the BGPFilters that peers name. Until
	// it is called the pools and services are empty, so cluster peers'
	// routes are refused. Paths already held are re-evaluated.
	SetPolicy(ctx context.Context, pol Policy) error

	// SetAdvertisements makes the announced prefixes match advs: prefixes no
	// longer present are withdrawn, new ones (or ones whose next hop changed)
	// announced, and the rest left alone.
	SetAdvertisements(ctx context.Context, advs []Advertisement) error

	// Subscribe registers fn for the learned best paths, starting with the
	// whole current table. fn gets batches, from one goroutine per
	// subscriber, in order; it must not call Close.
	Subscribe(fn func(LearnedUpdate))

	// Learned reads the current learned best paths from the RIB (not from a
	// cache): prefix to next hops (all ECMP best paths, sorted).
	Learned(ctx context.Context) (map[netip.Prefix][]netip.Addr, error)

	// InitialSyncDone is closed once every configured peer is established
	// and has sent End-of-RIB (peers without graceful restart count once
	// established), or once the graceful-restart time has passed since
	// Start. Until then the agent keeps the routes it programmed before a
	// restart; afterwards it sweeps what was not learned again.
	InitialSyncDone() <-chan struct{}

	// PeerStatus reports every configured peer's session.
	PeerStatus(ctx context.Context) ([]PeerStatus, error)

	// RIB lists every path in the RIB, learned and originated.
	RIB(ctx context.Context) ([]RIBEntry, error)

	// Close stops the speaker. graceful=true ends the sessions without a
	// NOTIFICATION, so that peers with graceful restart keep this node's
	// routes until it comes back; graceful=false sends Cease and peers
	// withdraw the routes at once. Subscribers get nothing more after Close.
	Close(graceful bool) error
}
