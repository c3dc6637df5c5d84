package bgp

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// DefaultPort is the BGP port (RFC 4271).
const DefaultPort = 179

// DefaultRestartTime is the graceful-restart time announced to peers when
// none is configured: how long they keep our routes while we are away.
const DefaultRestartTime = 120 * time.Second

// maxRestartTime is the largest restart time the 12-bit field of RFC 4724
// can carry.
const maxRestartTime = 4095 * time.Second

// Family is an address family the speaker runs.
type Family uint8

const (
	IPv4Unicast Family = iota + 1
	IPv6Unicast
)

func (f Family) String() string {
	switch f {
	case IPv4Unicast:
		return "ipv4-unicast"
	case IPv6Unicast:
		return "ipv6-unicast"
	}
	return fmt.Sprintf("family(%d)", uint8(f))
}

// familyOf is the family a prefix belongs to.
func familyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4Unicast
	}
	return IPv6Unicast
}

// GracefulRestart is the RFC 4724 setting of the speaker.
type GracefulRestart struct {
	Enabled bool
	// RestartTime is what peers wait for us after a restart (0: 120 s). It
	// is also the longest InitialSyncDone waits.
	RestartTime time.Duration
}

// Global is the speaker-wide configuration.
type Global struct {
	ASN uint32
	// RouterID must be a unicast IPv4 address (not 0.0.0.0, not multicast).
	RouterID netip.Addr
	// ListenPort is the port to accept sessions on: 0 means 179, -1 means
	// do not listen (dial out only).
	ListenPort int
	// ListenAddresses limits the listening sockets (default: all addresses).
	ListenAddresses []string
	GracefulRestart GracefulRestart
	// Families run on every session (default: IPv4 unicast only).
	Families []Family
}

// restartTime is the configured restart time or the default.
func (g *Global) restartTime() time.Duration {
	if g.GracefulRestart.RestartTime <= 0 {
		return DefaultRestartTime
	}
	return g.GracefulRestart.RestartTime
}

// families is the configured families or IPv4 unicast.
func (g *Global) families() []Family {
	if len(g.Families) == 0 {
		return []Family{IPv4Unicast}
	}
	return g.Families
}

func (g *Global) runs(f Family) bool {
	for _, x := range g.families() {
		if x == f {
			return true
		}
	}
	return false
}

// Validate reports every problem with the global configuration.
func (g *Global) Validate() error {
	var errs []error
	if g.ASN == 0 || g.ASN == 23456 || g.ASN == 4294967295 {
		errs = append(errs, fmt.Errorf("ASN %d is reserved", g.ASN))
	}
	switch {
	case !g.RouterID.IsValid():
		errs = append(errs, errors.New("router ID is missing"))
	case !g.RouterID.Is4():
		errs = append(errs, fmt.Errorf("router ID %s is not an IPv4 address", g.RouterID))
	case g.RouterID.IsUnspecified() || g.RouterID.IsMulticast() || g.RouterID == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		errs = append(errs, fmt.Errorf("router ID %s is not a unicast address", g.RouterID))
	}
	if g.ListenPort < -1 || g.ListenPort > 65535 {
		errs = append(errs, fmt.Errorf("listen port %d is out of range (-1, 0, 1-65535)", g.ListenPort))
	}
	for _, a := range g.ListenAddresses {
		if _, err := netip.ParseAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("listen address %q is not an IP address", a))
		}
	}
	if g.GracefulRestart.RestartTime > maxRestartTime {
		errs = append(errs, fmt.Errorf("graceful restart time %s is over %s", g.GracefulRestart.RestartTime, maxRestartTime))
	}
	for _, f := range g.Families {
		if f != IPv4Unicast && f != IPv6Unicast {
			errs = append(errs, fmt.Errorf("address family %s is not supported", f))
		}
	}
	return errors.Join(errs...)
}

// PeerType says why a session exists; it sets no BGP behaviour by itself
// (RouteReflectorClient and the AS numbers do) but is shown to users.
type PeerType uint8

const (
	// PeerMesh is another node in the node-to-node full mesh.
	PeerMesh PeerType = iota + 1
	// PeerReflector is a node acting as our route reflector (or, between
	// reflectors, a fellow reflector).
	PeerReflector
	// PeerRRClient is a node we reflect routes to.
	PeerRRClient
	// PeerExternal is a router from a BGPPeer resource (a ToR, say).
	PeerExternal
)

func (t PeerType) String() string {
	switch t {
	case PeerMesh:
		return "Mesh"
	case PeerReflector:
		return "Reflector"
	case PeerRRClient:
		return "RRClient"
	case PeerExternal:
		return "External"
	}
	return fmt.Sprintf("PeerType(%d)", uint8(t))
}

// Peer is one BGP session the speaker should run.
type Peer struct {
	Address netip.Addr
	ASN     uint32
	Type    PeerType
	// Password turns on TCP MD5 (RFC 2385).
	Password string
	// RouteReflectorClient makes us reflect routes to this (iBGP) peer,
	// with RRClusterID as the cluster ID (empty: our router ID).
	RouteReflectorClient bool
	RRClusterID          string
	// Port is the peer's BGP port (0: 179).
	Port int
	// Passive waits for the peer to connect instead of dialling too. The
	// node-to-node sessions use it on one side so that two nodes never
	// dial each other at once (a collision costs seconds after a restart).
	Passive     bool
	Description string
	// LocalAddress is the source of the session (optional).
	LocalAddress netip.Addr
	// BFD runs single-hop BFD on the session: when it declares the peer
	// down, the session is reset and the peer's routes go at once.
	BFD BFD
	// MaxPrefixes ends the session when the peer sends more prefixes of
	// one family (0: no limit).
	MaxPrefixes uint32
	// Filters names the BGPFilters of Policy.Filters applied, in order, to
	// what is learned from and announced to the peer.
	Filters []string
}

func (p *Peer) port() int {
	if p.Port == 0 {
		return DefaultPort
	}
	return p.Port
}

// Validate reports what is wrong with one peer.
func (p *Peer) Validate() error {
	var errs []error
	if !p.Address.IsValid() || p.Address.IsUnspecified() || p.Address.IsMulticast() {
		errs = append(errs, fmt.Errorf("peer address %v is not a unicast address", p.Address))
	} else if p.Address.Zone() != "" {
		errs = append(errs, fmt.Errorf("peer address %v has a zone; link-local peering is not supported", p.Address))
	}
	if p.ASN == 0 {
		errs = append(errs, errors.New("AS number is missing"))
	}
	if p.Port < 0 || p.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d is out of range", p.Port))
	}
	if len(p.Password) > 80 {
		errs = append(errs, errors.New("TCP MD5 password is longer than 80 characters"))
	}
	if p.RRClusterID != "" {
		if a, err := netip.ParseAddr(p.RRClusterID); err != nil || !a.Is4() {
			errs = append(errs, fmt.Errorf("route reflector cluster ID %q is not in IPv4 address form", p.RRClusterID))
		}
	}
	if p.LocalAddress.IsValid() && p.LocalAddress.Is4() != p.Address.Is4() {
		errs = append(errs, fmt.Errorf("local address %s is not of the peer's address family", p.LocalAddress))
	}
	if b := p.BFD; b.Enabled && (b.Interval < 50*time.Millisecond || b.Interval > time.Minute || b.Multiplier < 2 || b.Multiplier > 255) {
		errs = append(errs, fmt.Errorf("BFD interval %s or multiplier %d out of range (50ms-60s, 2-255)", b.Interval, b.Multiplier))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peer %v: %w", p.Address, err)
	}
	return nil
}

// Advertisement is one prefix this node announces.
type Advertisement struct {
	Prefix netip.Prefix
	// NextHop is where peers should send the traffic: the node's address
	// of the prefix's family. Unset means the session's local address,
	// which only works when the session is of the prefix's family.
	NextHop netip.Addr
	// Communities are attached to the path (RFC 1997, as AS<<16|value).
	Communities []uint32
}

func (a *Advertisement) validate(g *Global) error {
	switch {
	case !a.Prefix.IsValid():
		return fmt.Errorf("advertisement %v: invalid prefix", a.Prefix)
	case a.Prefix != a.Prefix.Masked():
		return fmt.Errorf("advertisement %s: host bits set (want %s)", a.Prefix, a.Prefix.Masked())
	case !g.runs(familyOf(a.Prefix)):
		return fmt.Errorf("advertisement %s: address family %s is not configured", a.Prefix, familyOf(a.Prefix))
	case a.NextHop.IsValid() && a.NextHop.Is4() != a.Prefix.Addr().Is4():
		return fmt.Errorf("advertisement %s: next hop %s is of another address family", a.Prefix, a.NextHop)
	}
	return nil
}

// LearnedUpdate is one batch of changes to the learned best paths. Routes
// maps each changed prefix to its next hops (every ECMP best path, sorted);
// an empty slice means the prefix is no longer learned (withdrawn, or now
// only originated by this node).
type LearnedUpdate struct {
	Routes map[netip.Prefix][]netip.Addr
}

// SessionState is a BGP FSM state (RFC 4271 section 8).
type SessionState string

const (
	StateUnknown     SessionState = "Unknown"
	StateIdle        SessionState = "Idle"
	StateConnect     SessionState = "Connect"
	StateActive      SessionState = "Active"
	StateOpenSent    SessionState = "OpenSent"
	StateOpenConfirm SessionState = "OpenConfirm"
	StateEstablished SessionState = "Established"
)

// PeerStatus is the state of one configured session.
type PeerStatus struct {
	Address     netip.Addr
	Type        PeerType
	ASN         uint32
	Description string
	State       SessionState
	// Since is when the session came up (Established) or last went down;
	// zero when it never was up.
	Since time.Time
	// RemoteRouterID is the peer's BGP identifier once a session opened.
	RemoteRouterID string
	// GracefulRestart reports that both sides negotiated it.
	GracefulRestart bool
	// BFD is the BFD session's state ("up", "down", "init",
	// "admin-down"); empty when the session runs no BFD.
	BFD string
	// Reason says why a session is down, when it is known: the
	// NOTIFICATION or error that ended it, or that the peer sent more
	// prefixes than MaxPrefixes (the session then stays down until the
	// limit or the peer changes).
	Reason             string
	MaxPrefixesReached bool
	PrefixesReceived   uint64
	PrefixesAccepted   uint64
	PrefixesAdvertised uint64
}

// RIBEntry is one path of the RIB.
type RIBEntry struct {
	Prefix  netip.Prefix
	NextHop netip.Addr
	// Peer is where the path came from; invalid for paths this node
	// originates (Local).
	Peer  netip.Addr
	Local bool
	// Best marks the best path and every path equal to it for ECMP.
	Best bool
	// Stale marks a path kept while its peer restarts gracefully.
	Stale       bool
	Since       time.Time
	ASPath      []uint32
	Communities []uint32
}

// String renders the entry on one line, as calyxctl prints it.
func (e RIBEntry) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s via %s", e.Prefix, e.NextHop)
	if e.Local {
		b.WriteString(" local")
	} else {
		fmt.Fprintf(&b, " from %s", e.Peer)
	}
	if e.Best {
		b.WriteString(" best")
	}
	if e.Stale {
		b.WriteString(" stale")
	}
	fmt.Fprintf(&b, " as-path %v", e.ASPath)
	return b.String()
}
